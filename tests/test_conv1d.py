"""Matrices stored ``(in, out)`` (Hugging Face's ``Conv1D``, GPT-2's projections): the ``transposed`` whitening,
its group key on EGD, ``egd_for``'s routing of such weights, and a GPT-2 step against a hand computation.

References are independent: the polar factor of each block from ``torch.linalg.svd`` in fp64, the scale factors
written out by hand, the auxiliary AdamW as ``torch.optim.AdamW`` itself.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from dist_helpers import run_ranks
from torch import nn

from egalitarian import EGD, egd_for, route
from egalitarian.transforms import whiten


def polar_svd(a: torch.Tensor) -> torch.Tensor:
    """``U Vᵀ`` over the singular values above 1e-5·s_max.  GPT-2's gradients below are rank-deficient (its
    LayerNorms' outputs have zero mean): their dropped singular values are ≤ 3e-8·s_max, the kept ones
    ≥ 1.7e-4·s_max, so any cutoff in that gap (EGD's default, max(m, n)·ε ≈ 2e-6..8e-6, among them) keeps the
    same directions.  ``Block``'s have full rank (the smallest ≥ 8e-4·s_max)."""
    u, s, vh = torch.linalg.svd(a.double(), full_matrices=False)
    keep = s > 1e-5 * s[0]
    return (u[:, keep] @ vh[keep]).to(a.dtype)


def column_blocks(g: torch.Tensor, k: int) -> torch.Tensor:
    """The polar factor of each of ``k`` blocks of ``g``'s columns, side by side (the reference)."""
    return torch.cat([polar_svd(b) for b in g.chunk(k, dim=1)], dim=1)


class Conv1D(nn.Module):
    """Hugging Face's ``transformers.pytorch_utils.Conv1D`` as it is defined there: ``y = x W + b`` with the weight
    stored ``(nx, nf)``, ``nf`` an attribute (written out here so that the routing tests need no transformers)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) / math.sqrt(nx))  # (HF: 0.02; here well-conditioned grads)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class Block(nn.Module):
    def __init__(self, d: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.num_heads = heads
        self.c_attn = Conv1D(3 * d, d)   # stored (d, 3d): [Q | K | V] along the columns
        self.c_proj = Conv1D(d, d)
        self.c_fc = Conv1D(4 * d, d)     # stored (d, 4d)
        self.out = nn.Linear(4 * d, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.c_attn(x).chunk(3, dim=-1)
        return self.out(torch.tanh(self.c_fc(self.c_proj(q * k + v))))


# ------------------------------------------------------------------------------------------ the transform


@pytest.mark.parametrize("backend", ["auto", "svd", "gram-eigh"])
def test_a_transposed_whitening_is_the_polar_factor_of_each_column_block(backend):
    torch.manual_seed(0)
    g = torch.randn(8, 24, dtype=torch.float64)
    t = whiten(backend, row_blocks=3, transposed=True)
    one, _ = t.update(g, t.init(g), g)
    many, _ = t.update_many([g, torch.randn(3)], [(), ()], [g, g])
    want = column_blocks(g, 3)  # the fp64 Gram route loses ~cond² ε: 1e-9, against O(1) for a wrong block
    torch.testing.assert_close(one, want, rtol=0, atol=1e-9)
    torch.testing.assert_close(many[0], want, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("scale", "factor"), [("none", 1.0), ("muon", 2.0), ("rms", 0.2 * math.sqrt(32))])
def test_the_scale_reads_the_shape_as_out_by_in(scale, factor):
    """A (8, 32) weight stored in×out is the Linear (32, 8): Muon's √max(1, out/in) = √4 = 2 (not 1, the stored
    shape's), RMS's ρ·√max(out, in) the same either way."""
    torch.manual_seed(1)
    g = torch.randn(8, 32, dtype=torch.float64)
    got, _ = whiten("auto", scale=scale, transposed=True).update(g, (), g)
    torch.testing.assert_close(got, factor * polar_svd(g), rtol=0, atol=1e-9)


def test_bad_transposed_values_are_one_line_errors():
    with pytest.raises(ValueError, match="transposed = 'yes': must be True or False"):
        whiten("auto", transposed="yes")
    with pytest.raises(ValueError, match="cannot be combined with experts=True"):
        whiten("auto", transposed=True, experts=True)
    g = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"needs 2-D parameters \(in, out\): a parameter of shape \(2, 3, 4\)"):
        whiten("auto", transposed=True).update(g, (), g)
    with pytest.raises(ValueError, match=r"needs 2-D parameters \(in, out\): a parameter of shape \(2, 3, 4\)"):
        EGD([{"params": [nn.Parameter(g)], "transposed": True}], lr=0.1)
    with pytest.raises(ValueError, match="row_blocks = 3: must divide the rows"):  # the transpose's rows: 10
        EGD([{"params": [nn.Parameter(torch.randn(4, 10))], "transposed": True, "row_blocks": 3}], lr=0.1)


# ------------------------------------------------------------------------------------------ the optimizer


def test_an_egd_step_on_a_transposed_group_is_the_column_blocks_polar_step():
    torch.manual_seed(2)
    w0, g = torch.randn(8, 24, dtype=torch.float64), torch.randn(8, 24, dtype=torch.float64)
    plain0, pg = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    w, plain = nn.Parameter(w0.clone()), nn.Parameter(plain0.clone())
    w.grad, plain.grad = g.clone(), pg.clone()
    opt = EGD([{"params": [w], "transposed": True, "row_blocks": 3}, {"params": [plain]}], lr=0.1, weight_decay=0.01)
    opt.step()
    torch.testing.assert_close(w.detach(), (1 - 0.1 * 0.01) * w0 - 0.1 * column_blocks(g, 3), rtol=0, atol=1e-9)
    torch.testing.assert_close(plain.detach(), (1 - 0.1 * 0.01) * plain0 - 0.1 * polar_svd(pg), rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------------------ the routing


def test_egd_for_whitens_conv1d_weights_as_their_transposes():
    torch.manual_seed(3)
    model = Block()
    r = route(model)
    by_name = {x.name: x for x in r.routes}
    attn = by_name["c_attn.weight"]
    assert (attn.use_egd, attn.transposed, attn.row_blocks) == (True, True, 3)
    assert "whitened as its transpose" in attn.reason and "3 column blocks" in attn.reason
    for name in ("c_proj.weight", "c_fc.weight"):
        assert (by_name[name].use_egd, by_name[name].transposed, by_name[name].row_blocks) == (True, True, 1)
    assert not by_name["c_attn.bias"].use_egd and not by_name["out.weight"].use_egd  # a bias; the head
    assert "EGD ×3 blocks (transposed)" in r.table()
    per_head = {x.name: x for x in route(model, per_head=True).routes}["c_attn.weight"]
    assert per_head.row_blocks == 6 and "per head (2 heads), 6 column blocks" in per_head.reason
    groups = r.param_groups()
    assert [(g.get("transposed", False), g["row_blocks"], len(g["params"])) for g in groups if g["use_egd"]] == [
        (True, 1, 2), (True, 3, 1)]
    with pytest.raises(ValueError, match="must not set transposed"):
        r.param_groups(egd={"transposed": False})

    # one step of egd_for against the hand computation (momentum 0: the step is -lr times the whitened gradient);
    # 32 rows of input, so that every gradient has full rank (the SVD reference keeps every direction)
    x = torch.randn(32, 8)
    opt = egd_for(model, lr=0.05)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(x).square().mean().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    after = dict(model.named_parameters())
    for name, k in (("c_attn.weight", 3), ("c_proj.weight", 1), ("c_fc.weight", 1)):
        torch.testing.assert_close(after[name].detach(), before[name] - 0.05 * column_blocks(grads[name], k),
                                   rtol=1e-5, atol=1e-6)


def test_a_module_named_conv1d_without_nf_and_torch_conv1d_keep_their_rules():
    class Conv1DLike(nn.Module):  # the name alone does not make a stored-(in, out) Linear
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 6))

    Conv1DLike.__name__ = "Conv1D"
    model = nn.Sequential(Conv1DLike(), nn.Conv1d(3, 5, 2), nn.Linear(5, 2))
    routes = {x.name: x for x in route(model).routes}
    assert not routes["0.weight"].use_egd and "not a known module type" in routes["0.weight"].reason
    assert routes["1.weight"].use_egd and not routes["1.weight"].transposed  # torch's Conv1d: (out, in·k)


# ------------------------------------------------------------------------------------------ DDP and FSDP2


def _ddp_worker(rank: int, world: int, out: str, sharded: bool = False) -> None:
    torch.manual_seed(0)
    model = Block()
    if sharded:  # FSDP2: the Conv1D weights are row-sharded DTensors; their transposes are whitened as such
        from torch.distributed.fsdp import fully_shard

        fully_shard(model)
    steps = []
    opt = egd_for(model, lr=0.05)
    for s in range(3):
        x = torch.randn(8, 8, generator=torch.Generator().manual_seed(s))
        opt.zero_grad()
        model(x).square().mean().backward()  # every rank the same batch: replicas, as after DDP's all-reduce
        opt.step()
        w = model.c_attn.weight
        steps.append((w.full_tensor() if sharded else w).detach().clone())
    if rank == 0:
        torch.save(steps, out)


@pytest.mark.slow
@pytest.mark.parametrize("sharded", [False, True], ids=["ddp", "fsdp2"])
def test_two_ranks_split_the_transposed_whitening_and_take_one_process_steps(tmp_path, sharded):
    run_ranks(2, _ddp_worker, str(tmp_path / "ddp.pt"), sharded)
    torch.manual_seed(0)
    model = Block()
    opt = egd_for(model, lr=0.05)
    for s, got in enumerate(torch.load(tmp_path / "ddp.pt")):
        x = torch.randn(8, 8, generator=torch.Generator().manual_seed(s))
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        torch.testing.assert_close(got, model.c_attn.weight.detach(), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------ GPT-2


@pytest.mark.slow
def test_egd_for_on_a_tiny_gpt2_steps_as_by_hand():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()  # no dropout: both models see the same forward
    reference = copy.deepcopy(model)
    opt = egd_for(model, lr=0.02)
    whitened = {r.name for r in opt.routing.whitened}
    assert whitened == {f"transformer.h.0.{m}.weight" for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                 "mlp.c_proj")}
    ids = torch.randint(0, 32, (2, 12), generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(input_ids=ids, labels=ids).loss.backward()
        reference(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    # by hand: the auxiliary part is torch's AdamW with egd_for's aux settings; the rest -lr times the polar factor
    named = dict(reference.named_parameters())
    aux = [named[r.name] for r in opt.routing.aux]
    torch.optim.AdamW(aux, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0).step()
    with torch.no_grad():
        for name in whitened:
            p = named[name]
            p -= 0.02 * column_blocks(p.grad, 3 if "c_attn" in name else 1)
    for (name, got), want in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")

"""route / EGDWithAuxAdamW / egd_for: which parameter goes where (asserted by identity, never by name), and the
one optimizer's steps against EGD, torch.optim.AdamW and polar factors computed independently."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from egalitarian import EGDWithAuxAdamW, Routing, egd_for, route
from egalitarian.models import CNN, MLP, Transformer
from egalitarian.optim import EGD
from egalitarian.routing import check_patterns_used, classify, fused_blocks, head_modules, model_params

F64 = torch.float64


# EGD keywords for the bare update p ← p − η·UVᵀ, whatever EGD's defaults become
PLAIN_EGD = {"momentum": 0.0, "weight_decay": 0.0, "scale": "none"}


def ids(params) -> set[int]:
    return {id(p) for p in params}


def routed(routing: Routing) -> dict[int, object]:
    return {id(r.param): r for r in routing.routes}


class TorchTransformer(nn.Module):
    """A small transformer from torch.nn: Embedding, TransformerEncoderLayer (MultiheadAttention), LayerNorm, head."""

    def __init__(self, vocab: int = 11, dim: int = 8, heads: int = 2, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, dtype=dtype)
        self.enc = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, dtype=dtype)
        self.norm = nn.LayerNorm(dim, dtype=dtype)
        self.head = nn.Linear(dim, vocab, dtype=dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.enc(self.emb(tokens))).mean(1))


class Net(nn.Module):
    """No fused layer: every routed EGD group has row_blocks 1."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 6)
        self.fc1 = nn.Linear(6, 8)
        self.ln = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.ln(torch.nn.functional.gelu(self.fc1(self.emb(tokens).mean(1))))
        return self.head(torch.nn.functional.gelu(self.fc2(h)))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(9, 6)
        self.mid = nn.Linear(6, 6)
        self.lm_head = nn.Linear(6, 9, bias=False)
        self.lm_head.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.tanh(self.mid(self.emb(tokens).mean(1))))


def tensors(obj):
    """Every tensor in a nested state (dicts, lists, tuples), in order."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from tensors(obj[k])
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors(v)


def tokens(k: int, vocab: int = 7) -> torch.Tensor:
    return (torch.arange(12).reshape(4, 3) * (k + 1) + k) % vocab


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, start: int, vocab: int = 7) -> None:
    for k in range(start, start + steps):
        opt.zero_grad()
        out = model(tokens(k, vocab))
        (out.sin().sum() + out.pow(2).mean()).backward()
        opt.step()


# ------------------------------------------------------------------------------------------------ route: rules


def test_torch_transformer_routes_attention_ffn_embedding_head_norms():
    m = TorchTransformer()
    r = route(m)
    attn, enc = m.enc.self_attn, m.enc
    whitened = [attn.in_proj_weight, attn.out_proj.weight, enc.linear1.weight, enc.linear2.weight]
    assert ids(x.param for x in r.whitened) == ids(whitened)
    assert ids(x.param for x in r.aux) == ids(m.parameters()) - ids(whitened)
    assert len(r.routes) == len(list(m.parameters()))  # each listed once
    by = routed(r)
    assert by[id(attn.in_proj_weight)].row_blocks == 3
    assert all(by[id(p)].row_blocks == 1 for p in whitened[1:])
    assert "head" in by[id(m.head.weight)].reason and "Embedding" in by[id(m.emb.weight)].reason
    assert "LayerNorm" in by[id(m.norm.weight)].reason and "< 2 dims" in by[id(attn.in_proj_bias)].reason

    per_head = routed(route(m, per_head=True))
    assert per_head[id(attn.in_proj_weight)].row_blocks == 3 * attn.num_heads == 6
    assert per_head[id(attn.out_proj.weight)].row_blocks == 1

    table = str(r)
    assert "enc.self_attn.in_proj_weight" in table and "EGD ×3 blocks" in table and "AdamW" in table
    assert table.splitlines()[0] == "EGD: 4 parameters (512 elements); AdamW: 13 parameters (291 elements)"


def test_multihead_attention_with_other_kv_dims_and_bias_kv():
    mha = nn.MultiheadAttention(8, 2, kdim=4, vdim=4, add_bias_kv=True)
    r = route(mha)
    assert ids(x.param for x in r.whitened) == ids([mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight,
                                                    mha.out_proj.weight])  # out_proj of a bare MHA: not a head
    assert all(x.row_blocks == 1 for x in r.whitened)
    assert ids(x.param for x in r.aux) == ids([mha.in_proj_bias, mha.bias_k, mha.bias_v, mha.out_proj.bias])


def test_project_transformer_fused_qkv_by_default_pattern():
    m = Transformer(vocab_size=10, seq_len=4, num_outputs=10, dim=16, depth=2, heads=4)
    r = route(m)
    qkv = [b.attn.qkv.weight for b in m.blocks]
    whitened = qkv + [w for b in m.blocks for w in (b.attn.out.weight, b.mlp[0].weight, b.mlp[2].weight)]
    assert ids(x.param for x in r.whitened) == ids(whitened)
    assert ids(x.param for x in r.aux) == ids(m.parameters()) - ids(whitened)
    by = routed(r)
    assert [by[id(w)].row_blocks for w in qkv] == [3, 3]
    assert "'*qkv.weight'" in by[id(qkv[0])].reason
    assert [routed(route(m, per_head=True))[id(w)].row_blocks for w in qkv] == [12, 12]  # attn.heads = 4
    assert [routed(route(m, fused={}))[id(w)].row_blocks for w in qkv] == [1, 1]
    exact = routed(route(m, fused={"*qkv.weight": 6}, per_head=True))  # an explicit count is exact
    assert [exact[id(w)].row_blocks for w in qkv] == [6, 6]
    assert {id(m.head.weight), id(m.tok_emb.weight), id(m.pos_emb.weight)} <= ids(x.param for x in r.aux)


def test_project_cnn_and_mlp():
    cnn = CNN(in_channels=1, height=8, width=8, num_outputs=10, channels=(4, 8))
    r = route(cnn)
    assert ids(x.param for x in r.whitened) == ids([c.weight for c in cnn.convs] + [cnn.fc.weight])
    assert id(cnn.head.weight) in ids(x.param for x in r.aux)
    assert "whitened as 8×36" in routed(r)[id(cnn.convs[1].weight)].reason
    mlp = MLP(10, 20, 5)  # layers.2 is neither top-level nor named like a head: whitened (EGD on both matrices)
    assert ids(x.param for x in route(mlp).whitened) == ids([layer.weight for layer in mlp.layers])


def test_transposed_conv_raw_parameter_and_sequential_head():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = nn.ConvTranspose2d(3, 5, 2)
            self.pos = nn.Parameter(torch.zeros(1, 4, 6))
            self.body = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))  # last Linear: not a head

    m = Odd()
    r = route(m)
    assert ids(x.param for x in r.whitened) == ids([m.up.weight, m.body[0].weight, m.body[2].weight])
    assert "whitened as 3×20" in routed(r)[id(m.up.weight)].reason
    assert "not a known module type" in routed(r)[id(m.pos)].reason and "Odd" in routed(r)[id(m.pos)].reason
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))  # top-level last Linear: the head
    assert ids(x.param for x in route(seq).whitened) == ids([seq[0].weight])
    assert ids(x.param for x in route(seq, head=None).whitened) == ids([seq[0].weight, seq[2].weight])
    vgg_like = nn.Module()
    vgg_like.features = nn.Sequential(nn.Linear(4, 4))
    vgg_like.classifier = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert ids(x.param for x in route(vgg_like).aux) == ids(
        [vgg_like.features[0].bias, vgg_like.classifier[0].bias, *vgg_like.classifier[2].parameters()])


def test_tied_embedding_is_listed_once_and_goes_to_adamw():
    m = Tied()
    assert m.lm_head.weight is m.emb.weight
    r = route(m)
    assert len(r.routes) == 3 and ids(x.param for x in r.whitened) == ids([m.mid.weight])
    (tied,) = [x for x in r.routes if x.param is m.emb.weight]
    assert not tied.use_egd and "tied" in tied.reason and "lm_head.weight" in tied.reason
    assert sum(p is m.emb.weight for g in r.param_groups() for p in g["params"]) == 1
    opt = egd_for(m, lr=0.1)  # torch accepts the groups: no parameter twice
    train(m, opt, 2, 0, vocab=9)
    assert opt.routing is not None and opt.whitened_params() == [m.mid.weight]
    shared = nn.Linear(4, 4)  # one module registered twice: its parameters are shared
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    assert all(not x.use_egd and "tied" in x.reason for x in route(seq).routes) and len(route(seq).routes) == 2


# ------------------------------------------------------------------------------------------------ route: overrides


def test_overrides_and_aux_wins():
    m = TorchTransformer()
    r = route(m, whiten=["head.weight"], aux="*linear1.weight")
    by = routed(r)
    assert by[id(m.head.weight)].use_egd and "whiten='head.weight'" in by[id(m.head.weight)].reason
    assert not by[id(m.enc.linear1.weight)].use_egd
    both = routed(route(m, whiten=["enc.*"], aux=["enc.linear2.*"]))
    assert not both[id(m.enc.linear2.weight)].use_egd and "wins over" in both[id(m.enc.linear2.weight)].reason
    assert both[id(m.enc.linear1.weight)].use_egd and not both[id(m.enc.linear1.bias)].use_egd  # 1-D: rules
    assert both[id(m.enc.self_attn.in_proj_weight)].row_blocks == 3  # a whiten= match keeps its fused blocks
    t = Tied()
    assert routed(route(t, whiten=["lm_head.weight"]))[id(t.emb.weight)].use_egd  # a tie matches by any name
    assert ids(x.param for x in route(m, head=None).whitened) >= ids([m.head.weight])
    assert not routed(route(m, head="enc.linear2"))[id(m.enc.linear2.weight)].use_egd


def test_override_errors_are_one_line_value_errors_naming_the_pattern():
    m = TorchTransformer()
    cases = [
        (dict(aux=["nope*"]), r"^aux = 'nope\*': matches no parameter name"),
        (dict(whiten=["*.bias"]), r"^whiten = '\*.bias': matches only parameters with < 2 dims"),
        (dict(head="lm_head"), r"^head = 'lm_head': matches no module name"),
        (dict(fused={"*nothing.weight": 3}), r"^fused = '\*nothing.weight': matches no parameter that EGD whitens"),
        (dict(fused={"*in_proj_weight": 5}), r"^fused\['\*in_proj_weight'\] = 5: must divide the 24 rows"),
        (dict(fused={"*in_proj_weight": 0}), r"^fused\['\*in_proj_weight'\] = 0: must be an int >= 1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            route(m, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(TypeError, match="model"):
        route([m.head.weight])

    class NoHeads(nn.Module):  # a fused qkv Linear whose module says nothing about its heads
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(4, 12)
            self.out = nn.Linear(4, 3)  # the head (top-level, last)

    with pytest.raises(ValueError, match=r"^per_head = True: cannot find the head count of 'qkv.weight'.*fused="):
        route(NoHeads(), per_head=True)
    nh = NoHeads()
    assert routed(route(nh, fused={"qkv.weight": 6}, per_head=True))[id(nh.qkv.weight)].row_blocks == 6
    gqa = NoHeads()
    gqa.qkv = nn.Linear(4, 8)  # matches '*qkv.weight' but is not (3·d)×d: one matrix, and the reason says so
    rr = routed(route(gqa))[id(gqa.qkv.weight)]
    assert rr.use_egd and rr.row_blocks == 1 and "whitened as one matrix" in rr.reason


def test_param_groups_and_optimizer_construction_errors():
    m = Net()
    r = route(m)
    groups = r.param_groups(aux={"weight_decay": 0.1})
    assert [(g["use_egd"], g.get("row_blocks")) for g in groups] == [(True, 1), (False, None)]
    assert groups[1]["weight_decay"] == 0.1 and ids(groups[0]["params"]) == ids([m.fc1.weight, m.fc2.weight])
    with pytest.raises(ValueError, match="^aux = .*must not set use_egd"):
        r.param_groups(aux={"use_egd": True})
    with pytest.raises(TypeError, match="^momentom = 0.9: is not a keyword of EGD"):
        EGDWithAuxAdamW(r, lr=0.1, momentom=0.9)
    with pytest.raises(ValueError, match="^momentum = 1.0: must be in"):
        EGDWithAuxAdamW(r, lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="^aux_lr = 0: must be a number > 0"):
        EGDWithAuxAdamW(r, lr=0.1, aux_lr=0)
    with pytest.raises(TypeError, match="^params = 'a list of tensors'"):
        EGDWithAuxAdamW(list(m.parameters()), lr=0.1)
    with pytest.raises(TypeError, match="^params = 'Net'"):
        EGDWithAuxAdamW(m, lr=0.1)
    opt = EGDWithAuxAdamW([groups[0]], lr=0.1)
    assert opt.adamw is None
    with pytest.raises(ValueError, match="^use_egd = None: must be True"):
        opt.add_param_group({"params": groups[1]["params"]})
    with pytest.raises(ValueError, match="^weight_decay_mode = 'x'"):
        opt.add_param_group({"params": [m.emb.weight], "use_egd": True, "weight_decay_mode": "x"})
    opt.add_param_group({"params": groups[1]["params"], "use_egd": False})  # the AdamW part made on demand
    assert opt.adamw is not None and [g["use_egd"] for g in opt.param_groups] == [True, False]
    with pytest.raises(ValueError, match=r"^row_blocks = 3: must divide the rows .* shape \(5, 8\) has 5 rows"):
        opt.add_param_group({"params": [m.head.weight], "use_egd": True, "row_blocks": 3})
    assert len(opt.param_groups) == 2 and opt.egd is not None and len(opt.egd.param_groups) == 1


# ------------------------------------------------------------------------------------------------ the optimizer


def polar64(g: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(g.to(F64), full_matrices=False)
    return u @ vh


@pytest.mark.parametrize("per_head", [False, True])
def test_fused_qkv_step_is_the_stacked_polar_factors_of_the_blocks(per_head):
    torch.manual_seed(0)
    m = TorchTransformer(dim=8, heads=2, dtype=F64)
    w = m.enc.self_attn.in_proj_weight
    before = w.detach().clone()
    g = torch.randn(24, 8, dtype=F64)
    w.grad = g.clone()
    lr = 0.3
    opt = egd_for(m, lr=lr, per_head=per_head, **PLAIN_EGD)
    opt.step()
    n = 6 if per_head else 3
    expected = before - lr * torch.cat([polar64(b) for b in g.chunk(n, dim=0)])
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-12)
    whole = before - lr * polar64(g)
    assert not torch.allclose(w.detach(), whole, atol=1e-3)  # the split is not the polar factor of the stack


def test_steps_match_egd_and_torch_adamw_on_a_clone():
    torch.manual_seed(1)
    m = Net()
    ref = copy.deepcopy(m)
    hyper = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    opt = egd_for(m, aux_lr=1e-2, aux_betas=(0.8, 0.99), aux_eps=1e-6, aux_weight_decay=0.1, **hyper)
    r = route(ref)
    ref_egd = EGD([x.param for x in r.whitened], **hyper)
    ref_adamw = torch.optim.AdamW([x.param for x in r.aux], lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    for k in range(3):
        train(m, opt, 1, k)
        for o in (ref_egd, ref_adamw):
            o.zero_grad()
        out = ref(tokens(k))
        (out.sin().sum() + out.pow(2).mean()).backward()
        ref_egd.step()
        ref_adamw.step()
        for p, q in zip(m.parameters(), ref.parameters(), strict=True):
            assert torch.equal(p, q)
    assert "exp_avg" in opt.state[m.head.weight] and "exp_avg" not in opt.state[m.fc1.weight]


@pytest.mark.parametrize("make", [Net, TorchTransformer], ids=["no-fused", "fused-qkv"])
def test_state_dict_round_trip_continues_bitwise(make):
    vocab = 7
    torch.manual_seed(2)
    model = make() if make is Net else make(vocab=vocab)
    kwargs = dict(lr=0.05, momentum=0.9, weight_decay=0.01, aux_lr=1e-2, aux_weight_decay=0.1)
    opt = egd_for(model, **kwargs)
    train(model, opt, 3, 0, vocab)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    assert set(saved_opt) == {"state", "param_groups"}
    train(model, opt, 3, 3, vocab)

    torch.manual_seed(3)
    fresh = make() if make is Net else make(vocab=vocab)
    fresh.load_state_dict(saved_model)
    opt2 = egd_for(fresh, **{**kwargs, "lr": 0.5, "aux_lr": 0.5})  # the loaded groups set the lrs
    opt2.load_state_dict(saved_opt)
    assert opt2.egd.state is opt2.state and opt2.adamw.state is opt2.state
    assert opt2.egd.param_groups[0] is opt2.param_groups[0]
    train(fresh, opt2, 3, 3, vocab)
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_scheduler_changes_both_parts_lr():
    m = Net()
    opt = egd_for(m, lr=0.1, aux_lr=1e-3)
    assert isinstance(opt, torch.optim.Optimizer)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    train(m, opt, 1, 0)
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.05, 5e-4]
    assert opt.egd.param_groups[0]["lr"] == 0.05 and opt.adamw.param_groups[0]["lr"] == 5e-4


def test_nonfinite_gradient_changes_nothing_and_switch_off():
    m = Net()
    opt = egd_for(m, lr=0.1, momentum=0.9)
    train(m, opt, 1, 0)
    before = copy.deepcopy(m.state_dict())
    state = copy.deepcopy(opt.state_dict())
    opt.zero_grad()
    m(tokens(1)).sum().backward()
    m.head.bias.grad[0] = float("nan")  # an AdamW parameter; EGD's groups come first in the step
    with pytest.raises(FloatingPointError, match="finite"):
        opt.step()
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    after = list(tensors(opt.state_dict()["state"]))
    assert len(after) > 0 and all(torch.equal(a, b) for a, b in zip(after, tensors(state["state"]), strict=True))
    assert ids(opt.whitened_params()) == ids([m.fc1.weight, m.fc2.weight])
    assert opt.set_whitening(False) and opt.param_groups[0]["whiten"] is False
    assert opt.param_groups[1].get("whiten") is None  # the AdamW group has no whitening switch
    opt.set_whitening(True)
    assert opt.param_groups[0]["whiten"] is True


# ------------------------------------------------------------------------------- route's parts, one at a time


def test_model_params_lists_a_tied_tensor_once_with_all_its_names():
    m = Tied()
    infos = model_params(m)
    assert [i.name for i in infos] == ["emb.weight", "mid.weight", "mid.bias"]
    assert infos[0].names == ["emb.weight", "lm_head.weight"] and infos[0].module is m.emb
    assert infos[1].module_name == "mid" and infos[1].key == "weight" and infos[1].param is m.mid.weight


def test_classify_applies_the_rules_by_module_type():
    m = Net()
    info = {i.name: i for i in model_params(m)}
    assert classify(info["fc1.weight"], None) == ("Linear weight", True)
    assert classify(info["fc1.bias"], None) == ("< 2 dims (bias or gain)", False)
    assert classify(info["ln.weight"], None) == ("LayerNorm weight", False)
    assert classify(info["emb.weight"], None) == ("Embedding table", False)
    assert classify(info["head.weight"], "the head") == ("the head", False)
    conv = {i.name: i for i in model_params(nn.Sequential(nn.Conv2d(3, 4, 3)))}
    assert classify(conv["0.weight"], None) == ("Conv2d kernel, whitened as 4×27", True)
    tied = model_params(Tied())[0]
    assert classify(tied, None) == ("tied: the same tensor as 'lm_head.weight'", False)
    raw = nn.Module()
    raw.pos = nn.Parameter(torch.zeros(3, 4))
    assert classify(model_params(raw)[0], None) == (
        "2-D parameter of Module (not a known module type; whiten= to whiten it)", False)


def test_head_modules_auto_none_and_pattern():
    m = Net()
    assert head_modules(m, "auto")[0] == {"head"}
    assert head_modules(m, None) == (set(), "")
    assert head_modules(m, "fc*") == ({"fc1", "fc2"}, "output head (head='fc*')")
    with pytest.raises(ValueError, match="head = 'nope': matches no module name"):
        head_modules(m, "nope")


def test_fused_blocks_default_explicit_and_per_head():
    m = Transformer(vocab_size=10, seq_len=4, num_outputs=10, dim=16, depth=1, heads=4)
    qkv = next(i for i in model_params(m) if i.name == "blocks.0.attn.qkv.weight")
    out = next(i for i in model_params(m) if i.name == "blocks.0.attn.out.weight")
    used: set[str] = set()
    assert fused_blocks(m, qkv, None, False, used) == (3, "fused QKV ('*qkv.weight'), 3 row blocks")
    assert fused_blocks(m, qkv, None, True, used) == (12, "fused QKV ('*qkv.weight') per head (4 heads), 12 row blocks")
    assert fused_blocks(m, out, None, False, used) == (1, "") and not used
    assert fused_blocks(m, qkv, {"*qkv.weight": 6}, True, used) == (6, "fused (fused['*qkv.weight'] = 6)")
    assert used == {"*qkv.weight"}  # an explicit count is exact, never multiplied by the heads
    with pytest.raises(ValueError, match=r"fused\['\*qkv.weight'\] = 5: must divide the 48 rows"):
        fused_blocks(m, qkv, {"*qkv.weight": 5}, False, set())


def test_check_patterns_used_names_the_first_unused_pattern():
    used = {"aux": {"a*"}, "whiten": {"w*"}, "fused": set()}
    check_patterns_used(["a*"], ["w*"], None, used, set(), "x.weight")
    with pytest.raises(ValueError, match="aux = 'b': matches no parameter name of the model .*'x.weight'"):
        check_patterns_used(["a*", "b"], ["w*"], None, used, set(), "x.weight")
    with pytest.raises(ValueError, match="whiten = 'v': matches only parameters with < 2 dims"):
        check_patterns_used([], ["v"], None, used, {"v"}, "x.weight")
    with pytest.raises(ValueError, match="fused = 'f': matches no parameter that EGD whitens"):
        check_patterns_used([], [], {"f": 3}, used, set(), "x.weight")


def test_egd_for_clamp_is_clamp_eps_and_adamws_eps_stays_eps():
    opt = egd_for(Net(), lr=0.02, clamp_eps=1e-6, aux_eps=1e-7)
    egd_group, aux_group = opt.param_groups[0], opt.param_groups[-1]
    assert egd_group["use_egd"] and egd_group["clamp_eps"] == 1e-6 and "eps" not in egd_group
    assert not aux_group["use_egd"] and aux_group["eps"] == 1e-7 and "clamp_eps" not in aux_group


def test_a_checkpoint_whose_egd_groups_call_the_clamp_eps_is_refused():
    m = Net()
    opt = egd_for(m, lr=0.02, **PLAIN_EGD)
    train(m, opt, 2, 0)
    old = copy.deepcopy(opt.state_dict())
    for g in old["param_groups"]:
        if g["use_egd"]:
            g["eps"] = g.pop("clamp_eps")
    opt2 = egd_for(Net(), lr=0.02, **PLAIN_EGD)
    with pytest.raises(ValueError, match="param_groups\\[0\\] = \"without 'clamp_eps'\": saved by another version "
                       "of EGDWithAuxAdamW"):
        opt2.load_state_dict(old)
    assert not opt2.state

"""The whitening split among ranks (egalitarian.distributed), distributed checkpoints, and expert stacks.

Real process groups on CPU (gloo, torch.multiprocessing), 2 and 4 ranks: one spawn per world size runs every
scenario and writes its results; the tests compare them with one process (no process group: today's code path).

The split is checked where it can be told apart from the gradients' own rounding: every rank is given the
single-process gradients (replicas as plain tensors, as DDP leaves them; FSDP2 shards of them as DTensors), the
parameters start at 0 (so a parameter's rounding is the step's), and each step must equal the single-process step
to 1e-6 relative.  Training end to end under DDP is tests/test_ddp.py.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
from dist_helpers import comm_counts, ddp_train, run_ranks, single_train
from torch import nn

from egalitarian import EGD, Preconditioned, egd_for, route
from egalitarian import distributed as egd_dist
from egalitarian.linalg import gram_inverse_root, polar_via_svd
from egalitarian.transforms import whiten

# The parameters, by name: the route each takes under FSDP2 at 2 and at 4 ranks (rows cut by torch.chunk).
SHAPES = {
    "a": (7, 5),  # uneven: 4 + 3 rows, 2 + 2 + 2 + 1: gather
    "b": (3, 6),  # 2 + 1, and 1 + 1 + 1 + 0 (an empty shard): gather
    "tall": (48, 2),  # 8·n·(blocks touched) < 4 bytes·rows: the Gram route
    "sq1": (8, 8),  # two matrices of one small shape: one batched polar on one process, split between owners here
    "sq2": (8, 8),
    "bias": (7,),  # not whitened
    "qkv": (9, 4),  # 3 row blocks of 3 rows: 5 + 4 cuts a block (gather); 3 + 3 + 3 + 0 holds whole blocks (local)
    "tallqkv": (48, 2),  # 3 blocks of 16 × 2, cut by the shards: the Gram route, block by block
    "experts": (4, 3, 5),  # 4 experts of 3 × 5: whole experts on every rank (local)
}
GROUPS = [(["a", "b", "tall", "sq1", "sq2", "bias"], {}), (["qkv", "tallqkv"], {"row_blocks": 3}),
          (["experts"], {"experts": True})]
CONFIGS = {
    "after": dict(momentum=0.9, nesterov=True, scale="frobenius"),  # the cutoff; "tall" is rank 1
    "before": dict(momentum=0.9, momentum_position="before", scale="rms", clamp_eps=1e-6),  # the paper's clamp
}
STEPS = 3
LR = 1.0  # parameters start at 0: p_t − p_{t−1} is the step, rounded at its own scale


class Holder(nn.Module):
    """The parameters of SHAPES as one module (FSDP2 shards a module's parameters)."""

    def __init__(self) -> None:
        super().__init__()
        for name, shape in SHAPES.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape)))


def _grads(step: int, config: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    out = {n: torch.randn(shape, generator=g) for n, shape in SHAPES.items()}
    if config == "after":  # rank 1: the Gram route's cutoff must drop what one process drops
        out["tall"] = torch.randn(48, 1, generator=g) @ torch.randn(1, 2, generator=g)
    return out


def _opt(holder: nn.Module, config: str, kind: str = "egd") -> torch.optim.Optimizer:
    p = dict(holder.named_parameters())
    groups = [{"params": [p[n] for n in names], **extra} for names, extra in GROUPS]
    if kind == "egd":
        return EGD(groups, lr=LR, **CONFIGS[config])
    return Preconditioned(groups[:1], torch.optim.SGD, whiten(nonfinite="raise"), nonfinite="propagate", lr=LR)


def _set_grads(holder: nn.Module, step: int, config: str) -> None:
    from torch.distributed.tensor import DTensor, distribute_tensor

    grads = _grads(step, config)
    for n, p in holder.named_parameters():
        G = grads[n]
        p.grad = distribute_tensor(G, p.device_mesh, p.placements, src_data_rank=None) if isinstance(
            p, DTensor) else G.clone()


def _full(holder: nn.Module) -> dict[str, torch.Tensor]:
    return {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for n, p in holder.named_parameters()}


def _holder(sharded: bool) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    holder = Holder()
    if sharded:
        fully_shard(holder)
    return holder


def _trajectory(config: str, sharded: bool, steps: int = STEPS) -> dict:
    """The parameters after each step; the collectives (CommDebugMode) and the split's log of the last step."""
    from torch.distributed.tensor.debug import CommDebugMode

    holder = _holder(sharded)
    opt = _opt(holder, config)
    out: dict = {"params": []}
    for t in range(steps):
        _set_grads(holder, t, config)
        with CommDebugMode() as mode, egd_dist.comm_log() as log:
            opt.step()
        out["params"].append(_full(holder))
    out["counts"], out["log"] = comm_counts(mode), log
    return out


def _outcome(fn) -> str:
    try:
        fn()
        return "stepped"
    except Exception as e:
        return type(e).__name__


def _session(rank: int, world: int, out_dir: str, checkpoint: str) -> None:
    from torch.distributed.tensor.debug import CommDebugMode

    res: dict = {}
    for config in CONFIGS:
        for sharded in (False, True):
            res[config, sharded] = _trajectory(config, sharded)
    # the opt-out: every rank whitens every matrix itself, nothing is exchanged
    os.environ[egd_dist.ENV] = "off"
    res["off"] = _trajectory("after", False, steps=1)
    del os.environ[egd_dist.ENV]
    # whitening switched off: SGD on every rank's own shard, only the finiteness check's all-reduce
    holder = _holder(True)
    opt = _opt(holder, "after")
    opt.set_whitening(False)
    _set_grads(holder, 0, "after")
    with CommDebugMode() as mode:
        opt.step()
    res["nowhiten"] = {"counts": comm_counts(mode), "params": _full(holder)}
    # a NaN in rank 1's shard only: the check maxes over the mesh, every rank raises, nothing is stepped
    holder = _holder(True)
    opt = _opt(holder, "after")
    _set_grads(holder, 0, "after")
    if rank == 1:
        holder.a.grad.to_local()[0, 0] = math.nan
    res["nan_shard"] = _outcome(opt.step), _full(holder)
    # a NaN the optimizer lets through to a whitening that raises: only its owner raises, and says so to the others
    holder = _holder(False)
    opt = _opt(holder, "after", kind="raising")
    _set_grads(holder, 0, "after")
    holder.sq2.grad[0, 0] = math.nan
    res["nan_owner"] = _outcome(opt.step), _full(holder)
    # ranks whose gradients differ are not replicas: every rank refuses to mix them
    holder = _holder(False)
    opt = _opt(holder, "after")
    _set_grads(holder, rank, "after")
    res["not_replicas"] = _outcome(opt.step), _full(holder)
    # distributed checkpoints: saved on 2 ranks, loaded on 1 (the test) and on 4
    if world == 2:
        res["checkpoint"] = _save_and_continue(checkpoint)
    else:
        res["checkpoint"] = _load_and_continue(checkpoint, sharded=True)
        res["ddp_train"] = {kind: ddp_train(rank, world, kind) for kind in ("egd", "egd_for")}
    torch.save(res, f"{out_dir}/rank{rank}.pt")


# ------------------------------------------------------------------------------------------- checkpoints

SAVED, AFTER = 2, 2  # steps before the checkpoint, steps after


def _save_and_continue(path: str) -> dict[str, torch.Tensor]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    holder = _holder(True)
    opt = _opt(holder, "after")
    for t in range(SAVED):
        _set_grads(holder, t, "after")
        opt.step()
    model_sd, optim_sd = get_state_dict(holder, opt)
    buf = optim_sd["state"]["a"]["momentum"]["momentum_buffer"]
    assert type(buf).__name__ == "DTensor", type(buf)  # the momentum buffers are sharded like their parameters
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
    for t in range(SAVED, SAVED + AFTER):
        _set_grads(holder, t, "after")
        opt.step()
    return _full(holder)


def _load_and_continue(path: str, sharded: bool) -> dict[str, torch.Tensor]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    holder = _holder(sharded)
    opt = _opt(holder, "after")
    model_sd, optim_sd = get_state_dict(holder, opt)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path, no_dist=not sharded)  # one process: no process group
    set_state_dict(holder, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    for t in range(SAVED, SAVED + AFTER):
        _set_grads(holder, t, "after")
        opt.step()
    return _full(holder)


# ------------------------------------------------------------------------------------------- the sessions


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> dict:
    two, four = tmp_path_factory.mktemp("two"), tmp_path_factory.mktemp("four")
    checkpoint = str(two / "checkpoint")  # saved by the 2 ranks, loaded by the 4
    run_ranks(2, _session, str(two), checkpoint)
    run_ranks(4, _session, str(four), checkpoint)
    out: dict = {w: [torch.load(d / f"rank{r}.pt", weights_only=False) for r in range(w)]
                 for w, d in ((2, two), (4, four))}
    return {**out, "checkpoint": checkpoint}


@pytest.fixture(scope="module")
def reference() -> dict[str, dict]:
    """One process, no process group: today's code path."""
    assert not dist.is_initialized()
    return {config: _trajectory(config, False) for config in CONFIGS}


def _assert_steps_equal(got: list[dict], want: list[dict], rtol: float = 1e-6) -> None:
    """Each step ``p_t − p_{t−1}`` within ``rtol`` (relative Frobenius) of the single-process step."""
    prev_got = prev_want = {n: torch.zeros(s) for n, s in SHAPES.items()}
    for t, (g, w) in enumerate(zip(got, want, strict=True)):
        for n in SHAPES:
            d_got, d_want = (g[n] - prev_got[n]).double(), (w[n] - prev_want[n]).double()
            err = float((d_got - d_want).norm() / d_want.norm())
            assert err <= rtol, f"step {t + 1}, {n}: relative error {err:.2e}"
        prev_got, prev_want = g, w


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("sharded", [False, True], ids=["replicas", "fsdp2"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_step_equals_the_single_process_step(sessions, reference, world, sharded, config):
    ranks = sessions[world]
    for r in ranks:
        _assert_steps_equal(r[config, sharded]["params"], reference[config]["params"])
    for r in ranks[1:]:  # every rank holds the same bits
        for n in SHAPES:
            assert torch.equal(r[config, sharded]["params"][-1][n], ranks[0][config, sharded]["params"][-1][n])


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_the_routes_are_the_designed_ones(sessions, world):
    log = sessions[world][0]["after", True]["log"]
    routes = {shape: route for shape, route, _ in log.routes}
    assert routes[7, 5] == routes[3, 6] == routes[8, 8] == "gather"
    assert routes[48, 2] == "gram"  # tall and tallqkv: one entry per shape
    assert routes[9, 4] == ("gather" if world == 2 else "local")
    assert routes[4, 3, 5] == "local"
    owners = [o for _, route, o in log.routes if route in ("gather", "gram")]
    assert set(owners) == set(range(world))  # the work is spread over every rank
    replicated = sessions[world][0]["after", False]["log"].routes
    assert {route for _, route, _ in replicated} == {"replicated"}


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_the_collectives_of_a_step(sessions, world):
    for r in sessions[world]:
        # DDP replicas: one all_gather per whitening configuration (the three groups' keys differ)
        assert r["after", False]["counts"] == {"c10d._allgather_base_": 3}
        # FSDP2: the finiteness check's one all-reduce, two all_to_all per configuration that exchanges anything
        # (the experts group is local on every rank)
        assert r["after", True]["counts"] == {"c10d.alltoall_base_": 4, "c10d.allreduce_": 1}
        assert [c.op for c in r["after", True]["log"].collectives] == ["all_to_all_single"] * 4
        assert r["off"]["counts"] == {}


@pytest.mark.slow
def test_the_bytes_of_a_step(sessions):
    """By hand, 2 ranks, rank 0.  Replicas, experts group: one (4, 3, 5) fp32 matrix (240 bytes) owned by rank 0,
    a 16-byte header per rank: rank 0's buffer is 256 bytes, rank 1's 16, padded to 256; rank 0 sends its 256 to
    rank 1 and receives rank 1's 256.  FSDP2, the row-blocks group: qkv (9, 4) by gather, owned by rank 0 (cost
    3·3·4·3 = 108 against tallqkv's 3·2³ = 24); tallqkv (48, 2) by the Gram route, owned by rank 1; rank 0's rows are
    0–4 of qkv and 0–23 of tallqkv (blocks 0 and 1).  First all_to_all: rank 0 sends rank 1 a header and its two
    fp64 2 × 2 Grams, 16 + 64 = 80 bytes, and receives a header and rank 1's 4 rows of qkv, 16 + 4·4·4 = 80.
    Second: it sends rank 1's qkv rows back (80) and receives the factors of its two blocks (80)."""
    rank0 = sessions[2][0]
    replicas = rank0["after", False]["log"].collectives
    assert (replicas[2].sent, replicas[2].received) == (256, 256)
    fsdp = rank0["after", True]["log"].collectives
    assert [(c.sent, c.received) for c in fsdp[2:]] == [(80, 80), (80, 80)]


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_whitening_switched_off_is_sgd_on_each_shard_without_exchange(sessions, world):
    G = _grads(0, "after")
    for r in sessions[world]:
        assert r["nowhiten"]["counts"] == {"c10d.allreduce_": 1}
        for n in SHAPES:  # nesterov's first step: g + μ·b with b = g
            assert torch.equal(r["nowhiten"]["params"][n], -LR * (G[n] + 0.9 * G[n])), n


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_a_nan_raises_on_every_rank_and_steps_nothing(sessions, world):
    zero = {n: torch.zeros(s) for n, s in SHAPES.items()}
    for case, error in (("nan_shard", "FloatingPointError"), ("nan_owner", "FloatingPointError"),
                        ("not_replicas", "ValueError")):
        for r in sessions[world]:
            outcome, params = r[case]
            assert outcome == error, case
            assert all(torch.equal(params[n], zero[n]) for n in SHAPES), case


@pytest.mark.slow
def test_ddp_on_four_ranks_matches_single_process(sessions):
    for kind in ("egd", "egd_for"):
        reference = single_train(kind)
        for r in sessions[4]:
            for a, b in zip(r["ddp_train"][kind], reference, strict=True):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")  # one process: on purpose
def test_a_checkpoint_of_two_ranks_continues_on_one_and_on_four(sessions):
    """Saved with torch.distributed.checkpoint on 2 ranks (FSDP2, momentum buffers as DTensors), loaded on one
    process (no process group) and on 4 ranks: each continues to the steps of the 2 ranks and of one process that
    never stopped."""
    two = sessions[2][0]["checkpoint"]
    one = _load_and_continue(sessions["checkpoint"], sharded=False)
    uninterrupted = _trajectory("after", False, steps=SAVED + AFTER)["params"][-1]
    four = sessions[4][0]["checkpoint"]
    for n in SHAPES:
        for got in (one[n], four[n], two[n]):
            torch.testing.assert_close(got, uninterrupted[n], atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------------------------------- one process


def test_without_a_process_group_nothing_is_split():
    assert not egd_dist.enabled()
    assert egd_dist.whiten_split([torch.randn(3, 3)], None) is None  # type: ignore[arg-type]


def test_the_opt_out_must_be_split_or_off(monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setenv(egd_dist.ENV, "redundant")
    with pytest.raises(ValueError, match="EGD_DISTRIBUTED = 'redundant': must be 'split' \\(default\\) or 'off'"):
        egd_dist.enabled()
    monkeypatch.setenv(egd_dist.ENV, "off")
    assert not egd_dist.enabled()


def test_owners_are_longest_first_to_the_least_loaded_rank():
    # by hand: 5 → rank 0; 4 → 1; 3 → 1 (load 4 < 5); 3 → 0 (5 < 7); 3 → 1 (7 < 8)
    assert egd_dist.assign([3, 5, 3, 4, 3], 2) == [1, 0, 0, 1, 1]
    assert egd_dist.assign([1, 1, 1, 1], 4) == [0, 1, 2, 3]
    assert egd_dist.assign([2, 2], 2, loads=[5, 0]) == [1, 1]  # rank 0 is busy with its local blocks


def test_the_gram_factor_times_the_rows_is_the_polar_factor():
    """The Gram route: ``G @ gram_inverse_root(GᵀG)`` is ``U Vᵀ`` (fp64 SVD), for a Gram summed over row shards."""
    G = torch.randn(40, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    A = sum(part.mT @ part for part in G.split([13, 13, 14]))
    P, w = gram_inverse_root(A, 40, 40 * 2.2e-16, None)
    torch.testing.assert_close(G @ P, polar_via_svd(G), atol=1e-12, rtol=0)
    assert w.tolist() == [1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------------------- experts


def _per_expert_svd(G: torch.Tensor, blocks: int = 1) -> torch.Tensor:
    """U Vᵀ of every expert's (out, in·…) matrix (row blocks of it), by torch.linalg.svd in fp64."""
    E, out = G.shape[:2]
    M = G.double().reshape(E * blocks, out // blocks, -1)
    U, _, Vh = torch.linalg.svd(M, full_matrices=False)
    return (U @ Vh).reshape(G.shape).to(G.dtype)


@pytest.mark.parametrize(("shape", "blocks"), [((4, 6, 5), 1), ((3, 6, 4), 2), ((2, 5, 3, 2), 1)])
def test_an_expert_stack_is_whitened_expert_by_expert_in_one_polar_call(monkeypatch, shape, blocks):
    import egalitarian.transforms as transforms

    calls = []
    polar, many = transforms.polar, transforms.polar_many
    monkeypatch.setattr(transforms, "polar", lambda X, *a, **k: calls.append(tuple(X.shape)) or polar(X, *a, **k))
    monkeypatch.setattr(transforms, "polar_many", lambda Xs, *a, **k: calls.extend(tuple(X.shape) for X in Xs)
                        or many(Xs, *a, **k))
    w = nn.Parameter(torch.zeros(shape))
    G = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    w.grad = G.clone()
    EGD([{"params": [w], "experts": True, "row_blocks": blocks}], lr=1.0).step()
    torch.testing.assert_close(-w.detach(), _per_expert_svd(G, blocks), atol=2e-6, rtol=0)
    K, b = shape[0] * blocks, shape[1] // blocks
    assert calls == [(K, b, math.prod(shape[2:]))]  # one batched call over every expert (and block)


def test_an_expert_group_needs_stacks():
    with pytest.raises(ValueError, match=r"experts = True: needs parameters of >= 3 dims .* shape \(4, 5\)"):
        EGD([{"params": [nn.Parameter(torch.zeros(4, 5))], "experts": True}], lr=0.1)
    with pytest.raises(ValueError, match="experts = 1: must be True or False"):
        EGD([{"params": [nn.Parameter(torch.zeros(2, 4, 5))], "experts": 1}], lr=0.1)


class _MoE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.router = nn.Linear(5, 3)
        self.w1 = nn.Parameter(torch.randn(3, 4, 5) * 0.3)  # 3 experts, 5 → 4
        self.head = nn.Linear(4, 8)  # wide enough that every expert's gradient has full rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.softmax(self.router(x), dim=-1)
        return self.head(torch.einsum("be,eoi,bi->bo", gates, self.w1, x))


def test_expert_stacks_are_routed_to_egd_only_when_named():
    m = _MoE()
    assert not next(r for r in route(m).routes if r.name == "w1").use_egd  # rule 12: an unknown 3-D parameter
    routing = route(m, experts="w1")
    r = next(r for r in routing.routes if r.name == "w1")
    assert (r.use_egd, r.experts, r.reason) == (True, True, "experts='w1': 3 experts, each whitened as 4×5")
    assert "EGD ×3 experts" in routing.table()
    groups = routing.param_groups()
    assert [(len(g["params"]), g.get("experts", False)) for g in groups if g["use_egd"]] == [(1, False), (1, True)]
    assert "wins over experts='w1'" in next(r for r in route(m, experts="w1", aux="w*").routes if r.name == "w1").reason
    with pytest.raises(ValueError, match="experts = 'router.weight': matches 'router.weight' of shape \\(3, 5\\)"):
        route(m, experts="router.weight")
    with pytest.raises(ValueError, match="experts = 'w9': matches no parameter name"):
        route(m, experts="w9")


def test_egd_for_steps_each_expert_like_its_svd():
    m = _MoE()
    opt = egd_for(m, lr=1.0, experts="w1")
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(4))
    m(x).square().sum().backward()
    G, before = m.w1.grad.clone(), m.w1.detach().clone()
    opt.step()
    torch.testing.assert_close(before - m.w1.detach(), _per_expert_svd(G), atol=2e-6, rtol=0)

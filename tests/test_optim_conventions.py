"""EGD's momentum and step-size conventions (momentum_position, scale, row_blocks) and the batched whitening.

References are written out here: a whitened direction is ``U Vᵀ`` from ``torch.linalg.svd`` in float64, the
momentum is torch's heavy ball (``b₁ = x₁``, ``b ← μb + x``), and the "unbatched" reference applies
``EGD.transforms_for(group)`` to one parameter at a time with each transform's ``update``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import shutil
import subprocess
import sys

import pytest
import torch

from egalitarian import EGD, Preconditioned
from egalitarian import transforms as T
from egalitarian.cli import main
from egalitarian.errors import ConfigError
from egalitarian.linalg import BACKENDS, polar
from egalitarian.methods import build_optimizer
from egalitarian.transforms import GradientTransform, batched, whiten

F64 = torch.float64
CPU = torch.device("cpu")


def _uvt(g: torch.Tensor) -> torch.Tensor:
    """U Vᵀ of a full-rank matrix, by an fp64 SVD (every singular value kept)."""
    U, s, Vh = torch.linalg.svd(g.double(), full_matrices=False)
    assert s[-1] > 1e-3 * s[0]  # the test matrices are well conditioned: nothing to cut off
    return (U @ Vh).to(g.dtype)


def _factor(scale: str, m: int, n: int, rho: float) -> float:
    return {"none": 1.0, "muon": math.sqrt(max(1.0, m / n)), "rms": rho * math.sqrt(max(m, n))}[scale]


@contextlib.contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------- the equations, step by step by hand


@pytest.mark.parametrize("shape", [(3, 5), (6, 2)])  # wide and tall: "muon" scales only the tall one
@pytest.mark.parametrize("scale", ["none", "muon", "rms"])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("position", ["after", "before"])
def test_first_two_steps_by_hand(position, nesterov, scale, shape):
    lr, mu, rho = 0.1, 0.9, 0.3
    gen = torch.Generator().manual_seed(7)
    W0, b0 = torch.randn(shape, dtype=F64, generator=gen), torch.randn(shape[0], dtype=F64, generator=gen)
    grads = [(torch.randn(shape, dtype=F64, generator=gen), torch.randn(shape[0], dtype=F64, generator=gen))
             for _ in range(2)]
    W, b = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(b0.clone())
    opt = EGD([W, b], lr=lr, momentum=mu, nesterov=nesterov, momentum_position=position, scale=scale,
              rms_target=rho, backend="svd")
    c = _factor(scale, *shape, rho)

    ref_W, ref_b, buf_W, buf_b = W0.clone(), b0.clone(), None, None
    for gW, gb in grads:
        W.grad, b.grad = gW.clone(), gb.clone()
        opt.step()
        if position == "after":  # d = c·UVᵀ(g); b ← μb + d; step b (Nesterov: d + μb)
            d = c * _uvt(gW)
            buf_W = d if buf_W is None else mu * buf_W + d
            step_W = d + mu * buf_W if nesterov else buf_W
        else:  # b ← μb + g; m = b (Nesterov: g + μb); step c·UVᵀ(m)
            buf_W = gW if buf_W is None else mu * buf_W + gW
            step_W = c * _uvt(gW + mu * buf_W if nesterov else buf_W)
        buf_b = gb if buf_b is None else mu * buf_b + gb  # the bias: never whitened, never scaled
        step_b = gb + mu * buf_b if nesterov else buf_b
        ref_W, ref_b = ref_W - lr * step_W, ref_b - lr * step_b
        torch.testing.assert_close(W.detach(), ref_W, atol=1e-12, rtol=0)
        torch.testing.assert_close(b.detach(), ref_b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", [(4, 16), (16, 4), (8, 8)])
def test_rms_scale_gives_the_target_rms_and_muon_its_factor(shape):
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(shape, dtype=F64, generator=gen)
    for scale, expected_rms in (("none", 1 / math.sqrt(max(shape))), ("rms", 0.2),
                                ("muon", math.sqrt(max(1, shape[0] / shape[1])) / math.sqrt(max(shape)))):
        W = torch.nn.Parameter(torch.zeros(shape, dtype=F64))
        W.grad = g.clone()
        EGD([W], lr=1.0, scale=scale).step()
        rms = W.detach().pow(2).mean().sqrt().item()
        assert rms == pytest.approx(expected_rms, rel=1e-12), scale


@pytest.mark.parametrize("position", ["after", "before"])
def test_frobenius_scale_keeps_the_gradients_norm_by_hand(position):
    """scale="frobenius": c·U Vᵀ with c = ‖G‖_F/√r, r the kept directions (issue #18's magnitude-preserving step).
    A rank-2 gradient of a 5 × 4 matrix: r = 2, so the step is ‖G‖_F/√2 · U₂V₂ᵀ; per row block the block's norm."""
    gen = torch.Generator().manual_seed(11)
    A, B = torch.randn(5, 2, dtype=F64, generator=gen), torch.randn(2, 4, dtype=F64, generator=gen)
    g = A @ B  # rank 2
    U, s, Vh = torch.linalg.svd(g, full_matrices=False)
    uvt = U[:, :2] @ Vh[:2]
    expected = g.norm() / math.sqrt(2) * uvt
    W = torch.nn.Parameter(torch.zeros(5, 4, dtype=F64))
    W.grad = g.clone()
    EGD([W], lr=1.0, scale="frobenius", momentum=0.5, momentum_position=position, backend="svd").step()
    torch.testing.assert_close(W.detach(), -expected, atol=1e-12, rtol=0)
    assert W.detach().norm().item() == pytest.approx(g.norm().item(), rel=1e-12)  # the gradient's magnitude
    # row blocks: each block its own norm; a zero gradient stays a zero step (no 0/0)
    g2 = torch.randn(6, 3, dtype=F64, generator=gen)
    g2[3:] = 0
    W2 = torch.nn.Parameter(torch.zeros(6, 3, dtype=F64))
    W2.grad = g2.clone()
    EGD([W2], lr=1.0, scale="frobenius", row_blocks=2, backend="svd").step()
    torch.testing.assert_close(W2.detach()[:3], -g2[:3].norm() / math.sqrt(3) * _uvt(g2[:3]), atol=1e-12, rtol=0)
    assert torch.equal(W2.detach()[3:], torch.zeros(3, 3, dtype=F64))


def test_momentum_zero_makes_the_position_irrelevant():
    gen = torch.Generator().manual_seed(5)
    grads = [torch.randn(4, 6, dtype=F64, generator=gen) for _ in range(3)]
    out = []
    for position in ("after", "before"):
        W = torch.nn.Parameter(torch.zeros(4, 6, dtype=F64))
        opt = EGD([W], lr=0.5, momentum_position=position, scale="muon")
        for g in grads:
            W.grad = g.clone()
            opt.step()
        out.append(W.detach().clone())
    assert torch.equal(out[0], out[1])
    torch.testing.assert_close(out[0], -0.5 * sum(_uvt(g) for g in grads), atol=1e-12, rtol=0)


def test_l2_decay_joins_the_gradient_before_the_momentum_when_before():
    lam, mu, lr = 0.1, 0.5, 0.2
    gen = torch.Generator().manual_seed(11)
    W0 = torch.randn(3, 4, dtype=F64, generator=gen)
    g1, g2 = (torch.randn(3, 4, dtype=F64, generator=gen) for _ in range(2))
    W = torch.nn.Parameter(W0.clone())
    opt = EGD([W], lr=lr, momentum=mu, weight_decay=lam, weight_decay_mode="l2", momentum_position="before")
    W.grad = g1.clone()
    opt.step()
    W1 = W0 - lr * _uvt(g1 + lam * W0)
    torch.testing.assert_close(W.detach(), W1, atol=1e-12, rtol=0)
    W.grad = g2.clone()
    opt.step()
    buf = mu * (g1 + lam * W0) + (g2 + lam * W1)
    torch.testing.assert_close(W.detach(), W1 - lr * _uvt(buf), atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------------------------ row_blocks


@pytest.mark.parametrize("scale", ["none", "muon", "rms"])
def test_row_blocks_whiten_each_block_by_itself(scale):
    gen = torch.Generator().manual_seed(2)
    qkv = torch.nn.Parameter(torch.zeros(12, 2, dtype=F64))  # fused [Q; K; V], 3 blocks of 4 × 2 (tall)
    conv = torch.nn.Parameter(torch.zeros(6, 2, 2, 2, dtype=F64))  # 2 blocks of 3 × 8
    bias = torch.nn.Parameter(torch.zeros(12, dtype=F64))
    g_qkv, g_conv = torch.randn(12, 2, dtype=F64, generator=gen), torch.randn(6, 2, 2, 2, dtype=F64, generator=gen)
    g_bias = torch.randn(12, dtype=F64, generator=gen)
    opt = EGD([{"params": [qkv, bias], "row_blocks": 3}, {"params": [conv], "row_blocks": 2}], lr=1.0, scale=scale)
    qkv.grad, conv.grad, bias.grad = g_qkv.clone(), g_conv.clone(), g_bias.clone()
    opt.step()
    # per block, the block's own shape sets the scale: 4 × 2 (√2 for "muon", not the whole matrix's √6)
    ref_qkv = torch.cat([_factor(scale, 4, 2, 0.2) * _uvt(blk) for blk in g_qkv.split(4)])
    flat = g_conv.reshape(6, 8)
    ref_conv = torch.cat([_factor(scale, 3, 8, 0.2) * _uvt(blk) for blk in flat.split(3)]).reshape(6, 2, 2, 2)
    torch.testing.assert_close(qkv.detach(), -ref_qkv, atol=1e-12, rtol=0)
    torch.testing.assert_close(conv.detach(), -ref_conv, atol=1e-12, rtol=0)
    torch.testing.assert_close(bias.detach(), -g_bias, atol=0, rtol=0)  # 1-D: plain SGD, never scaled


def test_row_blocks_one_is_the_whole_matrix_bitwise():
    gen = torch.Generator().manual_seed(4)
    g = torch.randn(9, 12, generator=gen)
    out = []
    for kw in ({}, {"row_blocks": 1}):
        W = torch.nn.Parameter(torch.zeros(9, 12))
        W.grad = g.clone()
        EGD([W], lr=1.0, **kw).step()
        out.append(W.detach().clone())
    assert torch.equal(out[0], out[1])
    assert torch.equal(out[0], -polar(g))


def test_whiten_transform_takes_the_same_conventions():
    gen = torch.Generator().manual_seed(8)
    g, p = torch.randn(6, 4, dtype=F64, generator=gen), torch.zeros(6, 4, dtype=F64)
    t = whiten("svd", scale="rms", rms_target=0.5, row_blocks=2)
    out, _ = t.update(g, t.init(p), p)
    ref = torch.cat([0.5 * math.sqrt(4) * _uvt(blk) for blk in g.split(3)])
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    b = torch.randn(6, dtype=F64, generator=gen)
    assert t.update(b, t.init(b), b)[0] is b  # 1-D: unchanged, not scaled


# ------------------------------------------------------------------------------------- batched == unbatched


def _reference_step(opt: EGD, state: dict) -> None:
    """One EGD step, one parameter at a time with each stage's ``update`` (no update_many, no batching)."""
    for group in opt.param_groups:
        stages = EGD.transforms_for(group)
        for p in group["params"]:
            if p.grad is None:
                continue
            old, new, d = state.get(p, {}), {}, p.grad
            for key, t in stages:
                d, new[key] = t.update(d, old[key] if key in old else t.init(p), p)
            state.setdefault(p, {}).update(new)
            lr, wd = group["lr"], group["weight_decay"]
            with torch.no_grad():
                if group["weight_decay_mode"] == "decoupled" and wd != 0:
                    p.mul_(1 - lr * wd)
                p.add_(d, alpha=-lr)


def _same(a, b, atol: float = 0.0) -> bool:
    """Nested states equal: tensors of the same dtype, bit for bit (``atol=0``) or to ``atol``."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and (torch.equal(a, b) if atol == 0 else torch.allclose(a, b, atol=atol, rtol=0)))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k], atol) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, atol) for x, y in zip(a, b, strict=True))
    return a == b


def _many_params(dtype: torch.dtype, seed: int = 0) -> list[torch.nn.Parameter]:
    """Several matrices of equal shapes (some whitened in a batch), tiny ones, a conv kernel, biases, odd ones
    batched on CPU (61 × 47: where a batch and the loop can differ in the last bits, as fp64 97 × 128 does on an AMD
    EPYC) and the paper's 97 × 128 / 128 × 97 (one by one on CPU: their smaller side is > 64)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = ([(16, 24)] * 4 + [(24, 16)] * 3 + [(10, 10)] * 2 + [(3, 5)] * 2 + [(6, 2, 3, 3)] * 2 + [(16,), (24,)]
              + [(97, 128)] * 2 + [(128, 97)] * 2 + [(61, 47)] * 2)
    return [torch.nn.Parameter(torch.randn(s, dtype=dtype, generator=gen)) for s in shapes]


def _set_grads(params, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, dtype=p.dtype, generator=gen)


def _groups(params, third=None, **extra):
    """Two groups with the same whitening keys (whitened together) but other lrs, and a third with others
    (``third``, default another ``rtol``)."""
    return [{"params": params[0:2] + params[4:6] + params[13:14] + params[15:16] + params[17:20], "lr": 0.05},
            {"params": params[2:4] + params[6:9] + params[11:13] + params[16:17] + params[20:21], "lr": 0.02, **extra},
            {"params": params[9:11] + params[14:15], **(third or {"rtol": 1e-6})}]


@pytest.fixture
def polar_calls(monkeypatch):
    """The shapes ``whiten`` passes to ``polar`` (one shape per call) and to ``polar_many`` (a tuple of shapes)."""
    calls: list[tuple] = []
    original, many = T.polar, T.polar_many

    def spy(G, *args, **kwargs):
        calls.append(tuple(G.shape))
        return original(G, *args, **kwargs)

    def spy_many(Gs, *args, **kwargs):
        calls.append(tuple(tuple(G.shape) for G in Gs))
        return many(Gs, *args, **kwargs)

    monkeypatch.setattr(T, "polar", spy)
    monkeypatch.setattr(T, "polar_many", spy_many)
    return calls


# A batch and one call per matrix are two code paths: they agree to rounding, and the CPU decides the bits (an
# AMD EPYC without MKL_CBWR differs where an Intel Xeon does not).  Largest differences of one polar call measured
# on the AMD (bench/batch_probe.py --part rounding, Gaussian matrices up to 254 × 512, 1 and 2 threads):
# fp32 1.4e-6 (polar-express), fp64 3.6e-13 (gram-eigh, 113 × 113); the tolerances leave > 10× room.
_ROUNDING = {torch.float32: 2e-5, F64: 1e-11}


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
     {"momentum": 0.9, "momentum_position": "before", "scale": "rms", "weight_decay": 0.1, "weight_decay_mode": "l2"},
     {"momentum": 0.5, "scale": "muon", "backend": "newton-schulz"}],
)
def test_egd_batched_step_equals_the_unbatched_step(kwargs, dtype, polar_calls):
    """EGD's batched step against one parameter at a time with each stage's ``update``: equal to rounding (two
    code paths); the same batched step run again is bitwise (the same code twice)."""
    with _threads(1):
        params, ref_params, again = _many_params(dtype), _many_params(dtype), _many_params(dtype)
        third = {"seed": 1} if kwargs.get("backend") == "newton-schulz" else None  # it has no rtol
        opt, rerun = EGD(_groups(params, third), lr=0.1, **kwargs), EGD(_groups(again, third), lr=0.1, **kwargs)
        ref = EGD(_groups(ref_params, third), lr=0.1, **kwargs)
        ref_state: dict = {}
        for k in range(3):
            for ps in (params, ref_params, again):
                _set_grads(ps, k)
            polar_calls.clear()
            opt.step()
            calls = list(polar_calls)
            rerun.step()
            _reference_step(ref, ref_state)
        for p, q, r in zip(params, ref_params, again, strict=True):
            torch.testing.assert_close(p.detach(), q.detach(), atol=3 * _ROUNDING[dtype], rtol=0)
            assert _same(opt.state[p], ref_state[q], 3 * _ROUNDING[dtype])
            assert torch.equal(p.detach(), r.detach()) and _same(opt.state[p], rerun.state[r])
    # batched where the smaller side is ≤ 64 (transforms.batched): the 4 (16, 24) matrices of groups 1 and 2 (equal
    # whitening keys) in one call, the 3 (24, 16), the 2 (10, 10), the 2 (61, 47) and the (6, 2, 3, 3) kernels as
    # (6, 18) likewise; the group with another rtol (seed) separately, its 2 (3, 5) in one call; the 97 × 128 and
    # 128 × 97 in one polar_many call (their Grams, all 97 × 97, in one batched eigh)
    assert sorted(calls, key=repr) == sorted([(4, 16, 24), (3, 24, 16), (2, 10, 10), (2, 61, 47), (2, 6, 18), (2, 3, 5),
                                              ((97, 128), (97, 128), (128, 97), (128, 97))], key=repr)


def test_egd_batches_row_blocks_too(polar_calls):
    with _threads(1):
        gen = torch.Generator().manual_seed(0)
        shapes = [(48, 16)] * 3 + [(48, 16)] + [(291, 128)] * 2
        params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
        ref_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
        groups = lambda ps: [{"params": ps[:3] + ps[4:], "row_blocks": 3}, {"params": ps[3:4]}]  # noqa: E731
        opt, ref = EGD(groups(params), lr=0.1, momentum=0.9), EGD(groups(ref_params), lr=0.1, momentum=0.9)
        ref_state: dict = {}
        for k in range(2):
            _set_grads(params, k)
            _set_grads(ref_params, k)
            polar_calls.clear()
            opt.step()
            # 3 matrices × 3 blocks of (16, 16) in one call; the two (291, 128) = 3 blocks of (97, 128) in one
            # polar_many call (their 6 Grams in one batched eigh); the other group's alone
            assert sorted(polar_calls, key=repr) == sorted([(3, 3, 16, 16), ((3, 97, 128), (3, 97, 128)), ((48, 16),)],
                                                           key=repr)
            _reference_step(ref, ref_state)
        for p, q in zip(params, ref_params, strict=True):
            torch.testing.assert_close(p.detach(), q.detach(), atol=3 * _ROUNDING[torch.float32], rtol=0)


@pytest.mark.parametrize("backend", ["auto", "svd", "rsvd"])
def test_preconditioned_batched_step_equals_the_unbatched_step(backend):
    def run(batched_: bool, base, **kw):
        params = _many_params(torch.float32)
        w = whiten(backend, **({"rank": 4} if backend == "rsvd" else {}))
        t = w if batched_ else GradientTransform(w.init, w.update)  # no update_many: one parameter at a time
        opt = Preconditioned([{"params": params[:9]}, {"params": params[9:], "precondition": True}], base, t, **kw)
        for k in range(3):
            _set_grads(params, k)
            opt.step()
        return [p.detach() for p in params], opt.state_dict()

    with _threads(1):
        # two code paths, to rounding; SGD with momentum is linear in the gradient, so rounding stays rounding
        # (AdamW's g/√v can turn a rounding difference in a near-zero entry into a visible one)
        sgd = {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.1}
        (a, sa), (b, sb) = run(True, torch.optim.SGD, **sgd), run(False, torch.optim.SGD, **sgd)
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, atol=3 * _ROUNDING[torch.float32], rtol=0)
        assert _same(sa, sb, 3 * _ROUNDING[torch.float32])
        # the batched step with AdamW run twice: the same code twice, bitwise
        (a, sa), (b, sb) = (run(True, torch.optim.AdamW, lr=1e-2, weight_decay=0.1) for _ in range(2))
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)) and _same(sa, sb)


def _well_conditioned(count: int, shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator, backend: str):
    """Gaussian matrices, and for the exact backends (hard cutoff) low-rank ones (rank min(m, n)/3): the polar
    factor is well defined, so the two code paths' differences stay at rounding size.  (A low-rank fp32 matrix
    has its null directions at fp32 rounding, inside the soft cutoff of newton-schulz and polar-express, where a
    rounding difference moves the result by up to 4e-2: not a rounding-size comparison.)"""
    m, n = shape
    yield torch.randn(count, m, n, generator=gen, dtype=F64).to(dtype)
    if backend in ("auto", "svd", "gram-eigh"):
        r = max(1, min(m, n) // 3)
        yield (torch.randn(count, m, r, generator=gen, dtype=F64) @ torch.randn(count, r, n, generator=gen,
                                                                                dtype=F64)).to(dtype)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "rsvd"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("threads", [1, 2])
def test_polar_batched_equals_per_matrix_to_rounding(backend, dtype, threads):
    """Two code paths, on every CPU: one batched ``polar`` call and one call per matrix agree to rounding (the
    AMD EPYC that found issue #26 differs in the last bits for fp64 97 × 128; an Intel Xeon did not)."""
    gen = torch.Generator().manual_seed(1)
    with _threads(threads):
        for shape in [(3, 5), (7, 7), (8, 13), (13, 8), (32, 64), (97, 128), (128, 97)]:
            for G in _well_conditioned(3, shape, dtype, gen, backend):
                out = polar(G, backend)
                for i in range(3):
                    torch.testing.assert_close(out[i], polar(G[i].clone(), backend), atol=_ROUNDING[dtype], rtol=0,
                                               msg=lambda m, s=shape: f"{backend} {dtype} {s} {threads} threads: {m}")


def test_batched_rule(monkeypatch):
    """The batching decision depends on shape and device only (never on the thread count or the values), so one
    step on one machine takes the same path every time."""
    for threads in (1, 2):
        with _threads(threads):
            assert batched((64, 64), CPU) and batched((8, 4096), CPU) and batched((4096, 2), CPU)
            assert batched((3, 64, 4096), CPU)  # row blocks: the block's sides count
            assert not batched((65, 65), CPU) and not batched((97, 128), CPU) and not batched((512, 128), CPU)
    assert batched((512, 512), torch.device("meta"))  # off CPU: always
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert batched((512, 512), CPU)  # under torch.compile: always (one graph, fewer ops)


def test_nan_in_one_matrix_of_a_batch_leaves_the_others_finite():
    with _threads(1):
        params = [torch.nn.Parameter(torch.zeros(8, 8)) for _ in range(3)]
        _set_grads(params, 0)
        params[1].grad[2, 3] = math.nan
        EGD(params, lr=1.0, nonfinite="propagate").step()
        assert bool(torch.isnan(params[1]).all())
        assert all(bool(torch.isfinite(params[i]).all()) for i in (0, 2))


# ------------------------------------------------------------------------------------------------- state_dict


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 12), torch.nn.ReLU(),
                               torch.nn.Linear(12, 3))


def _train(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _conventions(model, **kw) -> EGD:
    ps = list(model.parameters())
    return EGD([{"params": ps[:2], "row_blocks": 3, "scale": "muon"}, {"params": ps[2:]}], lr=0.05, momentum=0.9,
               nesterov=True, momentum_position="before", scale="rms", rms_target=0.3, **kw)


@pytest.mark.parametrize("backend", ["auto", "rsvd"])
def test_state_dict_round_trip_continues_bitwise_with_the_new_keys(backend):
    model = _model(0)
    opt = _conventions(model, backend=backend, rank=4)
    _train(model, opt, 3, seed=1)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())
    assert [g["row_blocks"] for g in saved_opt["param_groups"]] == [3, 1]
    assert [g["scale"] for g in saved_opt["param_groups"]] == ["muon", "rms"]
    _train(model, opt, 3, seed=2)
    expected = [p.detach().clone() for p in model.parameters()]

    model2 = _model(123)
    model2.load_state_dict(saved_model)
    ps = list(model2.parameters())  # the same groups, with the default conventions: the checkpoint's must win
    opt2 = EGD([{"params": ps[:2]}, {"params": ps[2:]}], lr=0.05, backend=backend, rank=4)
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups[1]["momentum_position"] == "before" and opt2.param_groups[0]["row_blocks"] == 3
    _train(model2, opt2, 3, seed=2)
    assert all(torch.equal(a, b.detach()) for a, b in zip(expected, model2.parameters(), strict=True))


def test_a_checkpoint_without_a_key_of_todays_groups_is_refused_and_nothing_loads():
    """No migration of pre-release checkpoints: a group saved without some of today's keys is a ValueError naming
    them, raised before anything is loaded."""
    model = _model(0)
    opt = EGD(model.parameters(), lr=0.05, momentum=0.9)
    _train(model, opt, 2, seed=1)
    old = copy.deepcopy(opt.state_dict())
    for g in old["param_groups"]:
        for key in ("momentum_position", "scale"):
            del g[key]
    opt2 = EGD(_model(0).parameters(), lr=0.05, momentum=0.9, momentum_position="before", scale="rms")
    with pytest.raises(ValueError, match="param_groups\\[0\\] = \"without 'momentum_position', 'scale'\""):
        opt2.load_state_dict(old)
    assert not opt2.state and opt2.param_groups[0]["momentum_position"] == "before"


# ----------------------------------------------------------------------------------------------- validation


P = [torch.nn.Parameter(torch.zeros(6, 3))]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"momentum_position": "middle"}, "momentum_position = 'middle': must be one of 'after', 'before'"),
        ({"scale": "adam"}, "scale = 'adam': must be one of 'none', 'muon', 'rms', 'frobenius'"),
        ({"rms_target": 0.0}, "rms_target = 0.0: must be a number > 0"),
        ({"rms_target": -1}, "rms_target = -1: must be a number > 0"),
        ({"rms_target": math.inf}, "rms_target = inf: must be a number > 0"),
        ({"rms_target": True}, "rms_target = True: must be a number > 0"),
        ({"row_blocks": 0}, "row_blocks = 0: must be an integer >= 1"),
        ({"row_blocks": 1.5}, "row_blocks = 1.5: must be an integer >= 1"),
        ({"row_blocks": True}, "row_blocks = True: must be an integer >= 1"),
        ({"row_blocks": 4}, "row_blocks = 4: must divide the rows of every whitened matrix: a parameter of shape "
                            "(6, 3) has 6 rows"),
    ],
)
def test_bad_values_are_one_line_errors(kwargs, message):
    for make in (lambda: EGD(P, lr=0.1, **kwargs), lambda: EGD([{"params": P, **kwargs}], lr=0.1)):
        with pytest.raises(ValueError) as e:
            make()
        assert str(e.value) == message
    if "row_blocks" not in kwargs or kwargs["row_blocks"] != 4:  # whiten() cannot see shapes before a step
        key, value = next(iter(kwargs.items()))
        if key != "momentum_position":
            with pytest.raises(ValueError) as e:
                whiten(**{key: value})
            assert str(e.value) == message


def test_row_blocks_that_do_not_divide_pass_when_not_whitened_and_fail_at_the_step_of_a_transform():
    EGD([{"params": P, "whiten": False, "row_blocks": 4}], lr=0.1)  # not whitened: row_blocks unused
    t = whiten(row_blocks=4)
    W = torch.nn.Parameter(torch.zeros(6, 3))
    W.grad = torch.ones(6, 3)
    opt = Preconditioned([W], torch.optim.SGD, t, lr=1.0)
    with pytest.raises(ValueError, match=r"^row_blocks = 4: .*shape \(6, 3\) has 6 rows$"):
        opt.step()
    assert torch.equal(W.detach(), torch.zeros(6, 3))  # all or nothing


def test_recipes_take_the_new_keys_and_name_bad_ones():
    named = list(_model(0).named_parameters())
    opt = build_optimizer(named, "egd", momentum=0.9, momentum_position="before", scale="muon", row_blocks=3)
    g = opt.param_groups[0]
    assert (g["momentum_position"], g["scale"], g["row_blocks"]) == ("before", "muon", 3)
    with pytest.raises(ConfigError) as e:
        build_optimizer(named, "egd", scale="adam")
    assert str(e.value) == "optimizer.scale = 'adam': must be one of 'none', 'muon', 'rms', 'frobenius'"
    with pytest.raises(ConfigError) as e:
        build_optimizer(named, "egd", row_blocks=5)
    assert str(e.value).startswith("optimizer.row_blocks = 5: must divide the rows of every whitened matrix")


def test_cli_exits_with_one_line_for_a_bad_convention(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[task]\nname = "modular"\np = 7\n\n[model]\nname = "mlp"\nhidden = 16\n\n'
                   '[optimizer]\nname = "egd"\nlr = 0.5\n\n[train]\nmax_epochs = 1\nthreads = 1\nprogress = "off"\n')
    code = main(["run", "--config", str(cfg), "--set", "optimizer.scale=adam", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == "egd: error: optimizer.scale = 'adam': must be one of 'none', 'muon', 'rms', 'frobenius'"


# --------------------------------------------------------------------------------------------- torch.compile


def _compiled_run(backend: str | None, **kw) -> list[torch.Tensor]:
    kw = {("backend" if k == "polar" else k): v for k, v in kw.items()}  # "polar": EGD's backend, not compile's
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 12), torch.nn.Tanh(), torch.nn.Linear(12, 12), torch.nn.Tanh(),
                                torch.nn.Linear(12, 12))
    opt = EGD(model.parameters(), lr=0.05, momentum=0.9, nonfinite="propagate", **kw)
    step = opt.step if backend is None else torch.compile(opt.step, fullgraph=True, backend=backend)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(32, 12, generator=g), torch.randint(0, 12, (32,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        step()
    return [p.detach() for p in model.parameters()]


@pytest.mark.parametrize("kw", [{}, {"nesterov": True, "momentum_position": "before", "scale": "rms",
                                     "row_blocks": 3}, {"polar": "polar-express"}])
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_step_compiles_in_one_graph_with_nonfinite_propagate(backend, kw):
    """fullgraph=True: no graph break, so no host sync (a .item() or bool(tensor) would break the graph)."""
    import torch._dynamo

    torch._dynamo.reset()
    with _threads(1):
        expected = _compiled_run(None, **kw)
        got = _compiled_run(backend, **kw)
    # two code paths (compiled, the whitening is always batched, row blocks included; aot_eager decomposes ops):
    # equal to rounding after 3 steps, not bitwise
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_preconditioneds_batched_whitening_compiles_in_one_graph():
    """Preconditioned's own part of the step (the transform over every gradient) has no host sync either; torch's
    base optimizers break the graph on purpose, so the whole step cannot be one graph."""
    import torch._dynamo

    torch._dynamo.reset()
    params = _many_params(torch.float32)
    _set_grads(params, 0)
    t = whiten(nonfinite="propagate", scale="muon")
    states = [t.init(p) for p in params]
    run = lambda gs: t.update_all(gs, states, params)[0]  # noqa: E731
    grads = [p.grad for p in params]
    with _threads(1):
        expected = run(grads)
        got = torch.compile(run, fullgraph=True, backend="eager")(grads)
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_step_with_nonfinite_raise_is_not_one_graph():
    """The all-or-nothing check reads max|g| on the host: fullgraph refuses it (use nonfinite="propagate")."""
    import torch._dynamo

    torch._dynamo.reset()
    W = torch.nn.Parameter(torch.zeros(4, 4))
    W.grad = torch.ones(4, 4)
    opt = EGD([W], lr=0.1)
    with pytest.raises((torch._dynamo.exc.Unsupported, torch._dynamo.exc.UserError), match="isfinite"):
        torch.compile(opt.step, fullgraph=True, backend="eager")()


_INDUCTOR = """
import torch
from test_optim_conventions import _compiled_run
torch.set_num_threads(1)
for kw in ({}, {"nesterov": True, "momentum_position": "before", "scale": "muon", "row_blocks": 3}):
    expected, got = _compiled_run(None, **kw), _compiled_run("inductor", **kw)
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
print("ok")
"""


@pytest.mark.slow
def test_step_compiles_with_inductor_fullgraph():
    """The default torch.compile backend (inductor, C++ code on CPU), in a subprocess with a time limit."""
    if not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        pytest.skip("inductor on CPU needs a C++ compiler (c++, g++ or clang++); none is on PATH")
    proc = subprocess.run([sys.executable, "-c", _INDUCTOR], capture_output=True, text=True, timeout=900,
                          cwd=str(__import__("pathlib").Path(__file__).parent))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]

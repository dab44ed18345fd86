"""polar(backend="polar-express"): the coefficient recursion, the normalizer, accuracy against an fp64 SVD.

Stated bounds (relative Frobenius error against the fp64 SVD polar factor of the same input, cutoff at the
default ``rtol``; log-spaced spectra κ ≤ 1e3, shapes up to 128):

| compute | bound  | measured (this CPU) | for comparison: fp32 svd |
|---------|--------|---------------------|--------------------------|
| fp64    | 1e-10  | ≤ 5e-13             | -                        |
| fp32    | 2e-5   | ≤ 7.1e-6            | ≤ 1.5e-5                 |

Batched equals looped: asserted to 1e-6 (fp32) / 1e-13 (fp64); on this CPU (MKL) it is bitwise equal, which is
not guaranteed on other BLAS or on CUDA.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from egalitarian.errors import ConfigError
from egalitarian.linalg import (
    BACKENDS,
    PE_LOWER_FLOOR,
    PE_SAFETY,
    PE_TOL,
    _ieee_fp32_matmul,
    default_rtol,
    pe_default_lower,
    polar,
    polar_express_schedule,
    resolve_backend,
    schatten8_norm,
)

PE = "polar-express"


from test_linalg import reference, rel_err  # noqa: E402  (the same fp64-SVD reference as the exact backends)


def with_spectrum(m: int, n: int, s: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(G, U, V): G = U diag(s) Vᵀ with random orthonormal U (m×k), V (n×k), k = len(s), float64."""
    g = torch.Generator().manual_seed(seed)
    k = len(s)
    U = torch.linalg.qr(torch.randn(m, k, dtype=torch.float64, generator=g)).Q
    V = torch.linalg.qr(torch.randn(n, k, dtype=torch.float64, generator=g)).Q
    return (U * s.double()) @ V.T, U, V


def log_spectrum(k: int, kappa: float) -> torch.Tensor:
    return torch.logspace(0, -math.log10(kappa), k, dtype=torch.float64)


def compose(schedule, x: np.ndarray) -> np.ndarray:
    for step in schedule:
        x = step.a * x + step.b * x**3 + step.c * x**5
    return x


# ------------------------------------------------------------------------------ the coefficient recursion


STEPS = {  # (lower, tol) -> number of steps; fp32 uses tol 1e-6, fp64 1e-12
    (1e-3, 1e-6): 7,
    (1e-4, 1e-6): 9,
    (1e-5, 1e-6): 10,
    (1e-6, 1e-6): 12,
    (1e-7, 1e-6): 14,
    (1e-3, 1e-12): 8,
    (1e-4, 1e-12): 10,
    (1e-5, 1e-12): 11,
    (1e-6, 1e-12): 13,
    (1e-7, 1e-12): 14,
}


@pytest.mark.parametrize("lower,tol", list(STEPS))
def test_each_step_maps_its_interval_into_the_claimed_one(lower, tol):
    sched = polar_express_schedule(lower, tol)
    assert len(sched) == STEPS[(lower, tol)]
    assert sched[0].lower == lower and sched[0].upper == 1.0
    for k, step in enumerate(sched):
        last = k == len(sched) - 1
        hi = step.upper * (1 if last else PE_SAFETY)  # every step but the last also takes inputs up to 1.01 · u_k
        x = np.concatenate([np.geomspace(step.lower, hi, 20001), np.linspace(step.lower, hi, 20001)])
        y = step.a * x + step.b * x**3 + step.c * x**5
        slack = 1e-14
        assert y.min() >= step.image_lower - slack and y.max() <= step.image_upper + slack, k
        assert step.image_upper == 2 - step.image_lower
        assert step.image_lower > step.lower  # the lower bound rises every step
        if not last:
            assert (sched[k + 1].lower, sched[k + 1].upper) == (step.image_lower, step.image_upper)
        # p(x) ≤ a·x on [0, u_k] (b + c x² ≤ 0 there): the basis of f(x) ≤ x · Π a_k below l
        assert step.b < 0 < step.c and math.sqrt(-step.b / step.c) > hi
    assert 1 - sched[-1].image_lower <= tol
    # the final step is (numerically) the convergent quintic 15/8, -10/8, 3/8 rescaled: no separate polish needed
    assert abs(sched[-1].a - 15 / 8) < 0.05


@pytest.mark.parametrize("lower,tol", [(1e-5, 1e-6), (1e-7, 1e-12), (1e-3, 1e-6)])
def test_composition_is_a_soft_cutoff(lower, tol):
    sched = polar_express_schedule(lower, tol)
    # converged on [l, 1.01]
    x = np.concatenate([np.geomspace(lower, PE_SAFETY, 50001), np.linspace(lower, PE_SAFETY, 50001)])
    assert np.abs(compose(sched, x) - 1).max() <= tol + 1e-14
    # below l: monotone from 0, at most x · Π a_k, with Π a_k about 3/l to 8/l
    slope = math.prod(s.a for s in sched)
    assert 2.9 / lower < slope < 9 / lower
    x = np.geomspace(lower * 1e-6, lower, 20001)
    f = compose(sched, x)
    assert np.all(np.diff(f) > 0) and f[0] > 0
    assert np.all(f <= x * slope * (1 + 1e-12))
    assert compose(sched, np.array([0.0]))[0] == 0
    # the profile stated in the module docstring
    assert 0.25 < compose(sched, np.array([0.15 * lower]))[0] < 0.75
    assert 0.02 < compose(sched, np.array([0.01 * lower]))[0] < 0.06


def test_schedule_is_cached_and_validated():
    assert polar_express_schedule(1e-4, 1e-6) is polar_express_schedule(1e-4, 1e-6)
    with pytest.raises(ValueError, match="pe_lower = 0.0"):
        polar_express_schedule(0.0, 1e-6)
    with pytest.raises(ValueError, match="tol = 0"):
        polar_express_schedule(1e-3, 0)
    # an interval that starts narrow: one (convergent-quintic) step
    assert len(polar_express_schedule(1 - 1e-7, 1e-6)) == 1


def test_default_lower():
    # rtol · k^{-1/8}, with the floor 1e-7 (which binds for fp64's rtol ~ 1e-13)
    shape = (512, 254)
    assert pe_default_lower(shape, default_rtol(shape, torch.float32)) == pytest.approx(
        512 * torch.finfo(torch.float32).eps * 254 ** (-1 / 8)
    )
    assert pe_default_lower(shape, default_rtol(shape, torch.float64)) == PE_LOWER_FLOOR
    assert pe_default_lower((9, 1), 0.0) == PE_LOWER_FLOOR


# ------------------------------------------------------------------------------ the normalizer


@pytest.mark.parametrize("dtype,rel", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_schatten8_normalizer_bounds_the_spectral_norm(dtype, rel):
    g = torch.Generator().manual_seed(11)
    for shape in [(7, 5), (5, 7), (4, 30, 20), (2, 3, 64, 64), (1, 50), (50, 1)]:
        G = torch.randn(*shape, dtype=dtype, generator=g) * 10 ** torch.randint(-20, 20, (), generator=g).item()
        t = schatten8_norm(G).double()
        s = torch.linalg.svdvals(G.double())
        k = min(shape[-2:])
        assert t.shape == G.shape[:-2]
        assert bool((t >= s[..., 0] * (1 - rel)).all()), shape  # ≥ σ_max (up to round-off, absorbed by 1.01)
        assert bool((t <= s[..., 0] * k ** (1 / 8) * (1 + rel)).all()), shape
        torch.testing.assert_close(t, (s**8).sum(-1) ** (1 / 8), rtol=rel * 10, atol=0)
    # rank 1: exactly σ_max; flat spectrum: k^{1/8} σ_max (the worst case)
    u, v = torch.randn(30, 1, dtype=torch.float64), torch.randn(1, 40, dtype=torch.float64)
    assert schatten8_norm(u @ v).item() == pytest.approx(torch.linalg.matrix_norm(u @ v, 2).item(), rel=1e-13)
    Q = torch.linalg.qr(torch.randn(40, 16, dtype=torch.float64)).Q
    assert schatten8_norm(Q).item() == pytest.approx(16 ** (1 / 8), rel=1e-13)
    assert schatten8_norm(torch.zeros(3, 4)).item() < 1e-30


# ------------------------------------------------------------------------------ against the SVD reference


SHAPES = [(64, 96), (96, 64), (80, 80), (128, 40)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kappa", [1.0, 1e1, 1e2, 1e3])
def test_agrees_with_svd_reference(shape, kappa):
    G, _, _ = with_spectrum(*shape, log_spectrum(min(shape), kappa), seed=1)
    assert rel_err(polar(G, PE), reference(G)) < 1e-10  # fp64 compute (measured ≤ 5e-13)
    G32 = G.float()
    out = polar(G32, PE)
    assert out.dtype == torch.float32
    assert rel_err(out, reference(G32)) < 2e-5  # fp32 compute (measured ≤ 7.1e-6)
    # fp32 input, fp64 compute: exact up to the rounding of the fp32 output
    assert rel_err(polar(G32, PE, dtype=torch.float64), reference(G32)) < 1e-7


def test_half_precision_input_is_computed_in_fp32():
    G, _, _ = with_spectrum(40, 56, log_spectrum(40, 10.0))
    for dtype, tol in [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)]:
        Gh = G.to(dtype)
        out = polar(Gh, PE)
        assert out.dtype == dtype
        assert rel_err(out, reference(Gh.float())) < tol


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
def test_batched_equals_looped(dtype, atol):
    for shape in [(3, 2, 40, 56), (3, 56, 40)]:
        G = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(4))
        batched = polar(G, PE)
        flat = G.reshape(-1, *shape[-2:])
        looped = torch.stack([polar(x, PE) for x in flat]).reshape(shape)
        torch.testing.assert_close(batched, looped, atol=atol, rtol=0)


def test_rank_deficient_fp64_follows_the_soft_cutoff():
    # rank 5, three directions at 1e-9 (100× below the fp64 floor l = 1e-7), the rest exactly 0
    s = torch.tensor([1, 0.5, 0.2, 0.1, 0.05, 1e-9, 1e-9, 1e-9], dtype=torch.float64)
    G, U, V = with_spectrum(40, 64, s)
    O = polar(G, PE)
    D = U.T @ O @ V
    f = torch.diagonal(D)
    # a spectral function of G (off-diagonal ~2e-10 only inside the degenerate 1e-9 block: its vectors are
    # determined by G's round-off only up to ε64/1e-9 rotations)
    assert (D - torch.diag(f)).abs().max() < 1e-9
    assert (f[:5] - 1).abs().max() < 1e-11  # kept: 1
    # the tiny directions get exactly the scalar composition f(s/t), here ≈ 0.05 (soft cutoff, not 0)
    sched = polar_express_schedule(PE_LOWER_FLOOR, PE_TOL[torch.float64])
    t = schatten8_norm(G).item()
    expect = compose(sched, np.array([1e-9 / t]))[0]
    assert 0.03 < expect < 0.06
    torch.testing.assert_close(f[5:], torch.full((3,), expect, dtype=torch.float64), atol=1e-9, rtol=0)
    # the 32 exactly-null directions: only G's fp64 rounding (~ε64) lives there, weighted ≈ 5 ε64/l ≈ 1e-8 each
    rest = O - U @ D @ V.T
    assert torch.linalg.matrix_norm(rest, 2).item() < 5e-8  # measured: Frobenius 1.1e-8


@pytest.mark.parametrize("shape,null_bound", [((40, 64), 0.1), ((64, 40), 0.1), ((128, 300), 0.03)])
def test_rank_deficient_fp32_null_directions_stay_small(shape, null_bound):
    # rank 5 in fp32: rounding gives the null directions singular values ~ε32·s_max, weighted ≈ 5 ε32 s_max/(l t)
    # ≲ 5 k^{1/8}/max(m, n) (measured 0.034, 0.034, 0.0075); the kept ones converge to 1
    G, U, V = with_spectrum(*shape, torch.tensor([1, 0.5, 0.2, 0.1, 0.05], dtype=torch.float64))
    G = G.float()
    m, n = shape
    assert null_bound >= 5 * min(m, n) ** (1 / 8) / max(m, n) * 0.8
    sv = torch.linalg.svdvals(polar(G, PE).double())
    assert (sv[:5] - 1).abs().max() < 1e-5
    assert sv[5:].max() < null_bound
    # a higher pe_lower suppresses them ∝ 1/l (measured 1.3e-4 at l = 1e-3)
    sv = torch.linalg.svdvals(polar(G, PE, pe_lower=1e-3).double())
    assert (sv[:5] - 1).abs().max() < 1e-5
    assert sv[5:].max() < 1e-3


def test_pe_lower_trades_small_directions_for_steps():
    # κ = 1e4: with l = 1e-2 the directions below ~1e-2·t are not converged (weights between 0 and 1)
    G, U, V = with_spectrum(30, 50, log_spectrum(30, 1e4))
    f = torch.diagonal(U.T @ polar(G, PE, pe_lower=1e-2) @ V)
    assert (f[:8] - 1).abs().max() < 1e-10  # s ≥ ~1e-2 (log-spaced: the first 8)
    assert 0 < f[-1] < 0.5
    assert rel_err(polar(G, PE, pe_lower=1e-5), reference(G)) < 1e-10


# ------------------------------------------------------------------------------ contract details


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nonfinite_propagate_and_raise(dtype):
    G = torch.randn(3, 6, 9, dtype=dtype, generator=torch.Generator().manual_seed(0))
    G[1, 2, 3] = float("nan")
    out = polar(G, PE, nonfinite="propagate")
    assert bool(torch.isnan(out[1]).all()) and bool(torch.isfinite(out[[0, 2]]).all())
    assert rel_err(out[[0, 2]], reference(G[[0, 2]])) < (2e-5 if dtype == torch.float32 else 1e-10)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        polar(G, PE)


def test_no_data_dependent_host_sync():
    # meta tensors have no data: any .item(), bool(tensor) or value-dependent branch would raise
    G = torch.empty(3, 40, 24, device="meta")
    assert resolve_backend("auto", G) == PE
    out = polar(G, nonfinite="propagate")  # auto → polar-express off CPU
    assert out.shape == G.shape and out.device.type == "meta"
    assert polar(G, PE, nonfinite="propagate", pe_lower=1e-3).shape == G.shape
    with pytest.raises(RuntimeError):  # the default check does sync
        polar(G, PE)


def test_auto_per_device():
    cpu32, cpu64 = torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.float64)
    assert resolve_backend("auto", cpu32) == "gram-eigh" and resolve_backend("auto", cpu64) == "svd"
    meta32, meta64 = cpu32.to("meta"), cpu64.to("meta")  # stands in for CUDA: any non-CPU device
    assert resolve_backend("auto", meta32) == PE and resolve_backend("auto", meta64) == PE
    # the paper's clamp needs an exact backend: auto keeps the CPU choice with clamp_eps
    assert resolve_backend("auto", meta32, clamp_eps=1e-6) == "gram-eigh"
    assert resolve_backend("auto", meta64, clamp_eps=1e-6) == "svd"
    assert PE in BACKENDS


def test_clamp_is_not_an_option_and_zero_matrix_gives_zeros():
    G = torch.randn(20, 30, generator=torch.Generator().manual_seed(3))
    with pytest.raises(ConfigError, match="clamp_eps = 0.001: not an option of backend 'polar-express'"):
        polar(G, PE, clamp_eps=1e-3)
    assert torch.equal(polar(torch.zeros(2, 5, 7), PE), torch.zeros(2, 5, 7))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(pe_lower=0.0), "pe_lower = 0.0: must be None or a number in"),
        (dict(pe_lower=1.0), "pe_lower = 1.0"),
        (dict(pe_lower=1e-13), "pe_lower = 1e-13"),
        (dict(pe_lower=True), "pe_lower = True"),
        (dict(pe_lower="1e-3"), "pe_lower = '1e-3'"),
        (dict(dtype=torch.bfloat16), "dtype = torch.bfloat16: must be None, torch.float32 or torch.float64"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        polar(torch.randn(3, 4), PE, **kwargs)


def test_tf32_is_disabled_inside_and_restored_after():
    mm = torch.backends.cuda.matmul
    try:
        name, before, inside = "fp32_precision", mm.fp32_precision, "ieee"
    except AttributeError:  # torch < 2.9
        name, before, inside = "allow_tf32", mm.allow_tf32, False
    with _ieee_fp32_matmul(torch.device("cuda")):  # only sets a flag: works without a GPU
        assert getattr(mm, name) == inside
    assert getattr(mm, name) == before
    with _ieee_fp32_matmul(torch.device("cpu")):  # no-op off CUDA
        assert getattr(mm, name) == before


def test_compiles_as_one_graph_without_host_sync():
    # the schedule (a NumPy Remez solve) is a constant of the graph, so `auto` on a GPU compiles with fullgraph
    G = torch.randn(3, 16, 32, generator=torch.Generator().manual_seed(0))
    f = torch.compile(lambda x: polar(x, "polar-express", nonfinite="propagate"), fullgraph=True, backend="eager")
    # compiled vs eager: two code paths, equal to rounding
    torch.testing.assert_close(f(G), polar(G, "polar-express", nonfinite="propagate"), atol=1e-6, rtol=0)

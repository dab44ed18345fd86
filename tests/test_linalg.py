"""polar(): against an independent fp64 SVD reference, closed forms and invariances.

Stated tolerances (relative Frobenius error against the fp64 SVD polar factor on the kept subspace):

| backend                    | random fp32 | κ = 1e6, fp32 input | κ = 1e6, fp64 input |
|----------------------------|-------------|---------------------|---------------------|
| svd (fp64 compute)         | 1e-6        | 1e-6                | 1e-10               |
| svd, dtype=float32         | 1e-5        | 1e-2 (fp32 SVD)     | -                   |
| gram-eigh (fp64 Gram)      | 1e-6        | 1e-6                | 1e-5                |
| newton-schulz ("polar")    | 1e-5        | spectral test only  | -                   |
| rsvd (rank ≥ true rank)    | ε32·κ       | top-r subspace only | top-r, 1e-5         |
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from egalitarian.errors import ConfigError
from egalitarian.linalg import (
    BACKENDS,
    POLAR_BACKENDS,
    backend_options,
    default_rtol,
    polar,
    polar_many,
    polar_via_gram_eigh,
    polar_via_newton_schulz,
    polar_via_polar_express,
    polar_via_rsvd,
    polar_via_svd,
    resolve_backend,
)

EXACT = ["svd", "gram-eigh", "auto"]
CLAMPING = ["svd", "gram-eigh", "rsvd", "auto"]  # the backends that take clamp_eps (the paper's clamp)


def rsvd_only(backend: str, **options: object) -> dict[str, object]:
    """``options`` (rsvd's knobs) for ``backend="rsvd"``, nothing for the other backends, which have no such knob."""
    return options if backend == "rsvd" else {}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return (torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b).clamp_min(1e-300)).max().item()


def reference(G: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    """U_r V_rᵀ from an fp64 SVD written out here, independent of polar()."""
    rtol = default_rtol(G.shape, G.dtype) if rtol is None else rtol
    U, s, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    keep = (s > rtol * s[..., :1]).double()
    return (U * keep.unsqueeze(-2)) @ Vh


def with_spectrum(m: int, n: int, s: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """U diag(s) Vᵀ with random orthonormal U (m×k), V (n×k), k = len(s), in float64."""
    g = torch.Generator().manual_seed(seed)
    k = len(s)
    U = torch.linalg.qr(torch.randn(m, k, dtype=torch.float64, generator=g)).Q
    V = torch.linalg.qr(torch.randn(n, k, dtype=torch.float64, generator=g)).Q
    return (U * s.double()) @ V.T


def ill(m: int, n: int, kappa: float = 1e6, seed: int = 0) -> torch.Tensor:
    return with_spectrum(m, n, torch.logspace(0, -math.log10(kappa), min(m, n), dtype=torch.float64), seed)


SHAPES = [(40, 70), (70, 40), (32, 32), (1, 9), (9, 1)]


@pytest.mark.parametrize("backend", EXACT)
@pytest.mark.parametrize("shape", SHAPES)
def test_singular_values_one_and_vectors_of_G(backend, shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    O = polar(G, backend).double()
    U, s, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    # Uᵀ O V = I: O has G's singular vectors and unit singular values.
    torch.testing.assert_close(U.T @ O @ Vh.T, torch.eye(len(s), dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.svdvals(O), torch.ones(len(s), dtype=torch.float64), atol=1e-5, rtol=0)


def test_row_vector_is_normalised():
    g = torch.tensor([[3.0, 0.0, -4.0]])
    for backend in BACKENDS:
        torch.testing.assert_close(polar(g, backend), g / 5, atol=1e-6, rtol=0)


def test_orthogonal_rows_closed_form():
    # Rows orthogonal with equal norm 5: (G Gᵀ)^(-1/2) = I/5.
    G = torch.tensor([[3.0, 0.0, 4.0], [0.0, 5.0, 0.0]])
    for backend in EXACT:
        torch.testing.assert_close(polar(G, backend), G / 5, atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend,tol", [("svd", 1e-6), ("gram-eigh", 1e-6), ("auto", 1e-6), ("newton-schulz", 1e-5)])
@pytest.mark.parametrize("shape", [(40, 70), (70, 40), (128, 64)])
def test_agrees_with_reference_random(backend, tol, shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    assert rel_err(polar(G, backend), reference(G)) < tol


def test_fp32_svd_is_looser_on_random():
    G = torch.randn(70, 40, generator=torch.Generator().manual_seed(2))
    assert rel_err(polar(G, "svd", dtype=torch.float32), reference(G)) < 1e-5


@pytest.mark.parametrize("shape", [(40, 70), (70, 40), (64, 64)])
def test_agrees_with_reference_ill_conditioned_fp32(shape):
    G = ill(*shape).float()
    R = reference(G)  # cutoff at default_rtol(fp32) ≈ 8e-6: directions below it are dropped by both
    for backend in ["svd", "gram-eigh", "auto"]:
        assert rel_err(polar(G, backend), R) < 1e-6, backend
    assert rel_err(polar(G, "svd", dtype=torch.float32), R) < 1e-2


@pytest.mark.parametrize("shape", [(40, 70), (70, 40), (64, 64)])
def test_agrees_with_reference_ill_conditioned_fp64(shape):
    G = ill(*shape)
    R = reference(G)  # fp64 cutoff keeps every direction down to 1e-6
    assert R.shape == G.shape and torch.linalg.matrix_rank(R) == min(shape)
    assert rel_err(polar(G, "svd"), R) < 1e-10
    assert rel_err(polar(G, "gram-eigh"), R) < 1e-5
    assert resolve_backend("auto", G) == "svd"


def test_newton_schulz_is_a_spectral_function_of_G():
    # NS is a polynomial in G Gᵀ times G, so Uᵀ NS(G) V is diagonal = f(s).  With the convergent polish,
    # f(s) ≈ 1 for s ≥ 1e-2 s_max even when κ = 1e6; tiny directions stay small (not blown up).
    G = ill(48, 80).float()
    O = polar(G, "newton-schulz").double()
    U, s, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    D = U.T @ O @ Vh.T
    f = torch.diagonal(D)
    assert (D - torch.diag(f)).abs().max() < 1e-4
    assert (f[s > 1e-2 * s[0]] - 1).abs().max() < 1e-4
    assert f.max() < 1 + 1e-4 and f.min() > -1e-4
    assert f[-1] < 0.5  # the s = 1e-6 direction is not raised to 1


def test_muon_coefficients_are_not_the_polar_factor():
    G = torch.randn(64, 128, generator=torch.Generator().manual_seed(3))
    O = polar(G, "newton-schulz", ns_coefficients="muon")
    sv = torch.linalg.svdvals(O.double())
    assert sv.min() > 0.5 and sv.max() < 1.3
    assert rel_err(O, reference(G)) > 0.05  # about 0.2: Muon's NS5 is not U Vᵀ


def test_rsvd_exact_when_rank_at_most_r():
    # fp32 compute: the error grows like ε32·κ (here κ = 5e3, error ~5e-5); fp64 input is exact.
    G = with_spectrum(60, 90, torch.tensor([5.0, 2.0, 1.0, 0.5, 1e-3]))
    gen = torch.Generator().manual_seed(0)
    assert rel_err(polar(G.float(), "rsvd", rank=8, generator=gen), reference(G.float())) < 2e-4
    assert rel_err(polar(G, "rsvd", rank=8, generator=gen), reference(G)) < 1e-10


def test_rsvd_keeps_only_top_r_subspace():
    # Spectrum 1 … 1e-6 on the top 8 directions, then a gap: rank-8 rsvd gives U_8 V_8ᵀ and drops the rest.
    top = torch.logspace(0, -6, 8, dtype=torch.float64)
    G = with_spectrum(50, 80, torch.cat([top, torch.full((20,), 1e-9, dtype=torch.float64)]))
    R = reference(with_spectrum(50, 80, torch.cat([top, torch.zeros(20, dtype=torch.float64)])), rtol=1e-8)
    out = polar(G, "rsvd", rank=8, power_iters=2, generator=torch.Generator().manual_seed(0), rtol=1e-8)
    assert rel_err(out, R) < 1e-5


def test_rsvd_generator_makes_it_reproducible():
    G = torch.randn(40, 60)
    a = polar(G, "rsvd", rank=10, generator=torch.Generator().manual_seed(5))
    b = polar(G, "rsvd", rank=10, generator=torch.Generator().manual_seed(5))
    c = polar(G, "rsvd", rank=10, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("backend", ["svd", "gram-eigh", "newton-schulz", "auto"])
def test_batched_equals_looped(backend):
    G = torch.randn(3, 2, 20, 33, generator=torch.Generator().manual_seed(4))
    batched = polar(G, backend)
    looped = torch.stack([torch.stack([polar(G[i, j], backend) for j in range(2)]) for i in range(3)])
    torch.testing.assert_close(batched, looped, atol=1e-6, rtol=0)


def test_batched_rsvd_on_low_rank_equals_looped():
    g = torch.Generator().manual_seed(4)
    G = torch.randn(4, 30, 3, generator=g) @ torch.randn(4, 3, 40, generator=g)
    batched = polar(G, "rsvd", rank=6, generator=torch.Generator().manual_seed(0))
    looped = torch.stack([polar(G[i], "rsvd", rank=6, generator=torch.Generator().manual_seed(0)) for i in range(4)])
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["svd", "gram-eigh", "auto", "rsvd"])
def test_rank_deficient_drops_null_directions(backend):
    # rank 5, plus round-off-sized noise: the output is U_5 V_5ᵀ, not a matrix of rank 40.
    g = torch.Generator().manual_seed(7)
    G = (torch.randn(40, 5, generator=g) @ torch.randn(5, 64, generator=g)).float()
    G = G + 1e-9 * torch.randn(40, 64, generator=g)
    out = polar(G, backend, **rsvd_only(backend, rank=16, generator=torch.Generator().manual_seed(0))).double()
    sv = torch.linalg.svdvals(out)
    torch.testing.assert_close(sv[:5], torch.ones(5, dtype=torch.float64), atol=1e-5, rtol=0)
    assert sv[5:].max() < 1e-5
    assert rel_err(out, reference(G)) < 1e-5


@pytest.mark.parametrize(
    "backend,s,eps,clamped",
    [
        # cutoff keeps (1, 1, 0); the paper's clamp 1/max(s, eps) gives s/eps on the tiny direction
        ("svd", (1.0, 1e-3, 1e-8), 1e-6, (1.0, 1.0, 1e-2)),
        # the fp64 Gram resolves s only down to ~1e-7·s_max, so test its clamp above that
        ("gram-eigh", (1.0, 1e-3, 1e-5), 1e-4, (1.0, 1.0, 1e-1)),
    ],
)
def test_paper_clamp_weights(backend, s, eps, clamped):
    s = torch.tensor(s, dtype=torch.float64)
    G = with_spectrum(6, 9, s)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    U, Vh = U[:, :3], Vh[:3]
    cut = torch.diagonal(U.T @ polar(G, backend, rtol=eps) @ Vh.T)
    clamp = torch.diagonal(U.T @ polar(G, backend, clamp_eps=eps) @ Vh.T)
    torch.testing.assert_close(cut, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(clamp, torch.tensor(clamped, dtype=torch.float64), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(5, 7), (7, 5), (1, 4), (2, 3, 4)])
def test_zero_matrix_gives_zeros(backend, shape):
    out = polar(torch.zeros(*shape), backend)
    assert torch.equal(out, torch.zeros(*shape))
    if backend in CLAMPING:
        assert torch.equal(polar(torch.zeros(*shape), backend, clamp_eps=1e-6), torch.zeros(*shape))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("backend", BACKENDS)
def test_dtype_preserved(dtype, backend):
    G = torch.randn(12, 20, generator=torch.Generator().manual_seed(8)).to(dtype)
    out = polar(G, backend, **rsvd_only(backend, rank=12, generator=torch.Generator().manual_seed(0)))
    assert out.dtype == dtype and out.shape == G.shape
    if backend != "newton-schulz" or dtype == torch.float64:
        tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-4)
        assert rel_err(out, reference(G.float())) < tol


def test_nonfinite_raises_or_propagates():
    G = torch.randn(4, 6)
    G[1, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        polar(G)
    assert torch.isnan(polar(G, "newton-schulz", nonfinite="propagate")).any()
    G[1, 2] = float("inf")
    with pytest.raises(FloatingPointError):
        polar(G, "svd")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("backend", BACKENDS)
def test_propagate_lets_nonfinite_through_every_backend(backend, bad, dtype):
    """A batch of 3 matrices, the middle one non-finite: it comes out all NaN; the others are U Vᵀ as usual."""
    G = torch.randn(3, 6, 9, dtype=dtype, generator=torch.Generator().manual_seed(0))
    G[1, 2, 3] = bad
    rsvd = rsvd_only(backend, rank=12, generator=torch.Generator().manual_seed(0))
    out = polar(G, backend, nonfinite="propagate", **rsvd)
    assert out.shape == G.shape and out.dtype == dtype
    assert bool(torch.isnan(out[1]).all())
    assert bool(torch.isfinite(out[[0, 2]]).all())
    tol = 1e-4 if backend in ("newton-schulz", "rsvd") or dtype == torch.float32 else 1e-10
    assert rel_err(out[[0, 2]], reference(G[[0, 2]])) < tol
    # a single (unbatched) non-finite matrix
    assert bool(torch.isnan(polar(G[1], backend, nonfinite="propagate")).all())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(backend="qr"), "backend = 'qr'"),
        (dict(rtol=2.0), "rtol = 2.0"),
        (dict(clamp_eps=0.0), "clamp_eps = 0.0"),
        (dict(backend="rsvd", rank=0), "rank = 0"),
        (dict(nonfinite="ignore"), "nonfinite = 'ignore'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        polar(torch.randn(3, 4), **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        polar(torch.randn(5))
    with pytest.raises(ValueError, match="floating point"):
        polar(torch.ones(3, 3, dtype=torch.int64))


def _orthogonal(k: int, g: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(k, k, dtype=torch.float64, generator=g)).Q


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 9),
    n=st.integers(1, 9),
    rank=st.integers(1, 9),
    seed=st.integers(0, 2**31 - 1),
    backend=st.sampled_from(["svd", "gram-eigh"]),
)
def test_orthogonal_equivariance(m, n, rank, seed, backend):
    """polar(Q G R) = Q polar(G) R for orthogonal Q, R (also for rank-deficient G)."""
    g = torch.Generator().manual_seed(seed)
    r = min(rank, m, n)
    G = torch.randn(m, r, dtype=torch.float64, generator=g) @ torch.randn(r, n, dtype=torch.float64, generator=g)
    Q, R = _orthogonal(m, g), _orthogonal(n, g)
    rtol = 1e-7  # well above round-off, far below any nonzero singular value of a product of Gaussians here
    lhs = polar(Q @ G @ R, backend, rtol=rtol)
    rhs = Q @ polar(G, backend, rtol=rtol) @ R
    torch.testing.assert_close(lhs, rhs, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ one function per backend


def test_polar_is_the_backends_own_function():
    """polar(G, backend, **options) runs the backend's function with the same options: the same code, so bitwise."""
    G = ill(12, 20, kappa=1e3).float()
    gen = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    cases = [
        (polar_via_svd, "svd", dict(rtol=1e-3, dtype=torch.float32)),
        (polar_via_gram_eigh, "gram-eigh", dict(clamp_eps=1e-4)),
        (polar_via_newton_schulz, "newton-schulz", dict(ns_coefficients="muon", ns_steps=4)),
        (polar_via_polar_express, "polar-express", dict(pe_lower=1e-3)),
    ]
    for fn, backend, options in cases:
        assert POLAR_BACKENDS[backend] is fn
        assert torch.equal(polar(G, backend, **options), fn(G, **options)), backend
    assert torch.equal(polar(G, "rsvd", rank=3, generator=gen()), polar_via_rsvd(G, rank=3, generator=gen()))
    assert torch.equal(polar(G, "auto", rtol=1e-3), polar_via_gram_eigh(G, rtol=1e-3))  # fp32 on CPU
    assert torch.equal(polar(G.double(), "auto"), polar_via_svd(G.double()))  # fp64 on CPU


def test_each_backend_takes_only_its_own_options():
    assert backend_options("svd") == ("rtol", "clamp_eps", "dtype", "nonfinite")
    assert backend_options("gram-eigh") == ("rtol", "clamp_eps", "dtype", "nonfinite")
    assert backend_options("newton-schulz") == ("ns_coefficients", "ns_steps", "ns_polish", "dtype", "nonfinite")
    assert backend_options("rsvd") == ("rank", "power_iters", "generator", "rtol", "clamp_eps", "dtype", "nonfinite")
    assert backend_options("polar-express") == ("pe_lower", "rtol", "dtype", "nonfinite")
    assert backend_options("auto") == ("rtol", "clamp_eps", "dtype", "nonfinite")


@pytest.mark.parametrize(
    "backend,options,name",
    [
        ("svd", dict(rank=4), "rank"),
        ("gram-eigh", dict(pe_lower=1e-3), "pe_lower"),
        ("newton-schulz", dict(clamp_eps=1e-6), "clamp_eps"),
        ("newton-schulz", dict(rtol=1e-3), "rtol"),
        ("polar-express", dict(clamp_eps=1e-6), "clamp_eps"),
        ("rsvd", dict(ns_steps=3), "ns_steps"),
        ("auto", dict(rank=4), "rank"),
        ("svd", dict(method="svd"), "method"),  # the pre-release alias of backend is gone
        ("svd", dict(eps=1e-6), "eps"),  # the clamp is clamp_eps now
    ],
)
def test_an_option_the_backend_does_not_take_is_a_config_error(backend, options, name):
    with pytest.raises(ConfigError, match=rf"^{name} = .*: not an option of backend '{backend}'; its options: "
                       + ", ".join(backend_options(backend))):
        polar(torch.randn(3, 4), backend, **options)


def test_auto_takes_clamp_eps_none_as_not_given():
    G = torch.randn(5, 7, generator=torch.Generator().manual_seed(2))
    assert torch.equal(polar(G, "auto", clamp_eps=None), polar(G))


# ------------------------------------------------------------------------------------------- polar_many


def _mixed() -> list[torch.Tensor]:
    """Matrices whose Grams are 40 × 40 in five shapes (a stack among them), one with a 12 × 12 Gram, one fp64 (auto:
    svd), one bf16: ill-conditioned (κ = 1e6) fp32 except the last two."""
    shapes = [(40, 70), (70, 40), (40, 40), (64, 40), (40, 300)]
    mats = [ill(m, n, seed=i).float() for i, (m, n) in enumerate(shapes)]
    mats.append(torch.stack([ill(40, 90, seed=10 + k) for k in range(3)]).float())  # (3, 40, 90)
    mats.append(ill(12, 30, seed=20).float())
    mats.append(ill(40, 50, seed=21))  # fp64
    mats.append(ill(40, 50, kappa=1e2, seed=22).bfloat16())
    return mats


@pytest.mark.parametrize("backend", ["auto", "gram-eigh"])
def test_polar_many_is_each_matrixs_svd_polar_factor(backend):
    mats = _mixed()
    out = polar_many(mats, backend)
    assert [(o.shape, o.dtype) for o in out] == [(G.shape, G.dtype) for G in mats]
    for G, O in zip(mats[:-2], out[:-2], strict=True):  # each cut at its own default rtol (its own long side)
        assert rel_err(O, reference(G)) < 1e-6
    assert rel_err(out[-2], reference(mats[-2])) < (1e-10 if backend == "auto" else 1e-5)
    assert rel_err(out[-1], reference(mats[-1].float())) < 1e-2  # returned in bf16


def test_polar_many_cuts_each_matrix_at_its_own_rtol():
    """One batch, two default cutoffs: 50·ε32 and 400·ε32; a singular value at 100·ε32·s_max lies between them."""
    s = torch.tensor([1.0, 0.5, 100 * torch.finfo(torch.float32).eps, 0.1])
    A, B = with_spectrum(4, 50, s, seed=1).float(), with_spectrum(4, 400, s, seed=2).float()
    out = polar_many([A, B])
    assert torch.linalg.matrix_rank(reference(A)) == 4 and torch.linalg.matrix_rank(reference(B)) == 3
    assert rel_err(out[0], reference(A)) < 1e-5 and rel_err(out[1], reference(B)) < 1e-5


def test_polar_many_clamp_is_the_papers_formula():
    mats = [ill(m, n, kappa=1e8, seed=k).float() for k, (m, n) in enumerate([(20, 30), (30, 20), (20, 20)])]
    for G, O in zip(mats, polar_many(mats, clamp_eps=1e-4), strict=True):  # not rescaled: absolute clamp
        U, s, Vh = torch.linalg.svd(G.double(), full_matrices=False)
        assert rel_err(O, (U * (s / s.clamp_min(1e-4))) @ Vh) < 1e-6


def test_polar_many_decomposes_equal_size_grams_in_one_eigh(monkeypatch):
    calls = []
    eigh = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda A, *a, **k: calls.append(tuple(A.shape)) or eigh(A, *a, **k))
    polar_many(_mixed()[:-2])  # the fp32 ones: 5 + 3 Grams of 40 × 40, one of 12 × 12
    assert sorted(calls) == [(8, 40, 40), (12, 12)]
    calls.clear()
    polar_many(_mixed()[:-2], "svd")  # another backend: one polar call per matrix, no eigh
    assert calls == []


def test_polar_many_other_backends_and_empty_inputs():
    mats = [torch.randn(m, n, generator=torch.Generator().manual_seed(m)) for m, n in [(20, 30), (30, 20)]]
    for G, O in zip(mats, polar_many(mats, "newton-schulz"), strict=True):
        assert rel_err(O, reference(G)) < 1e-5
    assert polar_many([]) == []
    G = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    empty, O = polar_many([torch.zeros(0, 5), G, torch.zeros(3, 5)])[:2]
    assert empty.shape == (0, 5) and rel_err(O, reference(G)) < 1e-6


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_polar_many_nonfinite(bad):
    mats = [torch.randn(6, 9, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    mats[1][2, 3] = bad
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        polar_many(mats)
    out = polar_many(mats, nonfinite="propagate")
    assert bool(torch.isnan(out[1]).all())
    assert all(rel_err(out[k], reference(mats[k])) < 1e-6 for k in (0, 2))

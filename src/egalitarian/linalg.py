"""The polar factor ``U Vᵀ`` of a gradient matrix: the whitening at the heart of EGD.

For ``G = U S Vᵀ`` (thin SVD), Egalitarian Gradient Descent (Saheb Pasand & Dohmatob, ICLR 2026,
arXiv 2510.04930, eq. 11-12) replaces ``G`` by

    G̃ = (G Gᵀ)^(-1/2) G = U Vᵀ,

which keeps the singular vectors of ``G`` and sets every singular value to 1.  This module computes it with
interchangeable backends.  Everything here is a pure function of its inputs: no state, no in-place change of
``G``, batched over any leading dimensions ``(..., m, n)``.

Spectral weights
----------------
Every backend returns ``U diag(w) Vᵀ`` where ``w_i`` depends on the singular value ``s_i``:

* **cutoff** (default): ``w_i = 1`` if ``s_i > rtol · s_max`` else ``0``.  Real gradients are rank-deficient
  (one-hot inputs give rank ≤ 2p-2, softmax-CE removes the all-ones class direction), and their numerically
  zero directions (~1e-8 · s_max in fp32) must be *dropped*, not blown up to 1 (that would whiten round-off
  noise).  The default ``rtol = max(m, n) · ε`` with ε the machine epsilon of the input dtype (fp16/bf16
  counted as fp32), the same rule as ``numpy.linalg.matrix_rank`` and ``torch.linalg.pinv``.  This is the
  Moore-Penrose pseudo-inverse of the paper's Remark 2.
* **clamp** (``clamp_eps=...``; ``svd``, ``gram-eigh``, ``rsvd``): ``w_i = s_i / max(s_i, clamp_eps)``, i.e.
  ``(U · 1/max(s, clamp_eps)) (Uᵀ G)`` exactly as the official code computes it (its ``eps`` = 1e-6 in its
  modular/parity/MNIST runs, 1e-9 in the transformer).  Use it to reproduce the paper's runs bit for bit in
  spirit; directions with ``s < clamp_eps`` are scaled by ``s/clamp_eps`` instead of being dropped.

A zero matrix gives zeros in both modes (never NaN).

Backends (``backend=``)
-----------------------
One function per backend, each taking only its own knobs (``polar_via_svd``, ``polar_via_gram_eigh``,
``polar_via_newton_schulz``, ``polar_via_rsvd``, ``polar_via_polar_express``; :data:`POLAR_BACKENDS`), and
:func:`polar` ``(G, backend="auto", **options)``, which picks one and passes the options on: an option the
backend does not take is a ConfigError naming it and listing the backend's options (:func:`check_options`).
:func:`polar_many` ``(Gs, backend, **options)`` is ``polar`` of each matrix of a list, with the exact Gram route's
eigendecompositions of equal-size Grams (whatever the matrices' shapes) in one batched call.

``"svd"``           thin SVD, ``U diag(w) Vᵀ``: the exact reference.  Computed in **float64** by default: an
                    fp32 SVD of an ill-conditioned matrix (κ = 1e6) gets the small singular directions wrong
                    by ~1e-3 (their vectors are only determined up to ε32·s_max/gap).  ``dtype=torch.float32``
                    gives the official code's fp32 SVD.
``"gram-eigh"``     eigendecomposition of the smaller Gram matrix (``G Gᵀ`` if m ≤ n else ``Gᵀ G``),
                    ``Q diag(w/s) Qᵀ G``.  Accumulated in **float64** by default: squaring the condition
                    number is then harmless for fp32 inputs (σ resolved down to ~sqrt(n·ε64) ≈ 3e-7 · s_max).
                    ``dtype=torch.float32`` loses accuracy past condition number ~1e3.  Speeds of every
                    backend and dtype: measured, experiments/02-whitening-backends.
``"newton-schulz"`` matmul-only iteration on ``X = G/‖G‖_F``.  ``ns_coefficients="muon"``: Muon's 5 quintic
                    steps ``(a, b, c) = (3.4445, -4.7750, 2.0315)``, ``X ← aX + b(XXᵀ)X + c(XXᵀ)²X``.  1 is not a
                    fixed point (f(1) = a + b + c = 0.701), so the singular values end near 1 but not at 1:
                    **not** ``U Vᵀ`` (their measured spread: experiments/02-whitening-backends).
                    ``ns_coefficients="polar"`` (default) follows those 5 steps with ``ns_polish`` steps of the
                    convergent quintic ``(15/8, -10/8, 3/8)`` (the Newton-Schulz/Padé iteration of order 5 for
                    the matrix sign), which converges to ``U Vᵀ`` for every direction that the first steps lift
                    above ~0.1; directions with s/s_max ≲ 1e-4 stay small (approximately dropped).
``"rsvd"``          randomized rank-r polar, the paper's App. C / Alg. 3: a Gaussian sketch ``Ω`` (n × r) drawn
                    from ``generator``, ``power_iters`` rounds of ``Q ← qr(GQ), Q ← qr(GᵀQ)``, then
                    ``Û, Ŝ = svd(GQ)`` and ``Û diag(w/Ŝ) Ûᵀ G ≈ U_r V_rᵀ``.  **The gradient outside the
                    top-r subspace is dropped**, as in the paper's code: it is a different method, not an
                    approximation of full EGD.
``"polar-express"`` matmul-only, GPU-ready: the Polar Express iteration (Amsel, Persson, Musco & Gower 2025,
                    arXiv 2505.16932), a composition of odd quintics ``p_k(x) = a_k x + b_k x³ + c_k x⁵``, each
                    the minimax approximation of 1 on the interval ``[l_k, u_k]`` that the previous steps
                    guarantee (their greedy construction, with their cushion 0.024 and safety factor 1.01),
                    so it converges on ``[l, 1]`` for a chosen lower bound ``l`` in far fewer steps than
                    Newton-Schulz (10 steps at l = 1e-5 against ~21 for the convergent quintic).  No separate
                    polish: once ``[l_k, u_k]`` is narrow, its minimax quintic *is* (numerically) the
                    convergent quintic ``(15/8, -10/8, 3/8)`` rescaled, so the last steps are that.  A **soft**
                    cutoff, see "Polar Express" below.  Computed in the input's precision (fp16/bf16 in fp32;
                    ``dtype=`` fp32 or fp64 only), TF32 disabled for its matmuls on CUDA, no host sync.
                    No ``clamp_eps`` (the paper's clamp), as ``newton-schulz``.
``"auto"``          per device.  **CPU**: the fastest backend that keeps the *exact* contract (relative
                    Frobenius error ≤ 1e-5 against an fp64 SVD on the kept subspace, hard cutoff at
                    ``rtol``): ``gram-eigh`` (fp64 accumulation) for fp32/fp16/bf16 inputs, ``svd`` for fp64
                    inputs (the fp64 Gram cannot resolve an fp64 input's whole range).  **Any other device**
                    (CUDA; also MPS/XPU): ``polar-express`` (soft cutoff; singular values in [l, 1]·t to within
                    ``PE_TOL``), because small batched ``eigh``/``svd`` calls are latency-bound there and a
                    batched matmul iteration is not; except that with ``clamp_eps=`` (the clamp, which
                    ``polar-express`` cannot do) it keeps the exact CPU choice on every device.  Its options
                    are those every backend it may pick takes: ``rtol``, ``clamp_eps``, ``dtype``,
                    ``nonfinite`` (:data:`AUTO_OPTIONS`).

Scale: with the cutoff (the default) every backend first divides ``G`` by ``max|G|``, which leaves ``U Vᵀ``
unchanged and keeps gradients as large as 1e30 or as small as 1e-30 (fp32) free of overflow and underflow.

Polar Express: what it computes
-------------------------------
``X = G / t`` with ``t = ‖(G Gᵀ)²‖_F^{1/4} = (Σ s_i⁸)^{1/8}`` (the Schatten-8 norm, for ``G`` first scaled by
``1/‖G‖_F`` so that no power overflows).  ``t ≥ s_max`` always (``Σ s⁸ ≥ s_max⁸``) and ``t ≤ r^{1/8} s_max``
for rank r, so ``s_max/t ∈ [r^{-1/8}, 1]`` (``r^{1/8}`` = 1.8 at r = 128, 2.4 at r = 1024, against
``r^{1/2}`` = 11 and 32 for the Frobenius norm).  It costs no matmul beyond the first step's ``A = X Xᵀ`` and
``A²``, and no host sync.
Then ``X ← a_k X + (b_k A + c_k A²) X`` with ``A = X Xᵀ`` on the smaller side, for the fixed schedule of
:func:`polar_express_schedule` (its length is decided from Python floats, never from tensor values).  The
output is ``U diag(f(s/t)) Vᵀ`` with ``f = p_N ∘ … ∘ p_1`` (up to round-off), where, in exact arithmetic:

* ``|f(x) − 1| ≤ PE_TOL[dtype]`` (1e-6 fp32, 1e-12 fp64) for ``x ∈ [l, 1.01]`` (1.01: the safety factor, which
  also absorbs a normalizer that round-off left up to 1 % below ``s_max``);
* on ``[0, l]``, ``f`` increases monotonically from ``f(0) = 0`` to ``f(l) ≥ 1 − PE_TOL``, with
  ``f(x) ≤ x · Π a_k``; ``Π a_k`` (the slope at 0) is about 3–8 / l (3.0e5 at l = 1e-5).  Typical profile:
  ``f ≈ 1/2`` at x ≈ 0.1–0.2 l, ``f ≈ 0.03–0.05`` at 0.01 l, ``0.003–0.005`` at 0.001 l.

So this is a **soft** cutoff.  Its lower bound ``l`` (``pe_lower=``) defaults to
``max(rtol · k^{-1/8}, PE_LOWER_FLOOR)``, ``k = min(m, n)``: every direction the exact backends keep
(``s > rtol · s_max``, hence ``s/t > rtol · k^{-1/8}``) converges to 1; below, the weight falls to 0 over about
two decades instead of a step (and directions down to ``l · t ≥ rtol · k^{-1/8} · s_max``, which the exact
backends may drop, are kept).  The floor (1e-7: every decade lower costs ~1.1 step; also the resolution
``sqrt(k·ε64)`` of the CPU default's fp64 Gram) binds for fp64 inputs, whose ``rtol`` is ~1e-13: there
directions between ~1e-9·t and 1e-7·t are only partly kept, unlike with ``svd``.

Rank-deficient input: its null directions are not null after rounding (singular values ~ε·s_max), and they
get weight ≈ 5 ε s_max / (l t) instead of 0.  fp32 with the default ``l``: ≲ 5 k^{1/8} / max(m, n) (measured,
rank 5: 0.03 at 40×64, 0.007 at 128×300; the exact backends give 0); fp64 with the floor ``l = 1e-7``: ~1e-8.
The weight scales like 1/l: fp32 ``pe_lower=1e-4`` gives 0.002, ``1e-3`` 1.3e-4, at the price of not
converging the directions below ``l · t``.

Accuracy (``tests/test_polar_express.py``, relative Frobenius error against the fp64 SVD polar factor of the
same input, log-spaced spectra κ ≤ 1e3): fp64 ≤ 5e-13, fp32 ≤ 7e-6 (fp32 ``svd``: ≤ 1.5e-5).  Steps at the
default tolerances (fp32 / fp64): 7 / 8 at l = 1e-3, 9 / 10 at 1e-4, 10 / 11 at 1e-5, 12 / 13 at 1e-6, 14 / 14
at 1e-7; each costs three matmuls (``X Xᵀ``, ``A²``, ``B X``).

Non-finite input: ``nonfinite="raise"`` (default) raises ``FloatingPointError`` naming the problem;
``"propagate"`` never raises for it and skips the check's device sync (on CUDA): every matrix of the batch that
holds a NaN or an inf comes out **all NaN** (same shape and dtype), on every backend, and the other matrices of
the batch are computed as usual.  (LAPACK's SVD and eigh refuse non-finite input, so such a matrix is replaced
by zeros for the decomposition and its output is then filled with NaN.)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .errors import ConfigError, check

__all__ = [
    "AUTO_OPTIONS",
    "BACKENDS",
    "NS_MUON",
    "NS_POLISH",
    "PE_CUSHION",
    "PE_LOWER_FLOOR",
    "PE_LOWER_MIN",
    "PE_SAFETY",
    "PE_TOL",
    "POLAR_BACKENDS",
    "PolarExpressStep",
    "backend_options",
    "check_options",
    "default_rtol",
    "gram_inverse_root",
    "pe_default_lower",
    "polar",
    "polar_express_schedule",
    "polar_many",
    "polar_via_gram_eigh",
    "polar_via_newton_schulz",
    "polar_via_polar_express",
    "polar_via_rsvd",
    "polar_via_svd",
    "resolve_backend",
    "schatten8_norm",
]

BACKENDS = ("auto", "svd", "gram-eigh", "newton-schulz", "rsvd", "polar-express")
"""The names :func:`polar` takes as ``backend`` (``"auto"`` picks one by device and dtype: module docstring)."""


NS_MUON = (3.4445, -4.7750, 2.0315)
"""Muon's quintic Newton-Schulz coefficients (Jordan et al. 2024); fast, but not convergent to 1."""

NS_POLISH = (15 / 8, -10 / 8, 3 / 8)
"""Convergent quintic: f(s) = (15 s - 10 s³ + 3 s⁵)/8 has f(1) = 1, f'(1) = f''(1) = 0 (third-order)."""

_HALF = (torch.float16, torch.bfloat16)

PE_TOL = {torch.float32: 1e-6, torch.float64: 1e-12}
"""Polar Express target per compute dtype: the schedule is long enough that ``max |f(x) − 1|`` on [l, 1] ≤ this in
exact arithmetic (fp32: ~8 ε32, below its round-off; fp64: costs at most one step more than 1e-6, because the
last steps converge at third order)."""

PE_LOWER_FLOOR = 1e-7
"""Smallest default lower bound ``l`` of ``polar-express`` (see the module docstring)."""

PE_LOWER_MIN = 1e-12
"""Smallest ``pe_lower`` accepted (24 steps; every decade below 1e-2 costs ~1.1 step)."""

PE_SAFETY = 1.01
"""Polar Express safety factor: every step but the last is ``p(x / 1.01)``, so inputs up to 1.01 · u_k are safe."""

PE_CUSHION = 0.02407327424182761
"""Polar Express cushion (the value of Amsel et al. 2025 and their reference implementation): a step whose lower
bound l_k is below 0.024 · u_k uses the minimax quintic of [0.024 u_k, u_k], rescaled so that p(l_k) + p(u_k) = 2
(keeps the first steps' slopes ≤ 8.3 and their coefficients moderate)."""

_PE_MAX_STEPS = 64


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype that represents the input's precision: fp16/bf16 are computed (and judged) as fp32."""
    return torch.float32 if dtype in _HALF else dtype


def default_rtol(shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> float:
    """``max(m, n) · ε(dtype)``, the numpy/LAPACK rank tolerance; fp16/bf16 use fp32's ε."""
    return max(shape[-2], shape[-1]) * torch.finfo(_work_dtype(dtype)).eps


def resolve_backend(backend: str, G: Tensor, clamp_eps: float | None = None) -> str:
    """The concrete backend ``polar`` would use for ``G`` (resolves ``"auto"``; ``clamp_eps`` as passed to it).

    ``"auto"``: on CPU, or with the paper's clamp (``clamp_eps`` given) on any device, the exact backend: ``svd``
    for fp64 ``G``, else ``gram-eigh``.  On any other device (CUDA, ...): ``polar-express``.
    """
    check(backend in BACKENDS, "backend", backend, f"must be one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return str(backend)
    if G.device.type != "cpu" and clamp_eps is None:
        return "polar-express"
    return "svd" if G.dtype == torch.float64 else "gram-eigh"


def _weights(s: Tensor, smax: Tensor, rtol: float | Tensor, clamp_eps: float | None) -> Tensor:
    """Spectral weights w(s): cutoff (default) or the paper's clamp (see module docstring); ``rtol`` a number, or
    one per matrix (``(..., 1)``)."""
    if clamp_eps is not None:
        return s / s.clamp_min(clamp_eps)
    return (s > rtol * smax).to(s.dtype)


def _svd(G: Tensor, rtol: float, clamp_eps: float | None) -> Tensor:
    U, s, Vh = torch.linalg.svd(G, full_matrices=False)
    w = _weights(s, s[..., :1], rtol, clamp_eps)
    return (U * w.unsqueeze(-2)) @ Vh


def _gram_eigh(G: Tensor, rtol: float, clamp_eps: float | None) -> Tensor:
    m, n = G.shape[-2:]
    left = m <= n
    Gt = G.mT
    A = G @ Gt if left else Gt @ G
    P, _ = gram_inverse_root(A, max(m, n), rtol, clamp_eps)
    return P @ G if left else G @ P


def gram_inverse_root(A: Tensor, long_side: int, rtol: float, clamp_eps: float | None) -> tuple[Tensor, Tensor]:
    """``P = Q diag(w/s) Qᵀ`` from the Gram matrix ``A = Q diag(s²) Qᵀ`` of a matrix ``G`` whose longer side is
    ``long_side`` (``(..., k, k)``), and the spectral weights ``w``: ``G P`` (``A = GᵀG``) or ``P G`` (``A = G Gᵀ``) is
    ``U diag(w) Vᵀ`` (the ``"gram-eigh"`` backend).  ``egalitarian.distributed`` sums a row-sharded ``G``'s
    Gram over its shards and calls this once per matrix."""
    return _inverse_root(A, _gram_cut(long_side, rtol, A.dtype), clamp_eps)


def _gram_cut(long_side: int, rtol: float, dtype: torch.dtype) -> float:
    """The cutoff of the Gram route: ``rtol``, but not below ``sqrt(long_side·ε)``, the smallest ``s/s_max`` a Gram
    matrix in ``dtype`` resolves (below it, its eigenvalues are round-off)."""
    return max(rtol, math.sqrt(long_side * torch.finfo(dtype).eps))


def _inverse_root(A: Tensor, cut: float | Tensor, clamp_eps: float | None) -> tuple[Tensor, Tensor]:
    """:func:`gram_inverse_root` with the cutoff ``cut`` already floored (:func:`_gram_cut`): a number, or one per
    matrix of the batch ``A`` (``(..., 1)``)."""
    lam, Q = torch.linalg.eigh(A)  # ascending
    lam = lam.clamp_min(0)
    s = lam.sqrt()
    smax = s[..., -1:]
    w = _weights(s, smax, cut, clamp_eps)
    inv = torch.where(s > 0, w / s.clamp_min(torch.finfo(A.dtype).tiny), torch.zeros_like(s))
    return (Q * inv.unsqueeze(-2)) @ Q.mT, w  # Q diag(w/s) Qᵀ


def _newton_schulz(G: Tensor, coefficients: str, steps: int, polish: int) -> Tensor:
    m, n = G.shape[-2:]
    X = G.mT if m > n else G  # iterate on the wide orientation: X Xᵀ is the smaller Gram
    norm = torch.linalg.matrix_norm(X, keepdim=True)
    X = X / norm.clamp_min(torch.finfo(X.dtype).tiny)
    schedule = [NS_MUON] * steps + ([NS_POLISH] * polish if coefficients == "polar" else [])
    for a, b, c in schedule:
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.mT if m > n else X


class PolarExpressStep(NamedTuple):
    """One step ``p(x) = a x + b x³ + c x⁵`` of a Polar Express schedule and the intervals it is built for.

    ``p`` maps ``[lower, upper]`` (and, for every step but the last, ``[lower, PE_SAFETY · upper]``) into
    ``[image_lower, image_upper]``, which is the next step's ``[lower, upper]``; ``image_upper = 2 − image_lower``.
    """

    a: float
    b: float
    c: float
    lower: float
    upper: float
    image_lower: float
    image_upper: float

    def __call__(self, x: float) -> float:
        return self.a * x + self.b * x**3 + self.c * x**5


def _minimax_quintic(lo: float, hi: float) -> tuple[float, float, float]:
    """The odd quintic ``a x + b x³ + c x⁵`` minimizing ``max |p(x) − 1|`` on ``[lo, hi]`` (0 < lo ≤ hi).

    Remez exchange: the optimum equioscillates, ``p − 1 = −E, +E, −E, +E`` at ``lo < q < r < hi`` with ``q, r``
    the critical points of ``p`` (as in Amsel et al. 2025).  Solve the 4×4 linear system for ``(a, b, c, E)``,
    move ``q, r`` to the new critical points, repeat until ``E`` is stationary (a handful of rounds).
    """
    if lo / hi >= 1 - 1e-5:
        # An interval this narrow makes the 4×4 system singular to working precision; use the convergent quintic
        # f(x/hi) re-centred so that p(lo) + p(hi) = 2: max |p − 1| = (1 − f(lo/hi))/(1 + f(lo/hi)) ≈ 1.3e-15 at
        # most (the minimax one: 1e-16), i.e. either is exact in float64.
        a, b, c = NS_POLISH[0] / hi, NS_POLISH[1] / hi**3, NS_POLISH[2] / hi**5
        scale = 2 / (a * lo + b * lo**3 + c * lo**5 + 1)
        return a * scale, b * scale, c * scale
    q, r = (3 * lo + hi) / 4, (lo + 3 * hi) / 4
    err = math.inf
    for _ in range(200):
        nodes = ((lo, 1.0), (q, -1.0), (r, 1.0), (hi, -1.0))
        M = np.array([[x, x**3, x**5, sign] for x, sign in nodes])
        a, b, c, e = (float(v) for v in np.linalg.solve(M, np.ones(4)))
        root = math.sqrt(9 * b * b - 20 * a * c)  # p'(x) = a + 3b x² + 5c x⁴ = 0
        q, r = math.sqrt((-3 * b - root) / (10 * c)), math.sqrt((-3 * b + root) / (10 * c))
        if abs(e - err) <= 1e-15:
            return a, b, c
        err = e
    raise RuntimeError(f"minimax quintic on [{lo}, {hi}] did not converge")  # pragma: no cover


@functools.lru_cache(maxsize=256)
def polar_express_schedule(lower: float, tol: float) -> tuple[PolarExpressStep, ...]:
    """The greedy Polar Express schedule (Amsel et al. 2025) for singular values in ``[lower, 1]``.

    Steps are added until the composition maps ``[lower, 1]`` into ``[1 − tol, 1 + tol]``; step k is the minimax
    quintic of ``[l_k, u_k]`` (with the cushion ``PE_CUSHION``), then, except on the last step, evaluated at
    ``x / PE_SAFETY``; ``l_{k+1} = p_k(l_k)``, ``u_{k+1} = 2 − l_{k+1}``.  Float64 Python, cached per
    ``(lower, tol)``: the length of the schedule is fixed before any tensor is touched.
    """
    check(PE_LOWER_MIN <= lower < 1, "pe_lower", lower, f"must be in [{PE_LOWER_MIN:g}, 1)")
    check(0 < tol < 1, "tol", tol, "must be in (0, 1)")
    lo, hi = float(lower), 1.0
    steps: list[PolarExpressStep] = []
    for _ in range(_PE_MAX_STEPS):
        a, b, c = _minimax_quintic(max(lo, PE_CUSHION * hi), hi)
        if PE_CUSHION * hi > lo:  # cushioned: re-centre on [lo, hi], i.e. p(lo) + p(hi) = 2
            scale = 2 / (a * (lo + hi) + b * (lo**3 + hi**3) + c * (lo**5 + hi**5))
            a, b, c = a * scale, b * scale, c * scale
        last = 1 - (a * lo + b * lo**3 + c * lo**5) <= tol
        if not last:
            a, b, c = a / PE_SAFETY, b / PE_SAFETY**3, c / PE_SAFETY**5
        image = a * lo + b * lo**3 + c * lo**5
        steps.append(PolarExpressStep(a, b, c, lo, hi, image, 2 - image))
        if last:
            return tuple(steps)
        lo, hi = image, 2 - image
    raise RuntimeError(f"polar_express_schedule({lower}, {tol}) needs > {_PE_MAX_STEPS} steps")  # pragma: no cover


def pe_default_lower(shape: torch.Size | tuple[int, ...], rtol: float) -> float:
    """Default ``pe_lower``: ``max(rtol · k^{-1/8}, PE_LOWER_FLOOR)``, ``k = min(m, n)``.

    ``s > rtol · s_max`` (kept by the exact backends) implies ``s / t > rtol · k^{-1/8}`` for the Schatten-8
    normalizer ``t ≤ k^{1/8} s_max``, so every direction the exact backends keep lies in ``[l, 1]``.
    """
    k = min(shape[-2], shape[-1])
    return max(rtol * k ** (-1 / 8), PE_LOWER_FLOOR)  # < 1 since rtol < 1


@contextlib.contextmanager
def _ieee_fp32_matmul(device: torch.device) -> Iterator[None]:
    """Full-precision fp32 matmuls on CUDA (no TF32, whose 10-bit mantissa would cap the accuracy at ~1e-3).

    Sets the flag for the duration of the block and restores it; torch ≥ 2.9 uses the ``fp32_precision`` API
    (mixing it with the legacy ``allow_tf32`` is an error there), older torch ``allow_tf32``.  No-op off CUDA.
    """
    if device.type != "cuda":
        yield
        return
    mm = torch.backends.cuda.matmul
    try:
        name, prev, value = "fp32_precision", mm.fp32_precision, "ieee"
    except AttributeError:  # torch < 2.9
        name, prev, value = "allow_tf32", mm.allow_tf32, False
    setattr(mm, name, value)
    try:
        yield
    finally:
        setattr(mm, name, prev)


def _schatten8_scaled(X: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(X/t, A, A², t)`` for ``X`` (..., m, n), m ≤ n, ``t = ‖X‖_S8 = (Σ s⁸)^{1/8}``, ``A = (X/t)(X/t)ᵀ``.

    ``X`` is first divided by ``‖X‖_F`` (then s ≤ 1, so ``A² = (X Xᵀ)²`` cannot overflow, and s_max ≥ k^{-1/2}
    keeps ``s_max⁸`` far from underflow); ``‖A²‖_F = (Σ s⁸)^{1/2}`` gives ``t`` from one Gram and one product,
    both reused by the first Polar Express step.  A zero matrix gives zeros and ``t = 0``-ish (clamped to tiny).
    """
    tiny = torch.finfo(X.dtype).tiny
    fro = torch.linalg.matrix_norm(X, keepdim=True).clamp_min(tiny)
    X = X / fro
    A = X @ X.mT
    A2 = A @ A
    t4 = torch.linalg.matrix_norm(A2, keepdim=True).clamp_min(tiny)  # (Σ s⁸)^{1/2} = t⁴ ≥ s_max⁴
    t2 = t4.sqrt()
    t = t2.sqrt()
    return X / t, A / t2, A2 / t4, fro * t


def schatten8_norm(G: Tensor) -> Tensor:
    """``‖G‖_S8 = (Σ s_i⁸)^{1/8}`` per matrix (shape ``G.shape[:-2]``): the ``polar-express`` normalizer.

    ``s_max ≤ ‖G‖_S8 ≤ r^{1/8} s_max`` for rank r (against ``r^{1/2}`` for the Frobenius norm), from matmuls and
    norms only.  Computed in ``G``'s dtype; round-off can leave it ~k·ε below ``s_max``, which the Polar Express
    safety factor (inputs up to 1.01) absorbs.
    """
    X = G.mT if G.shape[-2] > G.shape[-1] else G
    with _ieee_fp32_matmul(X.device):
        return _schatten8_scaled(X)[3][..., 0, 0]


def _assume_constant_result(fn: Callable) -> Callable:
    """``torch.compiler.assume_constant_result`` without importing ``torch._dynamo`` (1-2 s, every ``egd`` command
    and ``import egalitarian`` paid it) when nothing has yet: the mark that decorator sets (the same on torch 2.7 to
    2.13; ``test_step_compiles_in_one_graph`` fails if it stops working), else the decorator itself."""
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


@_assume_constant_result
def _pe_coefficients(lower: float, tol: float) -> tuple[tuple[float, float, float], ...]:
    """The schedule's ``(a, b, c)`` per step.  Under ``torch.compile`` this runs once, eagerly, and its result is
    a constant of the graph (the Remez solver in NumPy cannot be traced, and need not be)."""
    return tuple((s.a, s.b, s.c) for s in polar_express_schedule(lower, tol))


def _polar_express(G: Tensor, lower: float, tol: float) -> Tensor:
    m, n = G.shape[-2:]
    X = G.mT if m > n else G  # iterate on the wide orientation: A = X Xᵀ is the smaller Gram
    schedule = _pe_coefficients(lower, tol)
    with _ieee_fp32_matmul(X.device):
        X, A, A2, _ = _schatten8_scaled(X)
        for k, (a, b, c) in enumerate(schedule):
            if k:
                A = X @ X.mT
                A2 = A @ A
            X = a * X + (b * A + c * A2) @ X
    return X.mT if m > n else X


def _rsvd(
    G: Tensor, rank: int, power_iters: int, generator: torch.Generator | None, rtol: float, clamp_eps: float | None
) -> Tensor:
    m, n = G.shape[-2:]
    r = min(rank, m, n)
    omega = torch.randn(*G.shape[:-2], n, r, dtype=G.dtype, device=G.device, generator=generator)
    Q = omega
    for _ in range(power_iters):
        Q = torch.linalg.qr(G @ Q).Q
        Q = torch.linalg.qr(G.mT @ Q).Q
    Uh, sh, _ = torch.linalg.svd(G @ Q, full_matrices=False)
    w = _weights(sh, sh[..., :1], rtol, clamp_eps)
    inv = torch.where(sh > 0, w / sh.clamp_min(torch.finfo(G.dtype).tiny), torch.zeros_like(sh))
    return (Uh * inv.unsqueeze(-2)) @ (Uh.mT @ G)  # Û diag(w/Ŝ) Ûᵀ G


def _check_matrix(G: Tensor) -> None:
    check(isinstance(G, Tensor), "G", type(G).__name__, "must be a torch.Tensor", TypeError)
    check(G.ndim >= 2, "G.shape", tuple(G.shape), "must have at least 2 dimensions (..., m, n)")
    check(G.is_floating_point(), "G.dtype", G.dtype, "must be floating point")


def _checked_rtol(G: Tensor, rtol: float | None, clamp_eps: float | None = None) -> float:
    """Check ``G``, ``rtol`` and ``clamp_eps``; ``rtol``, or its default ``max(m, n) · ε(G.dtype)``."""
    _check_matrix(G)
    check(rtol is None or 0 <= rtol < 1, "rtol", rtol, "must be None or in [0, 1)")
    check(clamp_eps is None or clamp_eps > 0, "clamp_eps", clamp_eps, "must be None or > 0")
    return default_rtol(G.shape, G.dtype) if rtol is None else rtol


def _framed(G: Tensor, nonfinite: str, dtype: torch.dtype, rescale: bool, core: Callable[[Tensor], Tensor]) -> Tensor:
    """What every backend does around its ``core``: the non-finite check, ``G`` cast to the compute ``dtype``
    (divided by ``max|G|`` per matrix when ``rescale``), ``core`` on it, the result cast back to ``G``'s dtype.

    ``nonfinite="raise"``: a NaN or inf in ``G`` is a FloatingPointError.  ``"propagate"``: such a matrix is
    decomposed as zeros (LAPACK refuses NaN/inf) and comes out all NaN.  An empty ``G`` gives an empty copy.
    """
    check(nonfinite in ("raise", "propagate"), "nonfinite", nonfinite, "must be 'raise' or 'propagate'")
    if G.numel() == 0:
        return G.clone()
    X, bad = _prepare(G, nonfinite, dtype, rescale)
    return _restore(core(X), G, bad)


def _prepare(G: Tensor, nonfinite: str, dtype: torch.dtype, rescale: bool) -> tuple[Tensor, Tensor | None]:
    """The first half of :func:`_framed` (``nonfinite`` already checked, ``G`` not empty): ``G`` in the compute
    ``dtype``, rescaled, and the mask of its non-finite matrices (``None`` when there is nothing to mask)."""
    # max|G| per matrix: one reduction serves the finiteness check (it is NaN or inf exactly when G has a NaN
    # or inf) and the rescaling below
    peak = G.abs().amax(dim=(-2, -1), keepdim=True)
    bad: Tensor | None = ~torch.isfinite(peak)  # per matrix: amax propagates NaN, so NaN or inf anywhere in it
    if nonfinite == "raise":
        finite = not bool(bad.any())
        check(finite, "max|G|", float(peak.max()), "must be finite (G has NaN or inf); pass nonfinite='propagate' "
              "to let it through", FloatingPointError)
        bad = None
    elif G.device.type == "cpu" and not torch.compiler.is_compiling() and not bool(bad.any()):
        bad = None  # nothing to mask (on CPU reading the flag is no device sync): the same values, fewer passes
    else:  # decompose zeros instead (LAPACK refuses NaN/inf) and fill those matrices with NaN at the end
        G = torch.where(bad, torch.zeros((), dtype=G.dtype, device=G.device), G)
        peak = torch.where(bad, torch.zeros_like(peak), peak)
    X = G.to(dtype)
    if rescale:
        # U Vᵀ is scale-invariant; dividing by max|G| first keeps 1e-30 or 1e30 gradients clear of under- and
        # overflow in squared quantities (Gram matrices, Frobenius norms).  The paper's clamp uses an absolute
        # clamp_eps, so it is not rescaled.
        peak = peak.to(dtype)
        X = X / torch.where(peak > 0, peak, torch.ones_like(peak))
    return X, bad


def _restore(out: Tensor, G: Tensor, bad: Tensor | None) -> Tensor:
    """The second half of :func:`_framed`: the result in ``G``'s dtype, NaN in the matrices ``bad`` marks."""
    out = out.to(G.dtype)
    return out if bad is None else out.masked_fill(bad, math.nan)


def polar_via_svd(G: Tensor, *, rtol: float | None = None, clamp_eps: float | None = None,
                  dtype: torch.dtype | None = None, nonfinite: str = "raise") -> Tensor:
    """``U diag(w) Vᵀ`` from the thin SVD of ``G``: the exact reference (module docstring, ``"svd"``).

    Args:
        rtol: cutoff, singular values ``s ≤ rtol · s_max`` get weight 0; default ``max(m, n) · ε(input dtype)``.
        clamp_eps: the paper's clamp ``w = s / max(s, clamp_eps)`` instead of the cutoff.
        dtype: compute dtype, default float64 (``torch.float32``: the official code's fp32 SVD).
        nonfinite: ``"raise"`` or ``"propagate"`` (module docstring).
    """
    rtol = _checked_rtol(G, rtol, clamp_eps)
    return _framed(G, nonfinite, dtype or torch.float64, clamp_eps is None, lambda X: _svd(X, rtol, clamp_eps))


def polar_via_gram_eigh(G: Tensor, *, rtol: float | None = None, clamp_eps: float | None = None,
                        dtype: torch.dtype | None = None, nonfinite: str = "raise") -> Tensor:
    """``Q diag(w/s) Qᵀ G`` from the eigendecomposition of the smaller Gram matrix (module docstring,
    ``"gram-eigh"``).  Arguments as :func:`polar_via_svd`; ``dtype`` (default float64) is the Gram's."""
    rtol = _checked_rtol(G, rtol, clamp_eps)
    return _framed(G, nonfinite, dtype or torch.float64, clamp_eps is None, lambda X: _gram_eigh(X, rtol, clamp_eps))


def polar_via_newton_schulz(G: Tensor, *, ns_coefficients: Literal["polar", "muon"] = "polar", ns_steps: int = 5,
                            ns_polish: int = 3, dtype: torch.dtype | None = None, nonfinite: str = "raise") -> Tensor:
    """Matmul-only Newton-Schulz on ``G/‖G‖_F`` (module docstring, ``"newton-schulz"``): ``ns_steps`` of Muon's
    quintic, then (``ns_coefficients="polar"``) ``ns_polish`` steps of the convergent one.  ``dtype``: default
    bfloat16 with ``"muon"`` (like Muon), else the input's (fp16/bf16 in fp32)."""
    _check_matrix(G)
    check(ns_coefficients in ("polar", "muon"), "ns_coefficients", ns_coefficients, "must be 'polar' or 'muon'")
    check(ns_steps >= 0, "ns_steps", ns_steps, "must be >= 0")
    check(ns_polish >= 0, "ns_polish", ns_polish, "must be >= 0")
    if dtype is None:
        dtype = torch.bfloat16 if ns_coefficients == "muon" else _work_dtype(G.dtype)
    return _framed(G, nonfinite, dtype, True, lambda X: _newton_schulz(X, ns_coefficients, ns_steps, ns_polish))


def polar_via_rsvd(G: Tensor, *, rank: int = 64, power_iters: int = 2, generator: torch.Generator | None = None,
                   rtol: float | None = None, clamp_eps: float | None = None, dtype: torch.dtype | None = None,
                   nonfinite: str = "raise") -> Tensor:
    """Randomized rank-``rank`` polar factor (the paper's App. C, module docstring ``"rsvd"``): a Gaussian sketch
    from ``generator``, ``power_iters`` subspace iterations; the gradient outside the top-``rank`` subspace is
    dropped.  ``rtol``, ``clamp_eps`` as :func:`polar_via_svd`; ``dtype``: default the input's (fp16/bf16 in
    fp32)."""
    rtol = _checked_rtol(G, rtol, clamp_eps)
    check(isinstance(rank, int) and rank >= 1, "rank", rank, "must be an integer >= 1")
    check(isinstance(power_iters, int) and power_iters >= 0, "power_iters", power_iters, "must be an integer >= 0")
    return _framed(G, nonfinite, dtype or _work_dtype(G.dtype), clamp_eps is None,
                   lambda X: _rsvd(X, rank, power_iters, generator, rtol, clamp_eps))


def polar_via_polar_express(G: Tensor, *, pe_lower: float | None = None, rtol: float | None = None,
                            dtype: torch.dtype | None = None, nonfinite: str = "raise") -> Tensor:
    """The Polar Express iteration (Amsel et al. 2025; module docstring, ``"polar-express"``): a soft cutoff.

    Args:
        pe_lower: the lower bound ``l`` of the normalized singular values ``s/t`` that must converge to 1 (to
            ``PE_TOL``), in ``[1e-12, 1)``; smaller costs ~1.1 step per decade.  Default
            :func:`pe_default_lower` ``= max(rtol · min(m, n)^{-1/8}, 1e-7)``.
        rtol: only sets the default ``pe_lower`` (default ``max(m, n) · ε(input dtype)``).
        dtype: ``torch.float32`` or ``torch.float64``; default the input's (fp16/bf16 in fp32).
    """
    rtol = _checked_rtol(G, rtol)
    if pe_lower is not None:
        ok = isinstance(pe_lower, (int, float)) and not isinstance(pe_lower, bool) and PE_LOWER_MIN <= pe_lower < 1
        check(ok, "pe_lower", pe_lower, f"must be None or a number in [{PE_LOWER_MIN:g}, 1)")
    allowed = "must be None, torch.float32 or torch.float64 for backend 'polar-express'"
    check(dtype in (None, torch.float32, torch.float64), "dtype", dtype, allowed)
    dtype = dtype or _work_dtype(G.dtype)
    lower = pe_default_lower(G.shape, rtol) if pe_lower is None else float(pe_lower)
    return _framed(G, nonfinite, dtype, True, lambda X: _polar_express(X, lower, PE_TOL[dtype]))


POLAR_BACKENDS: dict[str, Callable[..., Tensor]] = {
    "svd": polar_via_svd,
    "gram-eigh": polar_via_gram_eigh,
    "newton-schulz": polar_via_newton_schulz,
    "rsvd": polar_via_rsvd,
    "polar-express": polar_via_polar_express,
}
"""The function of each concrete backend (every name of :data:`BACKENDS` but ``"auto"``)."""

AUTO_OPTIONS = ("rtol", "clamp_eps", "dtype", "nonfinite")
"""The options of ``backend="auto"``: those every backend it may pick takes (``clamp_eps`` makes it pick an
exact one, which takes it)."""

_OPTIONS: dict[str, tuple[str, ...]] = {
    "auto": AUTO_OPTIONS,
    **{name: tuple(k for k, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY)
       for name, fn in POLAR_BACKENDS.items()},
}


def backend_options(backend: str) -> tuple[str, ...]:
    """The options :func:`polar` takes for ``backend`` (the keywords of its ``polar_via_*`` function)."""
    check(backend in BACKENDS, "backend", backend, f"must be one of {', '.join(BACKENDS)}")
    return _OPTIONS[backend]


def check_options(backend: str, options: Iterable[str], values: dict[str, object] | None = None) -> None:
    """A ConfigError naming the first of ``options`` (names) that ``backend`` does not take, listing those it
    takes; ``values`` (name → value) puts the value in the message."""
    allowed = backend_options(backend)
    for name in options:
        if name not in allowed:  # the message is built only when it is needed (polar checks at every call)
            check(False, name, (values or {}).get(name), f"not an option of backend {backend!r}; its options: "
                  f"{', '.join(allowed)}", ConfigError)


def polar(G: Tensor, backend: str = "auto", **options: object) -> Tensor:
    """Polar factor ``U Vᵀ`` of ``G`` (shape ``(..., m, n)``), in ``G``'s dtype and on its device.

    ``polar(G, backend, **options)`` is ``POLAR_BACKENDS[backend](G, **options)``, the backend's own function
    with its own knobs (``"auto"`` picks one per device: :func:`resolve_backend`).

    Args:
        G: matrix or batch of matrices, real floating point (fp16/bf16/fp32/fp64).
        backend: ``"auto"``, ``"svd"``, ``"gram-eigh"``, ``"newton-schulz"``, ``"rsvd"`` or ``"polar-express"``
            (module docstring).  ``"auto"`` is exact (hard cutoff) on CPU and ``"polar-express"`` (soft cutoff)
            on other devices unless ``clamp_eps`` is given.
        options: the backend's keywords (:func:`backend_options`):

            * ``svd``, ``gram-eigh``: ``rtol``, ``clamp_eps``, ``dtype``, ``nonfinite``
              (:func:`polar_via_svd`);
            * ``rsvd``: ``rank``, ``power_iters``, ``generator`` and those of ``svd`` (:func:`polar_via_rsvd`);
            * ``newton-schulz``: ``ns_coefficients``, ``ns_steps``, ``ns_polish``, ``dtype``, ``nonfinite``
              (:func:`polar_via_newton_schulz`);
            * ``polar-express``: ``pe_lower``, ``rtol``, ``dtype``, ``nonfinite`` (:func:`polar_via_polar_express`);
            * ``auto``: ``rtol``, ``clamp_eps``, ``dtype``, ``nonfinite``.

            ``rtol``: relative cutoff (``s ≤ rtol · s_max`` dropped), default ``max(m, n) · ε(input dtype)``;
            ``clamp_eps``: the paper's clamp ``w = s / max(s, clamp_eps)`` instead; ``dtype``: compute dtype
            (defaults: fp64 for ``svd`` and ``gram-eigh``, bf16 for Muon's Newton-Schulz, else the input's with
            fp16/bf16 in fp32); ``nonfinite``: ``"raise"`` (default, NaN or inf in ``G`` raises
            ``FloatingPointError``) or ``"propagate"`` (each matrix with a NaN or inf gives an all-NaN matrix).

    Returns:
        ``U diag(w) Vᵀ`` with the same shape, dtype and device as ``G``.

    Raises:
        ConfigError: an option ``backend`` does not take (the message lists those it takes).
        ValueError: bad argument (message names it, its value and what is allowed).
        FloatingPointError: ``G`` has NaN or inf and ``nonfinite="raise"``.
    """
    check_options(backend, options, options)
    if backend == "auto" and "clamp_eps" in options and options["clamp_eps"] is None:
        options = {k: v for k, v in options.items() if k != "clamp_eps"}  # None: not given
    _check_matrix(G)
    name = resolve_backend(backend, G, options.get("clamp_eps"))  # type: ignore[arg-type]
    return POLAR_BACKENDS[name](G, **options)


def polar_many(Gs: Sequence[Tensor], backend: str = "auto", **options: object) -> list[Tensor]:
    """``[polar(G, backend, **options) for G in Gs]``, with the exact Gram route's eigendecompositions batched.

    Where ``backend`` resolves to ``"gram-eigh"`` (``"auto"`` on CPU for inputs below fp64, or with ``clamp_eps``)
    for two or more of ``Gs``, their Grams of equal size ``k × k`` (``k = min(m, n)``: the smaller side, whatever the
    other side and any leading dimensions) and compute dtype go through one batched ``eigh`` call and one batched
    product ``Q diag(w/s) Qᵀ``; each matrix's Gram and final product are its own, as in ``polar``.  On CPU, LAPACK
    decomposes one matrix at a time either way, so what this saves is the per-call work around the decomposition
    (a transformer's same-width matrices of several shapes; bench/gpt_step.py).  Every other matrix is one ``polar``
    call, and so are a Gram size that only one matrix has (the same code as ``polar``, bit for bit) and tensor
    subclasses (DTensors: each one's ``polar`` runs as DTensor operations).

    A batched result equals the ``polar`` call's to rounding, not bit for bit in general (a batched LAPACK or BLAS
    call may take another code path than one call per matrix; on the CPUs measured they agreed bitwise).  Options
    and errors are ``polar``'s; with ``nonfinite="raise"`` the first non-finite matrix raises before any
    decomposition of its Gram size.
    """
    check_options(backend, options, options)
    if backend == "auto" and "clamp_eps" in options and options["clamp_eps"] is None:
        options = {k: v for k, v in options.items() if k != "clamp_eps"}  # None: not given
    out: list[Tensor | None] = [None] * len(Gs)
    groups: dict[tuple[int, torch.dtype, torch.device], list[int]] = {}
    for i, G in enumerate(Gs):
        _check_matrix(G)
        exact = G.numel() and resolve_backend(backend, G, options.get("clamp_eps")) == "gram-eigh"  # type: ignore[arg-type]
        if exact and type(G) is Tensor:  # a subclass (a DTensor, say) may not mix with the plain tensors of a batch
            dtype = options.get("dtype") or torch.float64
            groups.setdefault((min(G.shape[-2:]), dtype, G.device), []).append(i)  # type: ignore[arg-type]
        else:
            out[i] = polar(G, backend, **options)
    for items in groups.values():
        if len(items) == 1:
            out[items[0]] = polar(Gs[items[0]], backend, **options)
            continue
        for i, W in zip(items, _gram_eigh_many([Gs[i] for i in items], **options), strict=True):  # type: ignore[arg-type]
            out[i] = W
    return out  # type: ignore[return-value]


def _gram_eigh_many(Gs: list[Tensor], *, rtol: float | None = None, clamp_eps: float | None = None,
                    dtype: torch.dtype | None = None, nonfinite: str = "raise") -> list[Tensor]:
    """``polar_via_gram_eigh`` of each of ``Gs`` (non-empty, Grams of one size): every step of it per matrix, except
    that the Grams are decomposed, and their factors formed, as one batch."""
    check(nonfinite in ("raise", "propagate"), "nonfinite", nonfinite, "must be 'raise' or 'propagate'")
    dtype = dtype or torch.float64
    prepared, grams, cuts = [], [], []
    for G in Gs:
        cut = _checked_rtol(G, rtol, clamp_eps)
        X, bad = _prepare(G, nonfinite, dtype, clamp_eps is None)
        m, n = X.shape[-2:]
        A = X @ X.mT if m <= n else X.mT @ X
        grams.append(A.reshape(-1, *A.shape[-2:]))
        cuts.append(_gram_cut(max(m, n), cut, dtype))
        prepared.append((G, X, bad))
    A = torch.cat(grams)
    cut = torch.tensor([c for c, g in zip(cuts, grams, strict=True) for _ in range(len(g))], dtype=dtype,
                       device=A.device).unsqueeze(-1)
    P, _ = _inverse_root(A, cut, clamp_eps)
    out, at = [], 0
    for (G, X, bad), g in zip(prepared, grams, strict=True):
        Pi = P[at : at + len(g)].reshape(*X.shape[:-2], *P.shape[-2:])
        at += len(g)
        m, n = X.shape[-2:]
        out.append(_restore(Pi @ X if m <= n else X @ Pi, G, bad))
    return out

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
* **clamp** (``eps=...``): ``w_i = s_i / max(s_i, eps)``, i.e. ``(U · 1/max(s, eps)) (Uᵀ G)`` exactly as
  the official code computes it (eps = 1e-6 in its modular/parity/MNIST runs, 1e-9 in the transformer).
  Use it to reproduce the paper's runs bit for bit in spirit; directions with ``s < eps`` are scaled by
  ``s/eps`` instead of being dropped.

A zero matrix gives zeros in both modes (never NaN).

Backends (``backend=``)
-----------------------
``"svd"``           thin SVD, ``U diag(w) Vᵀ``: the exact reference.  Computed in **float64** by default: an
                    fp32 SVD of an ill-conditioned matrix (κ = 1e6) gets the small singular directions wrong
                    by ~1e-3 (their vectors are only determined up to ε32·s_max/gap).  ``dtype=torch.float32``
                    gives the official code's fp32 SVD.
``"gram-eigh"``     eigendecomposition of the smaller Gram matrix (``G Gᵀ`` if m ≤ n else ``Gᵀ G``),
                    ``Q diag(w/s) Qᵀ G``.  Accumulated in **float64** by default: squaring the condition
                    number is then harmless for fp32 inputs (σ resolved down to ~sqrt(n·ε64) ≈ 3e-7 · s_max).
                    ``dtype=torch.float32`` loses accuracy past condition number ~1e3.  Speeds of every
                    backend and dtype: measured, docs/RESULTS.md §2.
``"newton-schulz"`` matmul-only iteration on ``X = G/‖G‖_F``.  ``ns_coefficients="muon"``: Muon's 5 quintic
                    steps ``(a, b, c) = (3.4445, -4.7750, 2.0315)``, ``X ← aX + b(XXᵀ)X + c(XXᵀ)²X``.  1 is not a
                    fixed point (f(1) = a + b + c = 0.701), so the singular values end near 1 but not at 1:
                    **not** ``U Vᵀ`` (their measured spread: docs/RESULTS.md §2).
                    ``ns_coefficients="polar"`` (default) follows those 5 steps with ``ns_polish`` steps of the
                    convergent quintic ``(15/8, -10/8, 3/8)`` (the Newton-Schulz/Padé iteration of order 5 for
                    the matrix sign), which converges to ``U Vᵀ`` for every direction that the first steps lift
                    above ~0.1; directions with s/s_max ≲ 1e-4 stay small (approximately dropped).
``"rsvd"``          randomized rank-r polar, the paper's App. C / Alg. 3: a Gaussian sketch ``Ω`` (n × r) drawn
                    from ``generator``, ``power_iters`` rounds of ``Q ← qr(GQ), Q ← qr(GᵀQ)``, then
                    ``Û, Ŝ = svd(GQ)`` and ``Û diag(w/Ŝ) Ûᵀ G ≈ U_r V_rᵀ``.  **The gradient outside the
                    top-r subspace is dropped**, as in the paper's code: it is a different method, not an
                    approximation of full EGD.
``"auto"``          picks the fastest backend that keeps the *exact* contract (relative Frobenius error
                    ≤ 1e-5 against an fp64 SVD on the kept subspace): ``gram-eigh`` (fp64 accumulation) for
                    fp32/fp16/bf16 inputs, ``svd`` for fp64 inputs (the fp64 Gram cannot resolve an fp64
                    input's whole range).

``method=`` is the deprecated name of ``backend=`` (kept for one release; it warns).

Scale: with the cutoff (the default) every backend first divides ``G`` by ``max|G|``, which leaves ``U Vᵀ``
unchanged and keeps gradients as large as 1e30 or as small as 1e-30 (fp32) free of overflow and underflow.

Non-finite input: ``nonfinite="raise"`` (default) raises ``FloatingPointError`` naming the problem;
``"propagate"`` never raises for it and skips the check's device sync (on CUDA): every matrix of the batch that
holds a NaN or an inf comes out **all NaN** (same shape and dtype), on every backend, and the other matrices of
the batch are computed as usual.  (LAPACK's SVD and eigh refuse non-finite input, so such a matrix is replaced
by zeros for the decomposition and its output is then filled with NaN.)
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
from torch import Tensor

from .errors import check

__all__ = ["AUTO", "BACKENDS", "NS_MUON", "NS_POLISH", "default_rtol", "polar", "resolve_backend"]

BACKENDS = ("auto", "svd", "gram-eigh", "newton-schulz", "rsvd")


class _Default(str):
    """A string default that knows it was not passed (so ``backend`` and its deprecated alias can't both be)."""


AUTO = _Default("auto")
"""The default ``backend``: ``"auto"``, as an object that tells "not passed" from an explicit ``"auto"``."""

NS_MUON = (3.4445, -4.7750, 2.0315)
"""Muon's quintic Newton-Schulz coefficients (Jordan et al. 2024); fast, but not convergent to 1."""

NS_POLISH = (15 / 8, -10 / 8, 3 / 8)
"""Convergent quintic: f(s) = (15 s - 10 s³ + 3 s⁵)/8 has f(1) = 1, f'(1) = f''(1) = 0 (third-order)."""

_HALF = (torch.float16, torch.bfloat16)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype that represents the input's precision: fp16/bf16 are computed (and judged) as fp32."""
    return torch.float32 if dtype in _HALF else dtype


def default_rtol(shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> float:
    """``max(m, n) · ε(dtype)``, the numpy/LAPACK rank tolerance; fp16/bf16 use fp32's ε."""
    return max(shape[-2], shape[-1]) * torch.finfo(_work_dtype(dtype)).eps


def resolve_backend(backend: str, G: Tensor) -> str:
    """The concrete backend ``polar`` would use for ``G`` (resolves ``"auto"``)."""
    check(backend in BACKENDS, "backend", backend, f"must be one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return str(backend)
    return "svd" if G.dtype == torch.float64 else "gram-eigh"


def backend_alias(backend: str, method: str | None) -> str:
    """``backend``, or the deprecated ``method`` alias (one release): it warns; passing both is an error."""
    if method is None:
        return str(backend)
    check(backend is AUTO, "method", method, f"deprecated alias of backend (= {backend!r}); pass backend only")
    warnings.warn("method= is deprecated, use backend=", DeprecationWarning, stacklevel=3)
    return method


def _weights(s: Tensor, smax: Tensor, rtol: float, eps: float | None) -> Tensor:
    """Spectral weights w(s): cutoff (default) or the paper's clamp (see module docstring)."""
    if eps is not None:
        return s / s.clamp_min(eps)
    return (s > rtol * smax).to(s.dtype)


def _svd(G: Tensor, rtol: float, eps: float | None) -> Tensor:
    U, s, Vh = torch.linalg.svd(G, full_matrices=False)
    w = _weights(s, s[..., :1], rtol, eps)
    return (U * w.unsqueeze(-2)) @ Vh


def _gram_eigh(G: Tensor, rtol: float, eps: float | None) -> Tensor:
    m, n = G.shape[-2:]
    left = m <= n
    Gt = G.mT
    A = G @ Gt if left else Gt @ G
    lam, Q = torch.linalg.eigh(A)  # ascending
    lam = lam.clamp_min(0)
    s = lam.sqrt()
    smax = s[..., -1:]
    # The Gram matrix resolves s only down to ~sqrt(k·ε)·s_max: below that, eigenvalues are round-off.
    floor = math.sqrt(max(m, n) * torch.finfo(G.dtype).eps)
    w = _weights(s, smax, max(rtol, floor), eps)
    inv = torch.where(s > 0, w / s.clamp_min(torch.finfo(G.dtype).tiny), torch.zeros_like(s))
    P = (Q * inv.unsqueeze(-2)) @ Q.mT  # Q diag(w/s) Qᵀ
    return P @ G if left else G @ P


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


def _rsvd(
    G: Tensor, rank: int, power_iters: int, generator: torch.Generator | None, rtol: float, eps: float | None
) -> Tensor:
    m, n = G.shape[-2:]
    r = min(rank, m, n)
    omega = torch.randn(*G.shape[:-2], n, r, dtype=G.dtype, device=G.device, generator=generator)
    Q = omega
    for _ in range(power_iters):
        Q = torch.linalg.qr(G @ Q).Q
        Q = torch.linalg.qr(G.mT @ Q).Q
    Uh, sh, _ = torch.linalg.svd(G @ Q, full_matrices=False)
    w = _weights(sh, sh[..., :1], rtol, eps)
    inv = torch.where(sh > 0, w / sh.clamp_min(torch.finfo(G.dtype).tiny), torch.zeros_like(sh))
    return (Uh * inv.unsqueeze(-2)) @ (Uh.mT @ G)  # Û diag(w/Ŝ) Ûᵀ G


def polar(
    G: Tensor,
    backend: str = AUTO,
    *,
    rtol: float | None = None,
    eps: float | None = None,
    dtype: torch.dtype | None = None,
    rank: int = 64,
    power_iters: int = 2,
    generator: torch.Generator | None = None,
    ns_coefficients: Literal["polar", "muon"] = "polar",
    ns_steps: int = 5,
    ns_polish: int = 3,
    nonfinite: Literal["raise", "propagate"] = "raise",
    method: str | None = None,
) -> Tensor:
    """Polar factor ``U Vᵀ`` of ``G`` (shape ``(..., m, n)``), in ``G``'s dtype and on its device.

    Args:
        G: matrix or batch of matrices, real floating point (fp16/bf16/fp32/fp64).
        backend: ``"auto"``, ``"svd"``, ``"gram-eigh"``, ``"newton-schulz"`` or ``"rsvd"`` (module docstring).
        rtol: relative cutoff; singular values ``s ≤ rtol · s_max`` are dropped (weight 0).  Default
            ``max(m, n) · ε(input dtype)``.
        eps: if given, use the paper's clamp ``w = s / max(s, eps)`` instead of the cutoff.
        dtype: compute dtype override.  Defaults: fp64 for ``svd`` and ``gram-eigh``; bf16 for
            ``newton-schulz`` with ``ns_coefficients="muon"`` (like Muon); otherwise the input dtype, with
            fp16/bf16 computed in fp32.
        rank, power_iters, generator: ``rsvd`` only (target rank r, subspace iterations, sketch RNG).
        ns_coefficients, ns_steps, ns_polish: ``newton-schulz`` only.
        nonfinite: ``"raise"`` (default): NaN or inf in ``G`` raises ``FloatingPointError``.  ``"propagate"``:
            no check and no raise; each matrix with a NaN or inf gives an all-NaN matrix, on every backend.
        method: deprecated name of ``backend`` (warns; giving both is a ValueError).

    Returns:
        ``U diag(w) Vᵀ`` with the same shape, dtype and device as ``G``.

    Raises:
        ValueError: bad argument (message names it, its value and what is allowed).
        FloatingPointError: ``G`` has NaN or inf and ``nonfinite="raise"``.
    """
    check(isinstance(G, Tensor), "G", type(G).__name__, "must be a torch.Tensor", TypeError)
    check(G.ndim >= 2, "G.shape", tuple(G.shape), "must have at least 2 dimensions (..., m, n)")
    check(G.is_floating_point(), "G.dtype", G.dtype, "must be floating point")
    backend = resolve_backend(backend_alias(backend, method), G)
    check(rtol is None or 0 <= rtol < 1, "rtol", rtol, "must be None or in [0, 1)")
    check(eps is None or eps > 0, "eps", eps, "must be None or > 0")
    if backend == "rsvd":
        check(isinstance(rank, int) and rank >= 1, "rank", rank, "must be an integer >= 1")
        check(isinstance(power_iters, int) and power_iters >= 0, "power_iters", power_iters, "must be an integer >= 0")
    if backend == "newton-schulz":
        check(ns_coefficients in ("polar", "muon"), "ns_coefficients", ns_coefficients, "must be 'polar' or 'muon'")
        check(ns_steps >= 0, "ns_steps", ns_steps, "must be >= 0")
        check(ns_polish >= 0, "ns_polish", ns_polish, "must be >= 0")
    check(nonfinite in ("raise", "propagate"), "nonfinite", nonfinite, "must be 'raise' or 'propagate'")
    if G.numel() == 0:
        return G.clone()
    # max|G| per matrix: one reduction serves the finiteness check (it is NaN or inf exactly when G has a NaN
    # or inf) and the rescaling below
    peak = G.abs().amax(dim=(-2, -1), keepdim=True)
    bad = ~torch.isfinite(peak)  # per matrix: amax propagates NaN, so NaN or inf anywhere in the matrix
    if nonfinite == "raise":
        finite = not bool(bad.any())
        check(finite, "max|G|", float(peak.max()), "must be finite (G has NaN or inf); pass nonfinite='propagate' "
              "to let it through", FloatingPointError)
    else:  # decompose zeros instead (LAPACK refuses NaN/inf) and fill those matrices with NaN at the end
        G = torch.where(bad, torch.zeros((), dtype=G.dtype, device=G.device), G)
        peak = torch.where(bad, torch.zeros_like(peak), peak)

    if rtol is None:
        rtol = default_rtol(G.shape, G.dtype)
    if dtype is None:
        if backend in ("svd", "gram-eigh"):
            dtype = torch.float64
        elif backend == "newton-schulz" and ns_coefficients == "muon":
            dtype = torch.bfloat16
        else:
            dtype = _work_dtype(G.dtype)
    X = G.to(dtype)
    if eps is None or backend == "newton-schulz":
        # U Vᵀ is scale-invariant; dividing by max|G| first keeps 1e-30 or 1e30 gradients clear of under- and
        # overflow in squared quantities (Gram matrices, Frobenius norms).  The paper's clamp uses an absolute
        # eps, so it is not rescaled (except for Newton-Schulz, which ignores eps).
        peak = peak.to(dtype)
        X = X / torch.where(peak > 0, peak, torch.ones_like(peak))

    if backend == "svd":
        out = _svd(X, rtol, eps)
    elif backend == "gram-eigh":
        out = _gram_eigh(X, rtol, eps)
    elif backend == "newton-schulz":
        out = _newton_schulz(X, ns_coefficients, ns_steps, ns_polish)
    else:
        out = _rsvd(X, rank, power_iters, generator, rtol, eps)
    out = out.to(G.dtype)
    if nonfinite == "propagate":
        out = out.masked_fill(bad, math.nan)
    return out

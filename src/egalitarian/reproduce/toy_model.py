"""The EGD paper's linear toy model (§3 and App. A of Saheb Pasand & Dohmatob, "Egalitarian Gradient Descent: A
Simple Approach to Accelerated Grokking", ICLR 2026, arXiv 2510.04930), simulated and set against its closed forms.

``egd reproduce fig6 [--quick]`` checks them numerically (:mod:`egalitarian.reproduce.fig6`: one figure, one
table).  Everything here is numpy on 2-vectors; there is no training loop and no torch.

**The model.**  z ~ N(0, diag(1, ε)); train on x = z conditioned on |z₁| ≥ s; labels y = sign(x₁); a linear model w
fitted by gradient descent on ℓ(w) = ‖Xw − Y‖²/n.  Following the paper's eq. (2), one step is
``w ← w − η (Σ̂ w − b)`` with Σ̂ = XᵀX/n and b = XᵀY/n: η there absorbs the factor 2 of ∇ℓ = 2(Σ̂w − b).
Lemma 1: Σ̂ → diag(m₂, ε), b → (m₁, 0), with m₁ = φ(s)/Q(s), m₂ = 1 + s·m₁ (:func:`moments`).

**The test error of a linear classifier** (shift case: test x = z conditioned on (zᵀv)·z₁ ≤ 0, v at angle θ from
e₁).  In whitened coordinates z = Σ^{1/2} z₀ the direction of z₀ is uniform and sign(zᵀa) = sign(z₀ᵀā) with
ā = Σ^{1/2} a.  The test set is the double wedge of directions where e₁ and v̄ disagree (angle ψ = ∠(e₁, v̄) =
atan(√ε·tan θ) each side), and w errs where e₁ and w̄ disagree.  So the error is a ratio of angles (the paper's
App. A.1, exact for every w):

    E(w) = [ψ + ∠(w̄, e₁) − ∠(w̄, v̄)] / (2ψ)  =  clip(φ_w / ψ, 0, 1)  for φ_w = atan2(√ε·w₂, w₁) ∈ (ψ − π, π]

(and (ψ + |φ_w| − π)/ψ for φ_w ∈ (−π, ψ − π]): :func:`classifier_error`.

**Where the paper's two statements disagree.**  Theorem 1 (main text) writes E ≈ min(1, arccos r_k / arccos r)
and App. A.3 writes E = arccos(max(ρ, ρ_k)) / arccos ρ.  As formulas they are the same function (arccos is
decreasing), with r = ρ_A.3 = cos ψ and r_k = ρ_k = μ_k/L_k = cos|φ_w|.  What disagrees:

* the main text says the error "plateaus at 100% until r_k decreases below r"; by the formula it is 100% exactly
  while r_k ≤ r and falls once r_k *exceeds* r (A.3 says so correctly: "decreasing precisely when ρ_k > ρ");
  the proof of Corollary 1 has the same reversed inequality;
* eq. (6) defines r_k := μ_k/ν_k, Theorem 1 r_k := μ_k/L_k (the latter is the one that works);
* both use the *unsigned* cosine μ_k/L_k, which cannot see the sign of ν_k = w₂: they are exact for ν_k ≥ 0
  (in the shift case, u₂ ≥ 0, where the plateau lives) but for ν_k < 0 the true error is 0 (w̄ is on the other
  side of e₁ from v̄) while the formulas give min(1, |φ_w|/ψ) > 0.  In the equal-distribution case of App. A.3
  GD converges to a w* with ν* < 0, so eq. (19) as printed predicts 100% error at the optimum, whose true
  error is 0 (:func:`theorem1_error` is the printed form; :func:`classifier_error` the exact one).
* Corollary 1's τ = |u₂|·|tan θ|·m₂/m₁: the crossing condition the proof derives, |ν_k| < |μ_k|·tan θ with
  μ_k → m₁/m₂, gives k* = log τ' / log(1/β) with τ' = |u₂|·m₂/(m₁·|tan θ|), i.e. cot θ, not tan θ (the two agree at
  θ = π/4); :mod:`~egalitarian.reproduce.fig6` measures which.
* App. A.3's one-dimensional integrals for a = E[x₁²], d = E[x₂²] and c₁ = E[y·x₁] have Φ(κt) where the
  conditioning gives Φ(−κt) (and d's integrand should be Φ(−κt) + κt·φ(κt)); b and c₂ are right.
  :func:`equal_moments` has the closed forms (checked against quadrature and Monte Carlo in the tests).

**EGD on this problem.**  The weight is a 1×2 matrix W = wᵀ, its gradient G = gᵀ has one singular value ‖g‖, and
its polar factor U Vᵀ is gᵀ/‖g‖: EGD here is *normalized* gradient descent, w ← w − η·g/‖g‖.  It changes the step
length, not the direction, so it cannot equalize the two eigen-directions of Σ̂ (there is only one singular
direction to equalize).  The ε-independent rule of §3.2 is eq. (9), w ← w − η Σ̂⁻¹(Σ̂w − b), a Newton / natural-
gradient step with the data covariance, not (GGᵀ)^{-1/2}G.  ``rule="sqrt"`` is the half-way preconditioner
Σ̂^{-1/2} (EGD's F^{-1/2} with the data Fisher F = Σ̂ in place of GGᵀ).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import check

RULES = ("gd", "precond", "sqrt", "egd")
"""Update rules: vanilla GD (eq. 2), Σ̂⁻¹-preconditioned (eq. 9), Σ̂^{-1/2}-preconditioned, EGD (= g/‖g‖ here)."""

RULE_NAMES = {"gd": "vanilla GD (eq. 2)", "precond": "Σ̂⁻¹ GD (eq. 9)", "sqrt": "Σ̂^-1/2 GD",
              "egd": "EGD = g/‖g‖ (1×2 polar)"}


# ------------------------------------------------------------------------------------------- closed forms


def survival(s: float) -> float:
    """Q(s) = P(N(0,1) > s)."""
    return 0.5 * math.erfc(s / math.sqrt(2.0))


def moments(s: float) -> tuple[float, float]:
    """(m₁, m₂) = (E|x₁|, E x₁²) for x₁ ~ N(0,1) conditioned on |x₁| ≥ s: φ(s)/Q(s) and 1 + s·m₁ (eq. 5)."""
    check(s >= 0 and math.isfinite(s), "s", s, "must be a finite number >= 0")
    m1 = math.exp(-s * s / 2) / math.sqrt(2 * math.pi) / survival(s)
    return m1, 1.0 + s * m1


def wedge_angle(eps: float | np.ndarray, theta: float | np.ndarray) -> np.ndarray:
    """ψ = ∠(e₁, Σ^{1/2} v) = atan(√ε·tan θ): half the angular measure of the test set, in (0, π/2) for θ ∈ (0, π/2).
    cos ψ is the paper's r (Theorem 1) and ρ (App. A.3)."""
    eps, theta = np.asarray(eps, float), np.asarray(theta, float)
    return np.arctan2(np.sqrt(eps) * np.sin(theta), np.cos(theta))


def classifier_error(w: np.ndarray, eps: float | np.ndarray, theta: float | np.ndarray) -> np.ndarray:
    """The exact population error of x ↦ sign(xᵀw) on x = z | (zᵀv)·z₁ ≤ 0, labels sign(x₁) (an error is y·xᵀw ≤ 0,
    so w = 0 errs everywhere).  ``w`` has shape (..., 2); ``eps`` and ``theta`` broadcast against w[..., 0]."""
    w = np.asarray(w, float)
    psi = wedge_angle(eps, theta)
    phi = np.arctan2(np.sqrt(eps) * w[..., 1], w[..., 0])  # the angle of w̄ = Σ^{1/2} w, in (-π, π]
    to_e1 = np.abs(phi)
    to_v = np.abs(np.mod(phi - psi + np.pi, 2 * np.pi) - np.pi)
    err = (psi + to_e1 - to_v) / (2 * psi)
    return np.where((w[..., 0] == 0) & (w[..., 1] == 0), 1.0, np.clip(err, 0.0, 1.0))


def theorem1_error(mu: np.ndarray, nu: np.ndarray, eps: float | np.ndarray, theta: float | np.ndarray) -> np.ndarray:
    """Theorem 1 in App. A.3's form, E = arccos(max(ρ, ρ_k)) / arccos(ρ), ρ = cos θ / √(cos²θ + ε sin²θ),
    ρ_k = μ_k / √(μ_k² + ε ν_k²).  The same function as the main text's min(1, arccos r_k / arccos r); exact
    for ν_k ≥ 0, wrong for ν_k < 0 (see the module docstring)."""
    mu, nu = np.asarray(mu, float), np.asarray(nu, float)
    rho = np.cos(theta) / np.sqrt(np.cos(theta) ** 2 + eps * np.sin(theta) ** 2)
    rho_k = mu / np.sqrt(mu**2 + eps * nu**2)
    return np.arccos(np.clip(np.maximum(rho, rho_k), -1, 1)) / np.arccos(rho)


def deterministic_path(k: np.ndarray, u: Sequence[float], eps: float, s: float, eta: float) -> tuple[np.ndarray,
                                                                                                      np.ndarray]:
    """(μ_k, ν_k) of eq. (6): μ_k = α^k u₁ + (1 − α^k) m₁/m₂, ν_k = β^k u₂, α = 1 − η m₂, β = 1 − η ε."""
    m1, m2 = moments(s)
    k = np.asarray(k, float)
    a, b = (1 - eta * m2) ** k, (1 - eta * eps) ** k
    return a * u[0] + (1 - a) * m1 / m2, b * u[1]


def tau_paper(u2: float, theta: float, s: float) -> float:
    """Corollary 1's τ = |u₂|·|tan θ|·m₂/m₁ as printed."""
    m1, m2 = moments(s)
    return abs(u2) * abs(math.tan(theta)) * m2 / m1


def tau_derived(u2: float, theta: float, s: float) -> float:
    """τ' = |u₂|·m₂/(m₁·|tan θ|): the first iteration with error below 100% is log τ' / log(1/β) once μ_k = m₁/m₂."""
    m1, m2 = moments(s)
    return abs(u2) * m2 / (m1 * abs(math.tan(theta)))


def equal_moments(eps: float | np.ndarray, theta: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """App. A.3 (train = test = z | (zᵀe₁)(zᵀv) ≤ 0, y = sign(x₁)), θ ∈ (0, π/2): Σ = E[xxᵀ] (shape (..., 2, 2)) and
    c = E[y x] (..., 2).  In whitened coordinates x = (r cos φ, √ε r sin φ) with r Rayleigh (E r = √(π/2),
    E r² = 2) and φ = π/2 + t, t uniform on (0, ψ) (and its antipode), which gives

        a = 1 − sin 2ψ/(2ψ),   d = ε(1 + sin 2ψ/(2ψ)),   b = −√ε sin²ψ/ψ,
        c₁ = √(π/2)(1 − cos ψ)/ψ,   c₂ = −√(ε π/2) sin ψ/ψ."""
    eps = np.asarray(eps, float)
    psi = wedge_angle(eps, theta)
    sinc2 = np.sin(2 * psi) / (2 * psi)
    a, d, b = 1 - sinc2, eps * (1 + sinc2), -np.sqrt(eps) * np.sin(psi) ** 2 / psi
    c1 = math.sqrt(math.pi / 2) * (1 - np.cos(psi)) / psi
    c2 = -np.sqrt(eps * math.pi / 2) * np.sin(psi) / psi
    sigma = np.stack([np.stack([a, b], -1), np.stack([b, d], -1)], -2)
    return sigma, np.stack([c1, c2], -1)


def theorem2_predicts_plateau(u: np.ndarray, eps: float | np.ndarray, theta: float | np.ndarray,
                              eta: float) -> np.ndarray:
    """Theorem 2's condition, (i) m₂(θ) ≤ m₁(θ) tan θ and (ii) u₂ > α u₁, read with §3's definitions carried over
    (A.3 does not define them): m₁(θ) = E|x₁| = c₁, m₂(θ) = E x₁² = a, α = 1 − 2η m₂(θ) (A.3's step is 2η)."""
    sigma, c = equal_moments(eps, theta)
    m1, m2 = c[..., 0], sigma[..., 0, 0]
    u = np.asarray(u, float)
    return (m2 <= m1 * np.tan(theta)) & (u[..., 1] > (1 - 2 * eta * m2) * u[..., 0])


def in_full_error_cone(u: np.ndarray, theta: float | np.ndarray) -> np.ndarray:
    """Whether E(u) = 100% on the (equal-distribution or shifted) test set: the angle of u lies in [θ, π]
    (whitening keeps quadrants and the order of angles in (0, π))."""
    u = np.asarray(u, float)
    phi = np.arctan2(u[..., 1], u[..., 0])
    return (phi >= theta) & (phi <= np.pi)


# ---------------------------------------------------------------------------------------------- simulation


def sample_train(n: int, eps: float, s: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n training points x = z | |z₁| ≥ s (rejection sampling of z₁) and their labels sign(x₁)."""
    check(n >= 2, "n", n, "must be >= 2")
    got: list[np.ndarray] = []
    have = 0
    while have < n:
        z1 = rng.standard_normal(max(1024, int(1.2 * (n - have) / (2 * survival(s)))))
        z1 = z1[np.abs(z1) >= s]
        got.append(z1)
        have += z1.size
    z1 = np.concatenate(got)[:n]
    x = np.stack([z1, math.sqrt(eps) * rng.standard_normal(n)], -1)
    return x, np.sign(x[:, 0])


def sample_cone(n: int, eps: float, theta: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n points x = z | (zᵀv)·z₁ ≤ 0 (the shifted test set, and App. A.3's train = test set), exactly: a Rayleigh
    radius and a direction uniform on the double wedge, mapped back by Σ^{1/2}; labels sign(x₁)."""
    psi = float(wedge_angle(eps, theta))
    phi = np.pi / 2 + psi * rng.random(n) + np.pi * rng.integers(0, 2, n)
    r = np.sqrt(-2 * np.log1p(-rng.random(n)))
    x = np.stack([r * np.cos(phi), math.sqrt(eps) * r * np.sin(phi)], -1)
    return x, np.sign(x[:, 0])


def _inv_sqrt(sigma: np.ndarray) -> np.ndarray:
    lam, q = np.linalg.eigh(sigma)
    return q @ (q.swapaxes(-1, -2) / np.sqrt(lam)[..., None])


def _preconditioner(rule: str, sigma: np.ndarray) -> np.ndarray | None:
    """Σ̂⁻¹ for ``precond``, Σ̂^{-1/2} for ``sqrt``, None for the others."""
    if rule == "precond":
        return np.linalg.inv(sigma)
    return _inv_sqrt(sigma) if rule == "sqrt" else None


def _direction(rule: str, sigma: np.ndarray, b: np.ndarray, w: np.ndarray, pre: np.ndarray | None) -> np.ndarray:
    """The step direction at ``w``: g = Σ̂w − b, preconditioned (``pre`` g) or normalized (``egd``: g/‖g‖, 0 at
    g = 0)."""
    g = np.einsum("...ij,...j->...i", sigma, w) - b
    if pre is not None:
        return np.einsum("...ij,...j->...i", pre, g)
    if rule == "egd":
        norm = np.linalg.norm(g, axis=-1, keepdims=True)
        return np.divide(g, norm, out=np.zeros_like(g), where=norm > 0)
    return g


def simulate(rule: str, sigma: np.ndarray, b: np.ndarray, w0: np.ndarray, eta: float | np.ndarray, steps: int,
             *, record: Sequence[int] | None = None) -> np.ndarray:
    """Iterate ``rule`` on the quadratic with second moments ``sigma`` (B, 2, 2) and cross-moments ``b`` (B, 2) from
    ``w0`` (B, 2), for ``steps`` steps; every leading shape broadcasts.  g = Σ̂w − b and

    * gd: w − η g   * precond: w − η Σ̂⁻¹ g   * sqrt: w − η Σ̂^{-1/2} g   * egd: w − η g/‖g‖ (g = 0: no step).

    Returns the iterates at the steps in ``record`` (default: every step, 0..steps), shape (len, B, 2)."""
    check(rule in RULES, "rule", rule, f"allowed: {', '.join(RULES)}")
    sigma, b = np.asarray(sigma, float), np.asarray(b, float)
    w = np.array(np.broadcast_to(np.asarray(w0, float), np.broadcast_shapes(np.shape(w0), b.shape)))
    eta = np.asarray(eta, float)[..., None] if np.ndim(eta) else float(eta)
    pre = _preconditioner(rule, sigma)
    want = set(range(steps + 1)) if record is None else set(record)
    out = []
    for k in range(steps + 1):
        if k in want:
            out.append(w.copy())
        if k == steps:
            break
        w = w - eta * _direction(rule, sigma, b, w, pre)
    return np.stack(out)


def first_below(rule: str, sigma: np.ndarray, b: np.ndarray, w0: np.ndarray, eta: float,
                error: Callable[[np.ndarray], np.ndarray], level: float, max_steps: int) -> np.ndarray:
    """For each batch element, the first step k at which ``error(w(k))`` < ``level`` (−1 if not within
    ``max_steps``).  ``error`` maps (B, 2) iterates to (B,) errors."""
    sigma, b = np.asarray(sigma, float), np.asarray(b, float)
    w = np.array(np.broadcast_to(np.asarray(w0, float), b.shape))
    pre = _preconditioner(rule, sigma)
    found = np.full(w.shape[0], -1)
    for k in range(max_steps + 1):
        hit = (found < 0) & (error(w) < level)
        found[hit] = k
        if (found >= 0).all() or k == max_steps:
            break
        w = w - eta * _direction(rule, sigma, b, w, pre)
    return found


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """The least-squares slope of y on x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(np.polyfit(x, y, 1)[0])

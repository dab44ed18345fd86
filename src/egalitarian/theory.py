"""The EGD paper's linear toy model (§3 and App. A of Saheb Pasand & Dohmatob, "Egalitarian Gradient Descent: A
Simple Approach to Accelerated Grokking", ICLR 2026, arXiv 2510.04930), simulated and set against its closed forms.

``egd reproduce fig6 [--quick]`` runs :func:`fig6`: one figure, one table.  Everything here is numpy on 2-vectors;
there is no training loop and no torch.

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
  θ = π/4); :func:`fig6` measures which.
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import check

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
    pre = {"precond": np.linalg.inv(sigma), "sqrt": _inv_sqrt(sigma)}.get(rule)
    want = set(range(steps + 1)) if record is None else set(record)
    out = []
    for k in range(steps + 1):
        if k in want:
            out.append(w.copy())
        if k == steps:
            break
        g = np.einsum("...ij,...j->...i", sigma, w) - b
        if pre is not None:
            g = np.einsum("...ij,...j->...i", pre, g)
        elif rule == "egd":
            norm = np.linalg.norm(g, axis=-1, keepdims=True)
            g = np.divide(g, norm, out=np.zeros_like(g), where=norm > 0)
        w = w - eta * g
    return np.stack(out)


def first_below(rule: str, sigma: np.ndarray, b: np.ndarray, w0: np.ndarray, eta: float, error, level: float,
                max_steps: int) -> np.ndarray:
    """For each batch element, the first step k at which ``error(w(k))`` < ``level`` (−1 if not within
    ``max_steps``).  ``error`` maps (B, 2) iterates to (B,) errors."""
    sigma, b = np.asarray(sigma, float), np.asarray(b, float)
    w = np.array(np.broadcast_to(np.asarray(w0, float), b.shape))
    pre = {"precond": np.linalg.inv(sigma), "sqrt": _inv_sqrt(sigma)}.get(rule)
    found = np.full(w.shape[0], -1)
    for k in range(max_steps + 1):
        hit = (found < 0) & (error(w) < level)
        found[hit] = k
        if (found >= 0).all() or k == max_steps:
            break
        g = np.einsum("bij,bj->bi", sigma, w) - b
        if pre is not None:
            g = np.einsum("bij,bj->bi", pre, g)
        elif rule == "egd":
            norm = np.linalg.norm(g, axis=-1, keepdims=True)
            g = np.divide(g, norm, out=np.zeros_like(g), where=norm > 0)
        w = w - eta * g
    return found


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """The least-squares slope of y on x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(np.polyfit(x, y, 1)[0])


# ----------------------------------------------------------------------------------------------- fig6


@dataclass(frozen=True)
class Fig6Setup:
    """The experiment's parameters (``quick``: the same checks on fewer, easier points)."""

    s: float = 1.0
    theta: float = math.pi / 4
    eta: float = 0.3
    init_angle: float = math.pi / 4  # u = ζ (cos, sin) of this
    eps_grid: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
    small_zeta: tuple[float, ...] = (0.1, 0.3)
    large_zeta: tuple[float, ...] = (3.0, 30.0)
    curve_eps: float = 1e-3
    curve_zeta: tuple[float, ...] = (0.3, 3.0, 30.0)
    n_train: int = 1_000_000
    n_test: int = 20_000
    tau_theta: float = math.pi / 3
    # App. A.3
    eta2: float = 0.5
    zeta2: float = 2.0
    thetas2: tuple[float, ...] = tuple(np.round(np.linspace(0.15, 1.4, 11), 4))
    angles2: int = 24
    map_eps: float = 1e-3
    scale_eps: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
    scale_points: tuple[tuple[float, float], ...] = ((math.pi / 4, math.pi / 2), (math.pi / 4, 3 * math.pi / 4),
                                                     (1.2, math.pi / 2), (1.2, 3 * math.pi / 4))
    seed: int = 0


QUICK = Fig6Setup(eps_grid=(1e-1, 1e-2, 1e-3), curve_eps=1e-2, n_train=100_000, n_test=5_000,
                  thetas2=(0.3, 0.6, 0.9, 1.2), angles2=12, map_eps=1e-2, scale_eps=(1e-2, 1e-3),
                  scale_points=((math.pi / 4, math.pi / 2), (1.2, 3 * math.pi / 4)))


def _init(zeta: float, angle: float) -> np.ndarray:
    return zeta * np.array([math.cos(angle), math.sin(angle)])


def _log_ks(k_max: int, n: int = 80) -> list[int]:
    return sorted({0, *np.unique(np.geomspace(1, k_max, n).astype(int)).tolist()})


def shift_curves(cfg: Fig6Setup, rng: np.random.Generator) -> dict[str, Any]:
    """Vanilla GD on n finite samples vs Theorem 1 (A.3 form), and eq. 9 / EGD curves, at ``cfg.curve_eps``."""
    eps, theta, eta = cfg.curve_eps, cfg.theta, cfg.eta
    x, y = sample_train(cfg.n_train, eps, cfg.s, rng)
    sig_hat, b_hat = x.T @ x / len(x), x.T @ y / len(x)
    xt, yt = sample_cone(cfg.n_test, eps, theta, rng)
    u = np.stack([_init(z, cfg.init_angle) for z in cfg.curve_zeta])
    k_max = int(math.ceil(2 * math.log(2 * tau_derived(max(cfg.curve_zeta), theta, cfg.s) + 2) / (eta * eps)))
    ks = _log_ks(k_max)
    out: dict[str, Any] = {"eps": eps, "ks": ks, "zeta": list(cfg.curve_zeta), "n": cfg.n_train,
                           "n_test": cfg.n_test, "sigma_hat": sig_hat.tolist(), "b_hat": b_hat.tolist()}
    w = simulate("gd", sig_hat, b_hat, u, eta, k_max, record=ks)  # (K, Z, 2)
    mc = (np.sign(np.einsum("kzj,nj->kzn", w, xt)) != yt).mean(-1)  # y·xᵀw ≤ 0 (sign 0 counts as an error)
    mu, nu = deterministic_path(np.asarray(ks)[:, None], u.T, eps, cfg.s, eta)
    theory = theorem1_error(mu, nu, eps, theta)
    out["gd_sim"], out["gd_theory"], out["gd_exact"] = mc.T.tolist(), theory.T.tolist(), classifier_error(w, eps,
                                                                                                     theta).T.tolist()
    out["max_gap"] = [float(np.max(np.abs(mc[:, i] - theory[:, i]))) for i in range(len(cfg.curve_zeta))]
    m1, m2 = moments(cfg.s)
    for rule in ("precond", "egd"):
        curves = {}
        for e in cfg.eps_grid:
            ps, pb = np.diag([m2, e]), np.array([m1, 0.0])
            k_e = int(math.ceil(3 / (eta * e))) if rule == "egd" else 60
            ks_e = _log_ks(k_e, 60)
            we = simulate(rule, ps, pb, u[len(u) // 2], eta, k_e, record=ks_e)
            curves[e] = (ks_e, classifier_error(we, e, theta).tolist())
        out[rule] = curves
    out["wols_hat"] = np.linalg.solve(sig_hat, b_hat).tolist()
    return out


def plateau_grid(cfg: Fig6Setup) -> dict[str, Any]:
    """k* = the first iteration with test error < 50%, population recursion (Σ̂ = diag(m₂, ε), b = (m₁, 0)), for
    every rule × ε × ζ; and the iteration the error first leaves 100% at θ = ``cfg.tau_theta`` (τ: tan or cot)."""
    m1, m2 = moments(cfg.s)
    zetas = (*cfg.small_zeta, *cfg.large_zeta)
    out: dict[str, Any] = {"zeta": list(zetas), "eps": list(cfg.eps_grid), "k": {}}
    for rule in RULES:
        pts = [(e, z) for e in cfg.eps_grid for z in zetas]
        sigma = np.stack([np.diag([m2, e]) for e, _ in pts])
        b = np.tile([m1, 0.0], (len(pts), 1))
        w0 = np.stack([_init(z, cfg.init_angle) for _, z in pts])
        eps_arr = np.array([e for e, _ in pts])
        cap = int(6 * math.log(2 * tau_derived(max(zetas), cfg.theta, cfg.s) + 2) / (cfg.eta * min(cfg.eps_grid)))
        k = first_below(rule, sigma, b, w0, cfg.eta, lambda w, e=eps_arr: classifier_error(w, e, cfg.theta), 0.5, cap)
        out["k"][rule] = {f"{e:g},{z:g}": int(v) for (e, z), v in zip(pts, k, strict=True)}
    # τ: the first iteration below 100% at θ = tau_theta, ε = the smallest of the grid, from u = (m₁/m₂, u₂)
    e = min(cfg.eps_grid)
    rows = []
    for z in cfg.large_zeta:
        u = np.array([m1 / m2, _init(z, cfg.init_angle)[1]])  # μ_k = m₁/m₂ from the start: the crossing is exact
        k1 = first_below("gd", np.diag([m2, e])[None], np.array([[m1, 0.0]]), u[None], cfg.eta,
                         lambda w: classifier_error(w, e, cfg.tau_theta), 1 - 1e-12, int(20 / (cfg.eta * e)))[0]
        rate = -math.log(1 - cfg.eta * e)
        rows.append({"zeta": z, "k": int(k1), "k_tan": math.log(tau_paper(u[1], cfg.tau_theta, cfg.s)) / rate,
                     "k_cot": math.log(tau_derived(u[1], cfg.tau_theta, cfg.s)) / rate})
    out["tau"] = {"theta": cfg.tau_theta, "eps": e, "rows": rows}
    return out


def _fit_slopes(grid: dict[str, Any], cfg: Fig6Setup) -> dict[str, Any]:
    """Per rule and ζ: the slope of log k* on log(1/ε) and of k* on log(1/ε) (ε where k* ≥ 1 was found)."""
    out: dict[str, Any] = {}
    for rule, ks in grid["k"].items():
        for z in grid["zeta"]:
            pts = [(e, ks[f"{e:g},{z:g}"]) for e in grid["eps"] if ks[f"{e:g},{z:g}"] >= 1]
            if len(pts) < 2:
                out[(rule, z)] = None
                continue
            le = [math.log(1 / e) for e, _ in pts]
            (e0, k0), (e1, k1) = pts[-2], pts[-1]
            out[(rule, z)] = {"loglog": slope(le, [math.log(k) for _, k in pts]), "lin": slope(le, [k for _, k in pts]),
                              "last": math.log(k1 / k0) / math.log(e0 / e1), "ks": [k for _, k in pts]}
    return out


def equal_case(cfg: Fig6Setup) -> dict[str, Any]:
    """App. A.3 / Theorem 2: population GD w ← w − 2η(Σw − c) over a grid of (θ, angle of u) at ‖u‖ = ζ.  The
    measured plateau is the number of initial iterations at 100% test error.  Also the plateau's scaling with ε
    at a few points, for u fixed and for u ∝ 1/√ε (the scale of w* = Σ⁻¹c), and the error curves against
    eq. (19) as printed and the exact (signed) error."""
    eta = cfg.eta2
    angles = -np.pi + (np.arange(cfg.angles2) + 0.5) * 2 * np.pi / cfg.angles2
    th, an = np.meshgrid(np.array(cfg.thetas2), angles, indexing="ij")
    th, an = th.ravel(), an.ravel()
    u = cfg.zeta2 * np.stack([np.cos(an), np.sin(an)], -1)
    sigma, c = equal_moments(cfg.map_eps, th)
    cap = int(40 / (eta * cfg.map_eps))
    plateau = first_below("gd", 2 * sigma, 2 * c, u, eta, lambda w: classifier_error(w, cfg.map_eps, th), 1 - 1e-12,
                          cap)
    measured = plateau > 0
    paper = theorem2_predicts_plateau(u, cfg.map_eps, th, eta)
    cone = in_full_error_cone(u, th)
    out: dict[str, Any] = {"theta": th.tolist(), "angle": an.tolist(), "plateau": plateau.tolist(),
                           "eps": cfg.map_eps, "zeta": cfg.zeta2, "eta": eta,
                           "agree_paper": float(np.mean(measured == paper)),
                           "agree_cone": float(np.mean(measured == cone)), "n": int(th.size),
                           "cond_i_holds": float(np.mean(equal_moments(cfg.map_eps, th)[0][:, 0, 0]
                                                          <= equal_moments(cfg.map_eps, th)[1][:, 0] * np.tan(th)))}
    # scaling of the plateau with ε
    rows = []
    for theta, angle in cfg.scale_points:
        for scaled in (False, True):
            lengths = []
            for e in cfg.scale_eps:
                zeta = cfg.zeta2 * (math.sqrt(cfg.scale_eps[0] / e) if scaled else 1.0)
                sg, cc = equal_moments(e, theta)
                k = first_below("gd", 2 * sg[None], 2 * cc[None], _init(zeta, angle)[None], eta,
                                lambda w, e=e, t=theta: classifier_error(w, e, t), 1 - 1e-12, int(200 / (eta * e)))[0]
                lengths.append(int(k))
            ok = all(k > 0 for k in lengths)
            p = slope([math.log(1 / e) for e in cfg.scale_eps], [math.log(k) for k in lengths]) if ok else math.nan
            rows.append({"theta": theta, "angle": angle, "scaled": scaled, "plateau": lengths, "exponent": p})
    out["scaling"] = rows
    # curves: simulation vs eq. (19) as printed (unsigned) and the exact error
    curves = []
    e = cfg.scale_eps[min(1, len(cfg.scale_eps) - 1)]
    for theta, angle in (cfg.scale_points[0], cfg.scale_points[-1]):
        sg, cc = equal_moments(e, theta)
        k_max = int(3 / (eta * e))
        ks = _log_ks(k_max, 60)
        w = simulate("gd", 2 * sg, 2 * cc, _init(cfg.zeta2, angle), eta, k_max, record=ks)
        printed = theorem1_error(w[:, 0], w[:, 1], e, theta)
        exact = classifier_error(w, e, theta)
        # eq. (17)'s closed form for w(k) (Cayley-Hamilton) against the iteration
        w_star = np.linalg.solve(sg, cc)
        m = np.eye(2) - 2 * eta * sg
        closed = np.stack([w_star - np.linalg.matrix_power(m, k) @ (w_star - _init(cfg.zeta2, angle)) for k in ks])
        curves.append({"theta": theta, "angle": angle, "eps": e, "ks": ks, "printed": printed.tolist(),
                       "exact": exact.tolist(), "w_star": w_star.tolist(),
                       "err_w_star_exact": float(classifier_error(w_star, e, theta)),
                       "err_w_star_printed": float(theorem1_error(w_star[0], w_star[1], e, theta)),
                       "closed_vs_iter": float(np.max(np.abs(closed - w)))})
    out["curves"] = curves
    return out


def run_fig6(quick: bool = False) -> dict[str, Any]:
    """All of fig6's numbers (no files)."""
    cfg = QUICK if quick else Fig6Setup()
    rng = np.random.default_rng(cfg.seed)
    curves = shift_curves(cfg, rng)
    grid = plateau_grid(cfg)
    return {"cfg": cfg, "curves": curves, "grid": grid, "fits": _fit_slopes(grid, cfg), "equal": equal_case(cfg)}


def fig6_table(res: dict[str, Any]) -> list[list[str]]:
    """Rows (check, measured, paper, holds) of the printed table."""
    cfg, cur, grid, fits, eq = res["cfg"], res["curves"], res["grid"], res["fits"], res["equal"]
    rows = []
    gaps = ", ".join(f"ζ={z:g}: {g:.3f}" for z, g in zip(cur["zeta"], cur["max_gap"], strict=True))
    rows.append([f"Thm 1 (A.3 form) vs GD on n={cur['n']:,} samples, ε={cur['eps']:g}, test error on {cur['n_test']:,}",
                 f"max ΔE (simulated − Theorem 1) {gaps}", "≈ 0 for large n",
                 "yes" if max(cur["max_gap"]) < 0.05 else "no"])

    def fit_cell(rule: str, zetas: Sequence[float], key: str) -> str:
        parts = []
        for z in zetas:
            f = fits.get((rule, z))
            parts.append(f"ζ={z:g}: " + ("k*=1 everywhere" if f is None else f"{f[key]:.2f}"))
        return "; ".join(parts)

    eps_txt = f"ε = {', '.join(f'{e:g}' for e in cfg.eps_grid)}"
    large = [fits.get(("gd", z)) for z in cfg.large_zeta]
    ok_large = all(f and abs(f["loglog"] - 1) < 0.1 for f in large)
    rows.append([f"Cor. 1(A) large init (τ>1), vanilla GD, k* = first E < 50%, {eps_txt}",
                 "slope of log k* on log(1/ε): " + fit_cell("gd", cfg.large_zeta, "loglog"), "1 (k* ≍ 1/ε)",
                 "yes" if ok_large else "no"])
    small = [fits.get(("gd", z)) for z in cfg.small_zeta]
    ks_small = {z: [grid["k"]["gd"][f"{e:g},{z:g}"] for e in cfg.eps_grid] for z in cfg.small_zeta}
    lin = "; ".join(f"ζ={z:g}: k* = {', '.join(map(str, ks))}" for z, ks in ks_small.items())
    grows = any(f and f["lin"] > 0.5 / cfg.eta for f in small)
    rows.append(["Cor. 1(B) small init (τ<1), vanilla GD", f"{lin} (no growth with 1/ε)" if not grows else lin,
                 f"k* ≍ (1/η) log(1/(τε)): +{1 / cfg.eta:.1f} per unit of log(1/ε)", "yes" if grows else "no"])
    t = grid["tau"]
    tau_rows = "; ".join(f"ζ={r['zeta']:g}: {r['k']} vs cot {r['k_cot']:.0f} / tan {r['k_tan']:.0f}" for r in t["rows"])
    cot_wins = all(abs(r["k"] - r["k_cot"]) < abs(r["k"] - r["k_tan"]) for r in t["rows"])
    rows.append([f"Cor. 1's τ at θ = {t['theta']:.3f}, ε = {t['eps']:g}: first E < 100% vs log τ/log(1/β)",
                 tau_rows, "τ = abs(u₂)·tan θ·m₂/m₁", "no: cot θ" if cot_wins else "yes"])
    for rule, paper, expect in (("precond", "no plateau, independent of ε (eq. 10)", 0.0),
                                ("sqrt", "(not in the paper)", None), ("egd", "no plateau (Fig. 6 right)", 0.0)):
        cell = "slope of log k*: " + fit_cell(rule, (*cfg.small_zeta, *cfg.large_zeta), "loglog")
        ks = [grid["k"][rule][f"{e:g},{cfg.large_zeta[-1]:g}"] for e in cfg.eps_grid]
        cell += f"; ζ={cfg.large_zeta[-1]:g}: k* = {', '.join(map(str, ks))}"
        last = fits.get((rule, cfg.large_zeta[-1]))
        cell += f" (last decade: {last['last']:.2f})" if last else ""
        fl = [fits.get((rule, z)) for z in (*cfg.small_zeta, *cfg.large_zeta)]
        flat = all(f is None or abs(f["loglog"]) < 0.1 for f in fl)
        holds = "-" if expect is None else ("yes" if flat else "no")
        rows.append([RULE_NAMES[rule], cell, paper, holds])
    rows.append([f"Thm 2 where: plateau (E = 100% at k = 0..) on {eq['n']} (θ, angle of u) points, ‖u‖={eq['zeta']:g},"
                 f" ε={eq['eps']:g}",
                 f"agrees with (i)∧(ii) on {100 * eq['agree_paper']:.0f}%, with 'E(u) = 100%' on "
                 f"{100 * eq['agree_cone']:.0f}% ((i) holds on {100 * eq['cond_i_holds']:.0f}%)",
                 "plateau iff (i) m₂ ≤ m₁ tan θ and (ii) u₂ > α u₁", "yes" if eq["agree_paper"] > 0.95 else "no"])
    fixed = [r["exponent"] for r in eq["scaling"] if not r["scaled"]]
    scaled = [r["exponent"] for r in eq["scaling"] if r["scaled"]]
    rows.append([f"Thm 2 length: exponent p of plateau ∝ (1/ε)^p, ε = {', '.join(f'{e:g}' for e in cfg.scale_eps)}",
                 f"u fixed: {', '.join(f'{p:.2f}' for p in fixed)}; u ∝ 1/√ε: {', '.join(f'{p:.2f}' for p in scaled)}",
                 "p = 1 (Θ(1/(ηε)))", "only for u ∝ 1/√ε" if all(abs(p - 1) < 0.15 for p in scaled)
                 and all(abs(p - 1) > 0.15 for p in fixed) else "see numbers"])
    cv = eq["curves"][0]
    rows.append([f"eq. (19) as printed vs exact error at w* = Σ⁻¹c (θ={cv['theta']:.3f}, ε={cv['eps']:g})",
                 f"printed {cv['err_w_star_printed']:.2f}, exact {cv['err_w_star_exact']:.2f} (ν* = "
                 f"{cv['w_star'][1]:.2f} < 0); eq. (17) vs iteration: {cv['closed_vs_iter']:.1e}",
                 "E(w*) = 0", "no (sign of ν lost)"])
    return rows


def _markdown(rows: list[list[str]]) -> str:
    lines = ["| check | measured | theory / paper | holds |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def draw_fig6(res: dict[str, Any], path: str | Path) -> Path:
    """The six panels, on a Figure with its own Agg canvas (never pyplot's global backend), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    from .io import atomic_write

    cfg, cur, grid, eq = res["cfg"], res["curves"], res["grid"], res["equal"]
    fig = Figure(figsize=(15, 8.6), dpi=72)
    FigureCanvasAgg(fig)
    ax = fig.subplots(2, 3).ravel()
    ks = np.asarray(cur["ks"]) + 1
    for i, z in enumerate(cur["zeta"]):
        ax[0].plot(ks, cur["gd_sim"][i], "-", color=f"C{i}", label=f"ζ={z:g} simulated (n={cur['n']:,})")
        ax[0].plot(ks, cur["gd_theory"][i], "--", color="k", lw=1)
    ax[0].plot([], [], "--", color="k", lw=1, label="Theorem 1 (A.3 form)")
    ax[0].set(xscale="log", xlabel="iteration k + 1", ylabel="test error",
              title=f"(a) vanilla GD, ε={cur['eps']:g}, θ={cfg.theta:.2f}, η={cfg.eta:g}")
    ax[0].legend(fontsize=8)
    inv = 1 / np.array(grid["eps"])
    for j, (rule, marker) in enumerate((("gd", "o"), ("precond", "s"), ("sqrt", "^"), ("egd", "D"))):
        for z, ls in ((cfg.large_zeta[-1], "-"), (cfg.small_zeta[0], ":")):
            k = [max(grid["k"][rule][f"{e:g},{z:g}"], 0.8) for e in grid["eps"]]
            ax[1].plot(inv, k, ls, marker=marker, color=f"C{j}", label=f"{RULE_NAMES[rule]}, ζ={z:g}")
    z = cfg.large_zeta[-1]
    tau = tau_paper(_init(z, cfg.init_angle)[1], cfg.theta, cfg.s)
    ax[1].plot(inv, math.log(tau) / (cfg.eta * np.array(grid["eps"])), "--", color="gray",
               label=f"Cor. 1(A): log τ/(ηε), ζ={z:g}")
    ax[1].set(xscale="log", yscale="log", xlabel="1/ε (condition number)", ylabel="k* (first test error < 50%)",
              title="(b) plateau length, population recursion")
    ax[1].legend(fontsize=7)
    for rule in ("precond", "egd"):
        for i, (e, (kk, err)) in enumerate(sorted(cur[rule].items(), reverse=True)):
            ax[2].plot(np.asarray(kk) + 1, err, ("-" if rule == "precond" else "--"), color=f"C{i}",
                       label=f"{RULE_NAMES[rule]}, ε={e:g}")
    ax[2].set(xscale="log", xlabel="iteration k + 1", ylabel="test error",
              title=f"(c) eq. 9 (solid) and EGD (dashed), ζ={cur['zeta'][len(cur['zeta']) // 2]:g}")
    ax[2].legend(fontsize=6, loc="center right")
    th, an, pl = np.array(eq["theta"]), np.array(eq["angle"]), np.array(eq["plateau"], float)
    nt = len(set(eq["theta"]))
    img = ax[3].scatter(th, an, c=np.where(pl > 0, pl, np.nan), s=60, marker="s", norm=LogNorm(), cmap="viridis")
    ax[3].scatter(th[pl <= 0], an[pl <= 0], s=25, marker="x", color="0.6", label="no plateau")
    fig.colorbar(img, ax=ax[3], label="plateau length (iterations at 100% error)")
    tt = np.linspace(min(th), max(th), 50)
    ax[3].plot(tt, tt, "r-", label="E(u)=100% boundary: angle = θ, π")
    ax[3].axhline(np.pi, color="r")
    sg, _ = equal_moments(eq["eps"], tt)
    alpha = 1 - 2 * eq["eta"] * sg[:, 0, 0]
    ax[3].plot(tt, np.arctan(alpha), "m--", label="Thm 2 (ii) boundary: u₂ = α u₁")
    ax[3].plot(tt, np.arctan(alpha) - np.pi, "m--")
    ax[3].set(xlabel="θ", ylabel="angle of u", ylim=(-np.pi, np.pi),
              title=f"(d) Thm 2 (same train/test), ‖u‖={eq['zeta']:g}, ε={eq['eps']:g}, {nt} θ")
    ax[3].legend(fontsize=7, loc="lower right")
    for i, cv in enumerate(eq["curves"]):
        kk = np.asarray(cv["ks"]) + 1
        ax[4].plot(kk, cv["exact"], "-", color=f"C{i}", label=f"θ={cv['theta']:.2f}, u angle {cv['angle']:.2f}: exact")
        ax[4].plot(kk, cv["printed"], "--", color=f"C{i}", label="eq. (19) as printed")
    ax[4].set(xscale="log", xlabel="iteration k + 1", ylabel="error",
              title=f"(e) Thm 2 curves, ε={eq['curves'][0]['eps']:g}")
    ax[4].legend(fontsize=7)
    for i, r in enumerate(eq["scaling"]):
        ax[5].plot(1 / np.array(cfg.scale_eps), np.maximum(r["plateau"], 0.8), "-" if r["scaled"] else ":",
                   marker="o", color=f"C{i // 2}",
                   label=f"θ={r['theta']:.2f}, angle {r['angle']:.2f}, {'u∝1/√ε' if r['scaled'] else 'u fixed'}: "
                   f"p={r['exponent']:.2f}")
    ax[5].set(xscale="log", yscale="log", xlabel="1/ε", ylabel="plateau length",
              title="(f) Thm 2: plateau ∝ (1/ε)^p")
    ax[5].legend(fontsize=7)
    fig.suptitle("The EGD paper's linear toy model (arXiv 2510.04930, §3, App. A)", fontsize=12)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path


def fig6(quick: bool = False, out: str | Path = "reproduce") -> dict[str, Any]:
    """``egd reproduce fig6``: run the checks, write ``OUT/fig6[-quick].png``, print the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = run_fig6(quick)
    path = draw_fig6(res, out / f"fig6{'-quick' if quick else ''}.png")
    cfg = res["cfg"]
    m1, m2 = moments(cfg.s)
    print(f"fig6: the paper's linear toy model{' [quick]' if quick else ''}: s={cfg.s:g} (m1={m1:.4f}, m2={m2:.4f}), "
          f"θ={cfg.theta:.4f}, η={cfg.eta:g}, u = ζ·(cos, sin)({cfg.init_angle:.4f}); Thm 2: η={cfg.eta2:g}\n")
    print(_markdown(fig6_table(res)))
    print(f"\nfigure: {path}")
    res["table"] = fig6_table(res)
    res["figure"] = path
    return res

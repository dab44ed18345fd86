"""The toy model of the EGD paper (arXiv 2510.04930, §3 and App. A): closed forms evaluated by hand at chosen
points, Monte Carlo and quadrature as independent references, and the Corollary 1 scaling on a tiny grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from egalitarian.cli import main
from egalitarian.linalg import polar
from egalitarian.reproduce import toy_model as tm

# ε = 1/3, θ = π/3: √ε·tan θ = 1, so the test wedge has half-angle ψ = π/4 and the paper's r = ρ = cos ψ = 1/√2
EPS, THETA = 1 / 3, math.pi / 3


@pytest.mark.parametrize(
    "w,expected",
    [
        ((1, 1), 2 / 3),  # w̄ = (1, 1/√3): angle π/6 of the wedge's π/4
        ((1, math.sqrt(3) * math.tan(math.pi / 8)), 1 / 2),  # w̄ at angle π/8
        ((1, 3), 1.0),  # w̄ at π/3 > π/4: every test point wrong
        ((-1, 1), 1.0),  # w̄ at 5π/6
        ((1, -1), 0.0),  # w̄ on the other side of e1 from v̄: every test point right
        ((-1, -1), 1 / 3),  # w̄ at -5π/6: (π/4 + 5π/6 - π) / (π/4)
        ((0, 0), 1.0),  # y·xᵀw = 0 counts as an error
    ],
)
def test_test_error_by_hand(w, expected):
    assert tm.classifier_error(np.array(w, float), EPS, THETA) == pytest.approx(expected, abs=1e-12)


def test_test_error_against_monte_carlo_by_rejection():
    rng = np.random.default_rng(1)
    eps, theta = 0.2, 1.0
    z = rng.standard_normal((400_000, 2)) * [1, math.sqrt(eps)]
    v = np.array([math.cos(theta), math.sin(theta)])
    x = z[z[:, 0] * (z @ v) <= 0]  # the test set by rejection (sample_cone is not used here)
    y = np.sign(x[:, 0])
    for w in ([1.0, 0.3], [1.0, 1.5], [0.5, -0.2], [-1.0, 0.4], [2.0, 0.9]):
        mc = np.mean(y * (x @ w) <= 0)
        assert tm.classifier_error(np.array(w), eps, theta) == pytest.approx(mc, abs=0.006)
    # and the exact cone sampler reproduces the rejection sample's moments
    xc, _ = tm.sample_cone(200_000, eps, theta, rng)
    np.testing.assert_allclose(xc.T @ xc / len(xc), x.T @ x / len(x), atol=0.01)


def test_theorem1_forms_agree_with_each_other_and_lose_the_sign_of_nu():
    # (μ, ν) = (1, 1): ρ_k = 1/√(1 + 1/3) = √3/2, so arccos(max(1/√2, √3/2)) / arccos(1/√2) = (π/6)/(π/4)
    assert tm.theorem1_error(1.0, 1.0, EPS, THETA) == pytest.approx(2 / 3, abs=1e-12)
    r, r_k = 1 / math.sqrt(2), math.sqrt(3) / 2
    assert min(1, math.acos(r_k) / math.acos(r)) == pytest.approx(2 / 3)  # the main text's form: the same value
    # (1, 3): ρ_k = 1/2 < ρ: error 100%, i.e. the error is 1 while r_k < r (the main text says the reverse)
    assert tm.theorem1_error(1.0, 3.0, EPS, THETA) == pytest.approx(1.0)
    # ν < 0: the printed forms give 2/3, the true error is 0
    assert tm.theorem1_error(1.0, -1.0, EPS, THETA) == pytest.approx(2 / 3)
    assert tm.classifier_error(np.array([1.0, -1.0]), EPS, THETA) == 0.0


def test_moments_by_hand():
    assert tm.moments(0.0) == pytest.approx((math.sqrt(2 / math.pi), 1.0))
    # s = 1: φ(1) = 0.24197072451914337, Q(1) = 0.15865525393145707
    m1 = 0.24197072451914337 / 0.15865525393145707
    assert tm.moments(1.0) == pytest.approx((m1, 1 + m1), rel=1e-12)


def test_population_recursion_is_eq6():
    s, eps, eta, u = 1.0, 0.01, 0.3, (0.5, 2.0)
    m1, m2 = tm.moments(s)
    w = tm.simulate("gd", np.diag([m2, eps]), np.array([m1, 0.0]), np.array(u), eta, 50)
    mu, nu = tm.deterministic_path(np.arange(51), u, eps, s, eta)
    np.testing.assert_allclose(w[:, 0], mu, rtol=1e-12)
    np.testing.assert_allclose(w[:, 1], nu, rtol=1e-12)
    # one step by hand: μ₁ = α u₁ + (1 − α) m₁/m₂, ν₁ = β u₂
    alpha, beta = 1 - eta * m2, 1 - eta * eps
    assert mu[1] == pytest.approx(alpha * 0.5 + (1 - alpha) * m1 / m2) and nu[1] == pytest.approx(beta * 2.0)


def test_finite_sample_gd_follows_theorem1():
    eps, theta, eta, s, u = 0.05, math.pi / 4, 0.3, 1.0, (0.0, 2.0)
    rng = np.random.default_rng(0)
    x, y = tm.sample_train(200_000, eps, s, rng)
    assert np.all(np.abs(x[:, 0]) >= s)
    ks = [0, 40, 100, 150, 300]
    w = tm.simulate("gd", x.T @ x / len(x), x.T @ y / len(x), np.array(u), eta, 300, record=ks)
    m1, m2 = tm.moments(s)
    psi = math.atan(math.sqrt(eps) * math.tan(theta))
    for k, wk in zip(ks, w, strict=True):
        # eq. (6) and the angle ratio, by hand
        mu = m1 / m2 + (1 - eta * m2) ** k * (u[0] - m1 / m2)
        nu = (1 - eta * eps) ** k * u[1]
        expected = min(1.0, math.atan2(math.sqrt(eps) * nu, mu) / psi)
        assert tm.classifier_error(wk, eps, theta) == pytest.approx(expected, abs=0.03), k
    # the plateau, then the drop
    assert tm.classifier_error(w[1], eps, theta) == pytest.approx(1.0) and tm.classifier_error(w[-1], eps, theta) < 0.1


def _k_star(rule, eps, u, eta=0.3, theta=math.pi / 4, s=1.0):
    m1, m2 = tm.moments(s)
    return tm.first_below(rule, np.diag([m2, eps])[None], np.array([[m1, 0.0]]), np.array([u]), eta,
                       lambda w: tm.classifier_error(w, eps, theta), 0.5, 10**6)[0]


def test_corollary1_large_init_scales_as_one_over_eps():
    eta, s, theta = 0.3, 1.0, math.pi / 4
    m1, m2 = tm.moments(s)
    u = (10 / math.sqrt(2), 10 / math.sqrt(2))
    eps = [1e-1, 1e-2, 1e-3]
    ks = [_k_star("gd", e, u) for e in eps]
    for e, k in zip(eps, ks, strict=True):
        # once μ = m1/m2: error < 1/2 iff √ε ν/μ < tan(ψ/2), ν = β^k u₂  ⇒  k* = ⌈log(u₂√ε m₂/(m₁ tan(ψ/2))) / log(1/β)⌉
        psi = math.atan(math.sqrt(e) * math.tan(theta))
        hand = math.ceil(math.log(u[1] * math.sqrt(e) * m2 / (m1 * math.tan(psi / 2))) / -math.log(1 - eta * e))
        assert abs(k - hand) <= 1
    fit = np.polyfit(np.log(1 / np.array(eps)), np.log(ks), 1)[0]
    assert fit == pytest.approx(1.0, abs=0.03)


def test_corollary1_small_init_does_not_grow_with_one_over_eps():
    """Corollary 1(B) says k* ≍ log(1/ε) for small inits; in the population recursion it is one step for every ε."""
    eta, s = 0.3, 1.0
    m1, m2 = tm.moments(s)
    u = (0.1 / math.sqrt(2), 0.1 / math.sqrt(2))
    for e in (1e-1, 1e-2, 1e-3):
        # by hand after one step: μ₁ = α u₁ + (1 − α) m₁/m₂ ≈ 0.475, ν₁ ≈ 0.0707: the angle is far below ψ/2
        mu1 = (1 - eta * m2) * u[0] + eta * m2 * m1 / m2
        assert math.atan(math.sqrt(e) * (1 - eta * e) * u[1] / mu1) < math.atan(math.sqrt(e)) / 2
        assert _k_star("gd", e, u) == 1


def test_corollary1_tau_has_cot_theta():
    eta, s, eps, theta = 0.3, 1.0, 1e-3, math.pi / 3
    m1, m2 = tm.moments(s)
    u = np.array([m1 / m2, 5.0])  # μ_k = m₁/m₂ exactly: leaves 100% when β^k u₂ < (m₁/m₂) tan θ
    k = tm.first_below("gd", np.diag([m2, eps])[None], np.array([[m1, 0.0]]), u[None], eta,
                    lambda w: tm.classifier_error(w, eps, theta), 1 - 1e-12, 10**5)[0]
    hand = math.log(5.0 * m2 / (m1 * math.tan(theta))) / -math.log(1 - eta * eps)
    assert math.ceil(hand) - 1 <= k <= math.ceil(hand)
    assert tm.tau_derived(5.0, theta, s) == pytest.approx(5.0 * m2 / (m1 * math.tan(theta)))
    assert tm.tau_paper(5.0, theta, s) == pytest.approx(5.0 * math.tan(theta) * m2 / m1)  # 3× larger: not what happens


def test_preconditioned_rule_is_independent_of_eps():
    eta = 0.3
    m1, m2 = tm.moments(1.0)
    u = (10 / math.sqrt(2), 10 / math.sqrt(2))
    ks = {e: _k_star("precond", e, u) for e in (1e-1, 1e-2, 1e-3, 1e-4)}
    assert len(set(ks.values())) == 1
    # eq. (10): w(k) = a^k u + (1 − a^k) ŵ_ols, a = 1 − η, ŵ_ols = (m₁/m₂, 0); error < 1/2 iff ν/μ < tan(ψ/2)/√ε
    a, e = 1 - eta, 1e-2
    k = next(k for k in range(1000) if math.atan(math.sqrt(e) * a**k * u[1] / (a**k * u[0] + (1 - a**k) * m1 / m2))
             < math.atan(math.sqrt(e)) / 2)
    assert ks[e] == k


def test_egd_on_a_one_by_two_weight_is_normalized_gd():
    g = torch.tensor([[3.0, -4.0]], dtype=torch.float64)  # G = gᵀ, one singular value ‖g‖ = 5
    torch.testing.assert_close(polar(g), g / 5)
    sigma, b, w0, eta = np.diag([2.0, 0.01]), np.array([1.0, 0.0]), np.array([0.5, 2.0]), 0.1
    grad = sigma @ w0 - b
    step = tm.simulate("egd", sigma, b, w0, eta, 1)[1]
    np.testing.assert_allclose(step, w0 - eta * polar(torch.tensor(grad)[None]).numpy()[0])
    # so EGD keeps vanilla GD's ε-dependence: the plateau grows with 1/ε
    u = (10 / math.sqrt(2), 10 / math.sqrt(2))
    assert _k_star("egd", 1e-3, u) > 5 * _k_star("egd", 1e-2, u)


def _phi(t):
    return np.exp(-t * t / 2) / math.sqrt(2 * math.pi)


def _Phi(t):
    from scipy.special import ndtr

    return ndtr(t)


def test_equal_distribution_moments_against_quadrature_and_monte_carlo():
    from scipy.integrate import quad

    for eps, theta in ((0.1, math.pi / 4), (0.01, math.pi / 3), (0.05, 0.3)):
        sigma, c = tm.equal_moments(eps, theta)
        kappa = 1 / math.tan(theta) / math.sqrt(eps)
        z = math.acos(math.cos(theta) / math.sqrt(math.cos(theta) ** 2 + eps * math.sin(theta) ** 2)) / math.pi

        def q(f, z=z):
            return 2 / z * quad(f, 0, np.inf)[0]

        # App. A.3's integrals with the conditioning z₂ ≤ −t cot θ, i.e. Φ(−κt) (the paper prints Φ(κt))
        a = q(lambda t, kappa=kappa: t * t * _phi(t) * _Phi(-kappa * t))
        d = eps * q(lambda t, kappa=kappa: (_Phi(-kappa * t) + kappa * t * _phi(kappa * t)) * _phi(t))
        b = -math.sqrt(eps) * q(lambda t, kappa=kappa: t * _phi(t) * _phi(kappa * t))  # as printed
        c1 = q(lambda t, kappa=kappa: t * _phi(t) * _Phi(-kappa * t))
        c2 = -math.sqrt(eps) * q(lambda t, kappa=kappa: _phi(t) * _phi(kappa * t))  # as printed
        np.testing.assert_allclose(sigma, [[a, b], [b, d]], rtol=1e-8)
        np.testing.assert_allclose(c, [c1, c2], rtol=1e-8)
        printed_a = q(lambda t, kappa=kappa: t * t * _phi(t) * _Phi(kappa * t))
        assert printed_a > 10 * a  # the printed integrand is not the second moment
        rng = np.random.default_rng(2)
        zz = rng.standard_normal((1_000_000, 2)) * [1, math.sqrt(eps)]
        v = np.array([math.cos(theta), math.sin(theta)])
        x = zz[zz[:, 0] * (zz @ v) <= 0]
        np.testing.assert_allclose(sigma, x.T @ x / len(x), atol=3e-3)
        np.testing.assert_allclose(c, x.T @ np.sign(x[:, 0]) / len(x), atol=3e-3)


def test_equal_distribution_gd_is_eq17_and_converges_to_a_perfect_classifier():
    eps, theta, eta, u = 0.01, 1.2, 0.5, np.array([1.0, 2.0])
    sigma, c = tm.equal_moments(eps, theta)
    w = tm.simulate("gd", 2 * sigma, 2 * c, u, eta, 200)
    # eq. (17): Cayley–Hamilton with M = I − 2ηΣ, r± its eigenvalues
    (a, b), (_, d) = sigma
    m = np.eye(2) - 2 * eta * sigma
    r_minus, r_plus = np.linalg.eigvalsh(m)
    w_star = np.linalg.solve(sigma, c)
    for k in (1, 7, 200):
        alpha_k = (r_plus * r_minus**k - r_minus * r_plus**k) / (r_plus - r_minus)
        beta_k = (r_plus**k - r_minus**k) / (r_plus - r_minus)
        d0 = w_star - u
        mu = w_star[0] - (alpha_k * d0[0] + beta_k * ((1 - 2 * eta * a) * d0[0] - 2 * eta * b * d0[1]))
        nu = w_star[1] - (alpha_k * d0[1] + beta_k * (-2 * eta * b * d0[0] + (1 - 2 * eta * d) * d0[1]))
        np.testing.assert_allclose(w[k], [mu, nu], rtol=1e-9)
    # w* = Σ⁻¹c has ν* < 0 and zero error; eq. (19) as printed says 100%
    assert w_star[1] < 0 and tm.classifier_error(w_star, eps, theta) == 0.0
    assert tm.theorem1_error(w_star[0], w_star[1], eps, theta) == pytest.approx(1.0)


def test_theorem2_conditions_by_hand():
    eps, eta, theta = 0.01, 0.5, math.pi / 4
    sigma, c = tm.equal_moments(eps, theta)
    # (i) m₂ = a ≤ m₁ tan θ = c₁ holds here; (ii) u₂ > (1 − 2η a) u₁
    assert sigma[0, 0] <= c[0]
    alpha = 1 - 2 * eta * sigma[0, 0]
    assert tm.theorem2_predicts_plateau(np.array([1.0, alpha + 0.01]), eps, theta, eta)
    assert not tm.theorem2_predicts_plateau(np.array([1.0, alpha - 0.01]), eps, theta, eta)
    # the 100%-error cone: the angle of u in [θ, π]
    cone = tm.in_full_error_cone
    assert cone(np.array([1.0, 1.01]), theta) and not cone(np.array([1.0, 0.99]), theta)
    assert cone(np.array([-1.0, 0.01]), theta) and not cone(np.array([-1.0, -0.01]), theta)
    # at θ = 1.2 they differ: u = (1, 2) (angle 1.107 < 1.2) has error < 100% and no plateau, though u₂ > α u₁
    u = np.array([1.0, 2.0])
    sigma, c = tm.equal_moments(eps, 1.2)
    assert tm.theorem2_predicts_plateau(u, eps, 1.2, eta) and not tm.in_full_error_cone(u, 1.2)
    first = tm.first_below("gd", 2 * sigma[None], 2 * c[None], u[None], eta, lambda w: tm.classifier_error(w, eps, 1.2),
                        1 - 1e-12, 100)[0]
    assert first == 0


def test_cli_fig6_quick_writes_a_png_and_prints_the_table(tmp_path, capsys):
    assert main(["reproduce", "fig6", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    png = tmp_path / "fig6-quick.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| check | measured | theory / paper | holds |" in out and "Cor. 1(A)" in out and f"figure: {png}" in out


def test_cli_fig6_refuses_seeds(tmp_path, capsys):
    assert main(["reproduce", "fig6", "--seeds", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["egd: error: --seeds = '3': fig6 takes only --quick and --out"]

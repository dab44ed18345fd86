"""``egd reproduce fig6``: the EGD paper's linear toy model (§3, App. A) checked numerically: one figure, one table.

The model, its closed forms and the simulation are :mod:`egalitarian.reproduce.toy_model`; this module runs the
checks (:func:`run_fig6`: finite-sample GD against Theorem 1, the plateau length k* against Corollary 1 for every
update rule, Theorem 2's plateau region, length and curves), tabulates them (:func:`fig6_table`: check, measured,
theory / paper, holds) and draws the six panels (:func:`draw_fig6`) into ``OUT/fig6[-quick].png``.  Nothing is
trained: ``--quick`` runs the same checks on fewer, easier points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write
from ..report import markdown_table
from .base import Artifact, Options, Plan
from .toy_model import (
    RULE_NAMES,
    RULES,
    classifier_error,
    deterministic_path,
    equal_moments,
    first_below,
    in_full_error_cone,
    moments,
    sample_cone,
    sample_train,
    simulate,
    slope,
    tau_derived,
    tau_paper,
    theorem1_error,
    theorem2_predicts_plateau,
)


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


COLUMNS = ("check", "measured", "theory / paper", "holds")


def draw_fig6(res: dict[str, Any], path: str | Path) -> Path:
    """The six panels, on a Figure with its own Agg canvas (never pyplot's global backend), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

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


def plan(artifact: Artifact, options: Options) -> Plan:
    """The setup (:data:`QUICK` with ``--quick``) and the output folder, created now (before the simulation)."""
    quick = options.quick
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = QUICK if quick else Fig6Setup()
    m1, m2 = moments(cfg.s)
    headline = (f"fig6: the paper's linear toy model{' [quick]' if quick else ''}: s={cfg.s:g} (m1={m1:.4f}, "
                f"m2={m2:.4f}), θ={cfg.theta:.4f}, η={cfg.eta:g}, u = ζ·(cos, sin)({cfg.init_angle:.4f}); Thm 2: "
                f"η={cfg.eta2:g}\n")
    return Plan(artifact, options, headline, detail={"figure": out / f"fig6{'-quick' if quick else ''}.png"})


def run(plan: Plan) -> dict[str, Any]:
    """Nothing to train: the simulations and closed forms (:func:`run_fig6`)."""
    return run_fig6(plan.options.quick)


def analyse(plan: Plan, res: dict[str, Any]) -> dict[str, Any]:
    """The numbers and the table's rows (``table``: :func:`fig6_table`)."""
    return {**res, "table": fig6_table(res)}


def write(plan: Plan, numbers: dict[str, Any]) -> dict[str, Any]:
    """Draw ``OUT/fig6[-quick].png``, print the table; returns the numbers, the rows and the figure's path."""
    path = draw_fig6(numbers, plan.detail["figure"])
    print(markdown_table(COLUMNS, numbers["table"]))
    print(f"\nfigure: {path}")
    return {**numbers, "figure": path}

"""``egd reproduce appf``: where the solutions end up (the EGD paper's App. F; issue #16, item 4).

EGD takes big early steps and then barely moves; on modular tasks it ends in a different region of weight space
than SGD.  On modular addition, p = 97 (recipe ``mod-add-p97``: the paper's MLP, 2p → 512 ReLU → p, SGD lr 0.7,
batch 512, L2 1e-4 in the loss), this trains ``egd`` (W1 whitened, as published) and ``sgd`` for each seed with
the ``travel`` and ``wnorm`` diagnostics (:mod:`egalitarian.diagnostics`: ``‖θ_t − θ₀‖`` at every evaluation, i.e.
every epoch), under Table 2's stop rule: a run stops at the first evaluation with test accuracy ≥ 95%
(``stop_after_grok``, patience 0), or at the recipe's budget of 15000 epochs (censored).  The "final" weights are
the weights at that stop (``checkpoint.pt``).

The runs are a sweep into ``OUT/appf.sqlite`` (``--quick``: ``appf-quick.sqlite``), resumable like the tables:
rerun the command to continue, more seeds continue the same store.  Then, from the run directories:

* per run: the travel curve (``metrics.csv``), ``‖θ_final − θ₀‖``, ``‖θ₀‖``, ``‖θ_final‖``, the relative travel
  ``‖W − W₀‖_F/‖W₀‖_F`` of W1 and W2, the epoch by which 90% of the final travel was covered, and the singular
  values of the final W1 and W2 (largest, effective rank);
* per seed (both methods start from the same θ₀: the init depends on ``train.seed`` only; checked):
  ``‖θ_EGD − θ_SGD‖``, the cosine between the two displacements ``θ − θ₀``, and the same distance per matrix
  relative to its init norm;
* per method: the median over seeds.

Written to ``OUT/appf-report/`` (``appf-quick-report/``): ``appf.png`` (travel over steps, log x, grok steps
marked; singular values of W1 and W2, EGD vs SGD; the distances), ``appf.md`` (the tables, also printed),
``appf.json`` (every number, the spectra included) and the standard report of the store
(:func:`egalitarian.report.write_report`).

``--quick`` is a smoke version: 1 seed and a budget of :data:`QUICK_EPOCHS` epochs, so EGD groks and SGD
(~5900 epochs at p = 97) ends censored.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import io as fio
from ..config import load_config
from ..errors import ConfigError
from ..report import markdown_table
from ..rundir import CHECKPOINT, MetricRow
from ..sweep import Sweep, expand
from .base import (
    Artifact,
    Options,
    Plan,
    RunResult,
    chosen_seeds,
    finish_sweep,
    load_runs,
    parse_seeds,
    report_dir,
    run_sweep,
    store_path,
)

NAME = "appf"
RECIPE = "mod-add-p97"
METHODS = ("egd", "sgd")
DIAGNOSTICS = ["travel", "wnorm"]
QUICK_EPOCHS = 200
"""The ``--quick`` budget: EGD groks at p = 97 in ~120 epochs, SGD needs ~5900 (docs/RESULTS.md, Table 2)."""
TITLE = "mod-add p=97, paper MLP, SGD lr 0.7; EGD (W1 whitened) vs SGD from the same init"
LABELS = {"egd": "EGD", "sgd": "SGD"}


# ------------------------------------------------------------------------------------------------- the sweep


def build_sweep(seeds: int | str | Sequence[int], quick: bool, root: str | Path) -> Sweep:
    """The sweep: ``mod-add-p97`` × (egd, sgd) × seeds, with the ``travel`` and ``wnorm`` diagnostics."""
    chosen = parse_seeds(seeds)
    base = load_config(RECIPE)
    fixed: dict[str, Any] = {"diagnostics": list(DIAGNOSTICS)}
    if quick:
        fixed["train.max_epochs"] = QUICK_EPOCHS
    runs = []
    for method in METHODS:
        runs += expand(base, {"seed": chosen}, [{"method": method}], fixed, where=f"reproduce {NAME}")
    return Sweep(name=NAME, store=store_path(root, NAME, quick), baseline="method=sgd", runs=runs)


# ------------------------------------------------------------------------------------------ the analysis


State = Mapping[str, Tensor]


def _f64(t: Tensor) -> Tensor:
    return t.detach().to(torch.float64)


def l2_norm(state: State) -> float:
    """``‖θ‖₂`` over every tensor of a state dict, in float64."""
    return math.sqrt(sum(float(_f64(t).pow(2).sum()) for t in state.values()))


def l2_distance(a: State, b: State) -> float:
    """``‖a − b‖₂`` over every tensor, in float64; both must hold the same names and shapes."""
    if a.keys() != b.keys():
        raise ValueError(f"different parameters: {sorted(a)} vs {sorted(b)}")
    return math.sqrt(sum(float((_f64(a[k]) - _f64(b[k])).pow(2).sum()) for k in a))


def displacement_cosine(a: State, b: State, origin: State) -> float:
    """The cosine between ``a − origin`` and ``b − origin`` over every tensor; NaN if either is zero."""
    dot = na = nb = 0.0
    for k in origin:
        da, db = _f64(a[k]) - _f64(origin[k]), _f64(b[k]) - _f64(origin[k])
        dot += float((da * db).sum())
        na += float(da.pow(2).sum())
        nb += float(db.pow(2).sum())
    return dot / math.sqrt(na * nb) if na > 0 and nb > 0 else math.nan


def matrix_names(state: State) -> list[str]:
    """The ≥ 2-D tensors in state-dict order (the MLP's: ``layers.0.weight`` = W1, ``layers.1.weight`` = W2)."""
    return [k for k, t in state.items() if t.ndim >= 2]


def relative_distance(a: Tensor, b: Tensor, ref: Tensor) -> float:
    """``‖a − b‖_F / ‖ref‖_F`` in float64 (NaN if ``ref`` is zero)."""
    den = float(torch.linalg.vector_norm(_f64(ref)))
    return float(torch.linalg.vector_norm(_f64(a) - _f64(b))) / den if den > 0 else math.nan


def singular_values(W: Tensor) -> np.ndarray:
    """Singular values of ``W`` (as ``(out, rest)``), descending, float64."""
    return torch.linalg.svdvals(_f64(W).reshape(W.shape[0], -1)).numpy()


def spectral_stats(W: Tensor) -> dict[str, float]:
    """``smax``, ``erank`` (Roy–Vetterli effective rank) and ``srank`` (stable rank ``‖W‖_F²/smax²``) of a weight
    matrix: the ``spectrum`` diagnostic's definitions (:func:`egalitarian.diagnostics.gradient_spectrum`, rank
    cutoff ``max(m, n)·ε·smax``), applied to the weights instead of the gradient."""
    from ..diagnostics import gradient_spectrum

    g = gradient_spectrum(W.detach())
    return {k: g[k] for k in ("smax", "erank", "srank")}


@dataclass(frozen=True)
class Curve:
    """A diagnostic's values at each evaluation: optimizer steps, completed epochs, values."""

    steps: list[int]
    epochs: list[int]
    values: list[float]

    def at_step(self, step: int) -> float:
        """The value logged at ``step`` (NaN if none was)."""
        for s, v in zip(self.steps, self.values, strict=True):
            if s == step:
                return v
        return math.nan

    def peak(self) -> tuple[float, int | None]:
        """The largest value and the first epoch it was logged at ((NaN, None): no finite values)."""
        finite = [(v, e) for e, v in zip(self.epochs, self.values, strict=True) if not math.isnan(v)]
        if not finite:
            return math.nan, None
        top = max(v for v, _ in finite)
        return top, next(e for v, e in finite if v == top)

    def reach_epoch(self, fraction: float) -> int | None:
        """The first epoch at which the value is ≥ ``fraction`` × the last value (None: no values)."""
        if not self.values:
            return None
        target = fraction * self.values[-1]
        return next((e for e, v in zip(self.epochs, self.values, strict=True) if v >= target), None)


def travel_curve(rows: Sequence[MetricRow], metric: str = "travel") -> Curve:
    """The ``diag`` rows of ``metric`` (default: the total travel ``‖θ_t − θ₀‖``) as a :class:`Curve`, in
    training order; a NaN stored as None (the store) reads as NaN."""
    picked = [r for r in rows if r.split == "diag" and r.metric == metric]
    return Curve([int(r.step) for r in picked], [int(r.epoch) for r in picked],
                 [math.nan if r.value is None else float(r.value) for r in picked])


def initial_state(config: dict[str, Any]) -> dict[str, Tensor]:
    """θ₀ of a run: its model as :func:`egalitarian.build.build_run` initialises it (``train.seed``), on CPU."""
    from ..build import build_run

    return {k: v.detach().clone() for k, v in build_run(config, "cpu").model.state_dict().items()}


def final_state(run_dir: str | Path) -> dict[str, Tensor]:
    """The model's state dict in a run directory's ``checkpoint.pt`` (written at the end of the run), on CPU."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"run directory {str(Path(run_dir))!r} has no {CHECKPOINT}: the run directories of the store "
                          "are needed; rerun `egd reproduce appf` with the same --out")
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


Weights = dict[str, tuple[dict[str, Tensor], dict[str, Tensor]]]
"""Per run id: (θ₀, θ_final), the model's state dicts."""


def load_weights(results: Sequence[RunResult]) -> Weights:
    """Each run's θ₀ (:func:`initial_state`) and final weights (:func:`final_state`)."""
    return {r.id: (initial_state(r.config), final_state(r.path)) for r in results}


def run_numbers(r: RunResult, init: State, final: State) -> dict[str, Any]:
    """Per run: outcome, distances, norms, per-matrix relative travel and spectra (the travel curve: its ``diag``
    rows, :func:`travel_curve`)."""
    mats = matrix_names(final)
    travel = l2_distance(final, init)
    curve = travel_curve(r.rows)
    logged = curve.values[-1] if curve.values else math.nan
    out: dict[str, Any] = {
        "method": r.method, "seed": r.seed, "id": r.id, "grokked": r.grokked,
        "grok_epoch": r.summary["grok"]["epoch"] if r.grokked else None, "grok_step": r.grok_step,
        "epochs": r.summary.get("epochs"), "steps": r.summary.get("steps"), "seconds": r.summary.get("seconds"),
        "status": r.summary.get("status"),
        "travel": travel, "travel_logged": logged, "init_norm": l2_norm(init), "final_norm": l2_norm(final),
        "travel_at_grok": curve.at_step(r.grok_step) if r.grokked else None,
        "epoch_90": curve.reach_epoch(0.9), "epoch_50": curve.reach_epoch(0.5),
        "travel_peak": curve.peak()[0], "travel_peak_epoch": curve.peak()[1],
        "matrices": mats, "rel_travel": {}, "spectral": {}, "spectrum": {}, "init_spectrum": {},
    }
    for k in mats:
        out["rel_travel"][k] = relative_distance(final[k], init[k], init[k])
        out["spectral"][k] = spectral_stats(final[k])
        out["spectrum"][k] = singular_values(final[k]).tolist()
        out["init_spectrum"][k] = singular_values(init[k]).tolist()
    return out


def pair_numbers(egd: RunResult, sgd: RunResult, weights: Weights) -> dict[str, Any]:
    """Per seed: the EGD and SGD solutions compared (they start from the same θ₀; ``same_init`` checks it)."""
    (init, final), (sgd_init, sgd_final) = weights[egd.id], weights[sgd.id]
    same = init.keys() == sgd_init.keys() and all(torch.equal(init[k], sgd_init[k]) for k in init)
    mats = matrix_names(final)
    return {
        "seed": egd.seed, "same_init": same, "censored": [r.method for r in (egd, sgd) if not r.grokked],
        "distance": l2_distance(final, sgd_final),
        "egd_travel": l2_distance(final, init), "sgd_travel": l2_distance(sgd_final, sgd_init),
        "init_norm": l2_norm(init),
        "cosine": displacement_cosine(final, sgd_final, init),
        "rel_distance": {k: relative_distance(final[k], sgd_final[k], init[k]) for k in mats},
    }


def summarise(results: Sequence[RunResult], weights: Weights) -> dict[str, Any]:
    """Every number of the figure and the tables: ``runs`` (per run), ``pairs`` (per seed with both methods)."""
    runs = [run_numbers(r, *weights[r.id]) for r in results]
    by = {(r.method, r.seed): r for r in results}
    seeds = sorted({r.seed for r in results})
    pairs = [pair_numbers(by["egd", s], by["sgd", s], weights) for s in seeds if ("egd", s) in by and ("sgd", s) in by]
    return {"runs": runs, "pairs": pairs}


# ------------------------------------------------------------------------------------------------ the tables


def _g(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _median(values: Sequence[Any]) -> float:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(vals) if vals else math.nan


RUN_COLUMNS = ("method", "seed", "epochs to 95%", "‖θ−θ₀‖", "‖θ₀‖", "‖θ‖", "W1 rel. travel", "W2 rel. travel",
               "50% / 90% of travel by epoch", "max ‖θ_t−θ₀‖ (epoch)", "s_max W1", "erank W1", "s_max W2", "erank W2",
               "loop s")


def run_table(res: dict[str, Any]) -> list[list[str]]:
    """Rows of the per-run table (per method: its seeds, then the median); censored values marked ``*``."""
    rows = []
    for method in METHODS:
        mine = [r for r in res["runs"] if r["method"] == method]
        for r in sorted(mine, key=lambda r: r["seed"]):
            rows.append(_run_row(r))
        if len(mine) > 1:
            rows.append(_median_row(method, mine))
    return rows


def _spec_stats(r: dict[str, Any], i: int) -> tuple[float, float]:
    """(smax, erank) of the run's i-th matrix (NaN when it has fewer)."""
    mats = r["matrices"]
    if i >= len(mats):
        return math.nan, math.nan
    st = r["spectral"][mats[i]]
    return st["smax"], st["erank"]


def _run_row(r: dict[str, Any]) -> list[str]:
    mark = "" if r["grokked"] else "*"
    mats = r["matrices"]
    rel = [r["rel_travel"][mats[i]] if i < len(mats) else math.nan for i in (0, 1)]
    (s1, e1), (s2, e2) = _spec_stats(r, 0), _spec_stats(r, 1)
    when = str(r["grok_epoch"]) if r["grokked"] else f"> {r['epochs']} (censored)"
    return [LABELS.get(r["method"], r["method"]), str(r["seed"]), when,
            *(_g(v) + mark for v in (r["travel"], r["init_norm"], r["final_norm"], *rel)),
            f"{_g(r['epoch_50'])} / {_g(r['epoch_90'])}{mark}",
            f"{_g(r['travel_peak'])} ({_g(r['travel_peak_epoch'])}){mark}",
            *(_g(v) + mark for v in (s1, e1, s2, e2)), _g(r["seconds"], 3)]


def _median_row(method: str, runs: list[dict[str, Any]]) -> list[str]:
    n_cens = sum(not r["grokked"] for r in runs)
    grok = [r["grok_epoch"] for r in runs if r["grokked"]]
    when = (f"{_g(_median(grok))}" if grok else "-") + (f"; {n_cens} > budget" if n_cens else "")
    mats = runs[0]["matrices"]
    rel = [_median([r["rel_travel"].get(mats[i]) for r in runs]) if i < len(mats) else math.nan for i in (0, 1)]
    spec = [[_spec_stats(r, i)[j] for r in runs] for i in (0, 1) for j in (0, 1)]
    cens = f" ({n_cens} censored)" if n_cens else ""
    return [f"**{LABELS.get(method, method)} median**", f"{len(runs)} seeds", when,
            *(_g(_median([r[k] for r in runs])) for k in ("travel", "init_norm", "final_norm")),
            *(_g(v) for v in rel),
            f"{_g(_median([r['epoch_50'] for r in runs]))} / {_g(_median([r['epoch_90'] for r in runs]))}{cens}",
            f"{_g(_median([r['travel_peak'] for r in runs]))} ({_g(_median([r['travel_peak_epoch'] for r in runs]))})",
            *(_g(_median(v)) for v in spec), _g(_median([r["seconds"] for r in runs]), 3)]


PAIR_COLUMNS = ("seed", "‖θ_EGD − θ_SGD‖", "‖θ_EGD − θ₀‖", "‖θ_SGD − θ₀‖", "‖θ₀‖", "cos(θ_EGD − θ₀, θ_SGD − θ₀)",
                "‖ΔW1‖/‖W1₀‖", "‖ΔW2‖/‖W2₀‖", "same θ₀")


def pair_table(res: dict[str, Any]) -> list[list[str]]:
    """Rows of the per-seed EGD-vs-SGD table, then the median; a seed with a censored run is marked ``*``."""
    rows = []
    for p in res["pairs"]:
        mark = "*" if p["censored"] else ""
        rel = list(p["rel_distance"].values()) + [math.nan, math.nan]
        rows.append([f"{p['seed']}{mark}", *(_g(p[k]) for k in ("distance", "egd_travel", "sgd_travel", "init_norm")),
                     _g(p["cosine"], 3), _g(rel[0]), _g(rel[1]), "yes" if p["same_init"] else "**no**"])
    if len(res["pairs"]) > 1:
        ps = res["pairs"]
        rel = [[list(p["rel_distance"].values())[i] if i < len(p["rel_distance"]) else None for p in ps]
               for i in (0, 1)]
        n_cens = sum(bool(p["censored"]) for p in ps)
        rows.append([f"**median** ({len(ps)} seeds{f', {n_cens} with a censored run' if n_cens else ''})",
                     *(_g(_median([p[k] for p in ps])) for k in ("distance", "egd_travel", "sgd_travel",
                                                                   "init_norm")),
                     _g(_median([p["cosine"] for p in ps]), 3), _g(_median(rel[0])), _g(_median(rel[1])),
                     "yes" if all(p["same_init"] for p in ps) else "**no**"])
    return rows


def markdown(res: dict[str, Any], *, quick: bool, budget: int, missing: Sequence[str] = ()) -> str:
    """The two tables with their captions."""
    parts = [
        f"# App. F: where the solutions end up ({TITLE}){' [quick]' if quick else ''}",
        "",
        f"Stop rule (Table 2's): each run stops at the first epoch with test accuracy ≥ 95%, or at the budget of "
        f"{budget} epochs (censored, marked *: its 'final' weights are those at the budget). θ₀ is the init (a "
        "function of the seed: EGD and SGD of a seed start from the same θ₀). Norms are ℓ2 over all parameters "
        "(W1, b1, W2); rel. travel = ‖W − W₀‖_F/‖W₀‖_F; erank = Roy–Vetterli effective rank of the singular values; "
        "'50% / 90% of travel by epoch': the first epoch at which ‖θ_t − θ₀‖ reached that share of its final value; "
        "max ‖θ_t − θ₀‖: the largest distance logged (at the end of an epoch), and its epoch; "
        "loop s = the trainer's loop seconds (steps and per-epoch evaluation with the diagnostics).",
        "",
        "## Per run",
        "",
        markdown_table(RUN_COLUMNS, run_table(res)),
        "",
        "## EGD vs SGD, per seed",
        "",
        markdown_table(PAIR_COLUMNS, pair_table(res)) if res["pairs"] else "(no seed has both methods finished)",
    ]
    if missing:
        parts += ["", "Not finished (left out): " + "; ".join(missing)]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------ the figure


def draw(res: dict[str, Any], results: Sequence[RunResult], weights: Weights, path: str | Path, *, title: str) -> Path:
    """Three panels on a Figure with its own Agg canvas (never pyplot's global backend), written atomically:
    travel over steps, the final spectra of W1 and W2, the distances."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(16, 5.2), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.subplots(1, 3)
    color = {"egd": "C0", "sgd": "C3"}
    seeds = sorted({r.seed for r in results})
    styles = ["-", "--", ":", "-."]
    for r in results:
        c, ls = color.get(r.method, "C7"), styles[seeds.index(r.seed) % len(styles)]
        curve = travel_curve(r.rows)
        xs = [(s, v) for s, v in zip(curve.steps, curve.values, strict=True) if s > 0]
        if xs:
            ax[0].plot([s for s, _ in xs], [v for _, v in xs], ls, color=c, lw=1.3)
        if r.grokked:
            ax[0].plot([r.grok_step], [curve.at_step(r.grok_step)], "o", color=c, ms=8, mec="k")
        elif xs:
            ax[0].plot([xs[-1][0]], [xs[-1][1]], "x", color=c, ms=9, mew=2)
    handles = [Line2D([], [], color=color[m], label=LABELS[m]) for m in METHODS]
    handles += [Line2D([], [], ls=styles[i % len(styles)], color="0.3", label=f"seed {s}") for i, s in enumerate(seeds)]
    handles += [Line2D([], [], marker="o", ls="", color="0.5", mec="k", label="95% test accuracy (stop)"),
                Line2D([], [], marker="x", ls="", color="0.5", mew=2, label="budget, not grokked")]
    ax[0].legend(handles=handles, fontsize=8)
    ax[0].set(xscale="log", xlabel="optimizer step", ylabel="‖θ_t − θ₀‖₂ (all parameters)",
              title="(a) distance travelled from the init")

    first = True
    for r in res["runs"]:
        c, ls = color.get(r["method"], "C7"), styles[seeds.index(r["seed"]) % len(styles)]
        for i, k in enumerate(r["matrices"][:2]):
            s = np.asarray(r["spectrum"][k])
            ax[1].plot(np.arange(1, len(s) + 1), s, ls, color=c, lw=1.6 if i == 0 else 0.9, alpha=1 if i == 0 else 0.8)
            if first:
                s0 = np.asarray(r["init_spectrum"][k])
                ax[1].plot(np.arange(1, len(s0) + 1), s0, ls, color="0.6", lw=1.6 if i == 0 else 0.9)
        first = False
    handles = [Line2D([], [], color=color[m], label=f"{LABELS[m]} final") for m in METHODS]
    handles.append(Line2D([], [], color="0.6", label=f"init (seed {seeds[0]})" if seeds else "init"))
    if results:
        final = weights[results[0].id][1]
        shapes = [tuple(final[k].shape) for k in matrix_names(final)[:2]]
        handles += [Line2D([], [], color="k", lw=lw, label=f"W{i + 1} ({'×'.join(map(str, shape))}): {how}")
                    for i, (shape, lw, how) in enumerate(zip(shapes, (1.6, 0.9), ("thick", "thin"), strict=False))]
    ax[1].legend(handles=handles, fontsize=8)
    ax[1].set(yscale="log", xlabel="index i", ylabel="singular value s_i", title="(b) singular values of W1 and W2")

    cats = [("‖θ_EGD−θ₀‖", "egd_travel"), ("‖θ_SGD−θ₀‖", "sgd_travel"), ("‖θ_EGD−θ_SGD‖", "distance"),
            ("‖θ₀‖", "init_norm")]
    finals = {m: [r["final_norm"] for r in res["runs"] if r["method"] == m] for m in METHODS}
    pairs = res["pairs"]
    values = [[p[k] for p in pairs] for _, k in cats] + [finals["egd"], finals["sgd"]]
    names = [n for n, _ in cats] + ["‖θ_EGD‖", "‖θ_SGD‖"]
    colors = ["C0", "C3", "C2", "0.6", "C0", "C3"]
    x = np.arange(len(names))
    ax[2].bar(x, [_median(v) for v in values], color=colors, alpha=0.45, label="median over seeds")
    for i, v in enumerate(values):
        jitter = np.linspace(-0.15, 0.15, len(v)) if len(v) > 1 else np.zeros(len(v))
        ax[2].plot(x[i] + jitter, v, "o", color="k", ms=4)
    ax[2].plot([], [], "o", color="k", ms=4, label="one seed")
    ax[2].set_xticks(x, names, rotation=25, ha="right", fontsize=9)
    ax[2].set(ylabel="ℓ2 norm (all parameters)", title="(c) where the final weights are")
    ax[2].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fio.atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path


# ------------------------------------------------------------------------------------------------- the command


def plan(artifact: Artifact, options: Options) -> Plan:
    """The sweep (default 3 seeds, 1 with ``--quick``) and its epoch budget."""
    seeds = chosen_seeds(artifact, options)
    sweep = build_sweep(seeds, options.quick, options.out)
    budget = int(sweep.runs[0].config["train"]["max_epochs"])
    n_seeds = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    headline = (f"{NAME}: where the solutions end up (App. F), {TITLE}; {len(sweep.runs)} runs ({n_seeds}), "
                f"budget {budget} epochs, stop at 95% test accuracy{' [quick]' if options.quick else ''}")
    return Plan(artifact, options, headline, sweep, {"budget": budget})


run = run_sweep
"""The run step: train (or continue) the sweep."""


def analyse(plan: Plan, counts: dict[str, int]) -> dict[str, Any]:
    """The finished runs with their weights (:func:`load_weights`) and their numbers (:func:`summarise`); the runs
    not finished (``missing``)."""
    results, missing = load_runs(plan.sweep, lambda p: f"{p['method']} seed {int(p['seed'])}")
    weights = load_weights(results)
    return {**summarise(results, weights), "results": results, "weights": weights, "missing": missing,
            "failed": counts.get("failed", 0)}


def write(plan: Plan, numbers: dict[str, Any]) -> dict[str, Any]:
    """``OUT/appf[-quick]-report/``: ``appf.md`` (also printed), ``appf.json``, ``appf.png`` and the store's standard
    report; a warning for a run whose logged travel disagrees with its checkpoint.  Returns the numbers, the
    markdown and the paths written."""
    quick, budget = plan.options.quick, plan.detail["budget"]
    res = {"runs": numbers["runs"], "pairs": numbers["pairs"]}
    folder = report_dir(plan.sweep)
    text = markdown(res, quick=quick, budget=budget, missing=numbers["missing"])
    fio.write_text(folder / "appf.md", text)
    fio.write_text(folder / "appf.json", json.dumps({"quick": quick, "budget_epochs": budget, **res},
                                                    indent=1, default=str) + "\n")
    figure = draw(res, numbers["results"], numbers["weights"], folder / "appf.png",
                  title=f"App. F: where the solutions end up. {TITLE}{' [quick]' if quick else ''}")
    # the logged travel is the diagnostic's, from the same θ₀: it agrees with the checkpoint unless the files do not
    off = [r for r in res["runs"] if not math.isclose(r["travel"], r["travel_logged"], rel_tol=1e-6, abs_tol=1e-9)]
    notes = [f"warning: {r['method']} seed {r['seed']}: ‖θ_final − θ₀‖ = {r['travel']:.6g} from the checkpoint, "
             f"the last logged travel is {r['travel_logged']:.6g}" for r in off]
    finish_sweep(plan, text, {"figure": figure, "table": folder / "appf.md"}, numbers["failed"], notes)
    return {**res, "markdown": text, "figure": figure, "table": folder / "appf.md", "store": plan.sweep.store,
            "missing": numbers["missing"]}

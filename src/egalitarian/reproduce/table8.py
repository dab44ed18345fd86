"""``egd reproduce table8``: label shuffling, the loss of plasticity (the EGD paper's Table 8, App. E; issue #15).

The paper (Saheb Pasand & Dohmatob, ICLR 2026, arXiv 2510.04930, App. E) runs the label-shuffling protocol of Sokar
et al. 2023 in the setup of Castanyer et al. 2025: a small CNN (3 conv + max-pool + FC + head,
:class:`egalitarian.models.CNN`), EGD with exact SVD whitening of every conv kernel (as the ``out × in·kh·kw``
matrix) and of the FC layer, in front of Adam, RAdam and RMSprop; the measure is the area under the
training-accuracy curve after the labels are reshuffled.  The paper's numbers (CIFAR-10, vanilla → +EGD, in %) are
:data:`PAPER`.  No code was released, so the protocol below is **our interpretation**:

* train K epochs on the true labels (K = 1, 3, 4, 9: the paper's "shuffle at" rows), then reshuffle the training
  labels once: a random permutation of the label vector across the samples, i.e. random labels with the same class
  counts (``train.shuffle_labels_at = [K]``, from a generator of its own: the batch order is the one without the
  shuffle; the test labels are untouched), then train W more epochs (W = :data:`WINDOW` = 10);
* metric: the mean over those W epochs of the per-epoch training accuracy against the current labels, in %
  (``train_eval = "running"``: the mean over each epoch's batches, measured before each step's update), i.e. the
  area under the post-shuffle training-accuracy curve divided by its length (:func:`post_shuffle_auc`).  The later
  the shuffle, the more plasticity is lost, so lower is worse; this matches the paper's decrease down its rows.

The recipe is ``label-shuffle-cnn`` (Fashion-MNIST, the first 5000 training and 1000 test images, channels 16-32-32,
FC 128, batch 128, lr 1e-3 for every method); ``--dataset cifar10`` runs the same on CIFAR-10 (the paper's data,
the ``cifar10`` task, same sizes; the CNN takes its input shape from the task).  The runs are a sweep into
``OUT/table8.sqlite`` (``table8-cifar10.sqlite`` for CIFAR-10; ``-quick`` before ``.sqlite`` with ``--quick``),
resumable like the other tables: rerun the command to continue, more seeds continue the same store.  The analysis
reads the metric rows from the store and writes ``OUT/table8[-cifar10][-quick]-report/``: ``table8.md`` (also
printed: per shuffle setting and base optimizer, "vanilla → +EGD" as mean ± sd over seeds, the paper's beside, and
which data ran), ``table8.json`` (every number, per-seed values and curves), ``table8.png`` (training accuracy per
epoch, one panel per shuffle setting, the shuffle marked) and the standard report of the store.

``--quick`` is a smoke version: 2 seeds, the shuffle at epoch 1 only, Adam and EGD+Adam only, W = 2 and 512 training
images.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import io as fio
from ..config import load_config
from ..errors import ConfigError, check
from ..report import markdown_table
from ..rundir import MetricRow
from ..sweep import Sweep, expand
from ..sweep.spec import group_label
from . import base
from .base import Artifact, Options, Plan, RunResult, chosen_seeds, finish_sweep, load_runs, parse_seeds, report_dir

NAME = "table8"
RECIPE = "label-shuffle-cnn"
SHUFFLE_EPOCHS = (1, 3, 4, 9)
"""The paper's "shuffle at" rows: epochs of training on the true labels before the labels are reshuffled."""
WINDOW = 10
"""Epochs trained after the shuffle; the metric is the mean training accuracy over them (our choice)."""
BASES = ("adam", "radam", "rmsprop")
LABELS = {"adam": "Adam", "radam": "RAdam", "rmsprop": "RMSprop"}
DATASETS = ("fashion-mnist", "cifar10")
N_TRAIN = 5000
N_TEST = 1000
QUICK_SHUFFLE_EPOCHS = (1,)
QUICK_BASES = ("adam",)
QUICK_WINDOW = 2
QUICK_N_TRAIN = 512

PAPER: dict[tuple[int, str], tuple[float, float]] = {
    # (shuffle at epoch, base) -> (vanilla, +EGD): Table 8, CIFAR-10, area under the post-shuffle train-accuracy curve
    (1, "adam"): (43.0, 79.2), (1, "radam"): (40.8, 70.0), (1, "rmsprop"): (60.2, 79.5),
    (3, "adam"): (24.7, 56.0), (3, "radam"): (22.9, 47.3), (3, "rmsprop"): (31.6, 54.7),
    (4, "adam"): (23.0, 44.0), (4, "radam"): (19.8, 23.5), (4, "rmsprop"): (40.1, 45.6),
    (9, "adam"): (14.2, 24.3), (9, "radam"): (13.3, 22.0), (9, "rmsprop"): (14.8, 24.0),
}


def egd_method(base: str) -> str:
    """The recipe table of EGD in front of ``base`` (``egd_adam``, ``egd_radam``, ``egd_rmsprop``)."""
    return f"egd_{base}"


def method_base(method: str) -> tuple[str, bool]:
    """``"egd_radam"`` -> ``("radam", True)``; ``"adam"`` -> ``("adam", False)``."""
    return (method[4:], True) if method.startswith("egd_") else (method, False)


# ------------------------------------------------------------------------------------------------- the sweep


def task_table(dataset: str, quick: bool, recipe_task: dict[str, Any]) -> dict[str, Any]:
    """The ``[task]`` of a dataset: the recipe's (Fashion-MNIST) or the ``cifar10`` task, first ``n_train``
    training and ``n_test`` test images."""
    check(dataset in DATASETS, "--dataset", dataset, f"allowed: {', '.join(DATASETS)}", ConfigError)
    n_train = QUICK_N_TRAIN if quick else N_TRAIN
    if dataset == "cifar10":
        return {"name": "cifar10", "n_train": n_train, "n_test": N_TEST}
    return {**recipe_task, "n_train": n_train, "n_test": N_TEST}


def store_path(root: str | Path, quick: bool, dataset: str = "fashion-mnist") -> Path:
    """``ROOT/table8.sqlite``; ``table8-cifar10.sqlite`` for CIFAR-10; ``-quick`` before ``.sqlite`` with quick."""
    return base.store_path(root, NAME if dataset == DATASETS[0] else f"{NAME}-{dataset}", quick)


def build_sweep(seeds: int | str | Sequence[int], quick: bool, root: str | Path,
                dataset: str = "fashion-mnist") -> Sweep:
    """The sweep: shuffle settings × (each base, EGD + that base) × seeds, from the ``label-shuffle-cnn`` recipe
    with ``train.shuffle_labels_at = [K]`` and ``train.max_epochs = K + W``; each run's params carry
    ``shuffle_at`` = K."""
    chosen = parse_seeds(seeds)
    base = load_config(RECIPE)
    base["task"] = task_table(dataset, quick, base["task"])
    window = QUICK_WINDOW if quick else WINDOW
    runs = []
    for k in QUICK_SHUFFLE_EPOCHS if quick else SHUFFLE_EPOCHS:
        fixed = {"train.shuffle_labels_at": [k], "train.max_epochs": k + window}
        for b in QUICK_BASES if quick else BASES:
            for method in (b, egd_method(b)):
                for r in expand(base, {"seed": chosen}, [{"method": method}], fixed, where=f"reproduce {NAME}"):
                    params = {"shuffle_at": k, **r.params}
                    runs.append(replace(r, params=params, label=group_label(params)))
    return Sweep(name=NAME, store=store_path(root, quick, dataset), baseline=None, runs=runs)


# ------------------------------------------------------------------------------------------ the analysis


def _value(v: float | None) -> float:
    return math.nan if v is None else float(v)


def train_accuracy(rows: Sequence[MetricRow]) -> dict[int, float]:
    """Per completed epoch, the training accuracy logged at its end (``split = "train"``, ``metric = "acc"``; the
    first row of an epoch: a later one with the same epoch count is a partial epoch's, from an early stop); a NaN
    stored as None (the store) reads as NaN."""
    out: dict[int, float] = {}
    for r in rows:
        if r.split == "train" and r.metric == "acc":
            out.setdefault(int(r.epoch), _value(r.value))
    return out


def post_shuffle_auc(rows: Sequence[MetricRow], shuffle_epoch: int, window: int) -> float:
    """The area under the training-accuracy curve after a shuffle at ``shuffle_epoch``, divided by its length, in %.

    The mean of the per-epoch training accuracy (:func:`train_accuracy`) at epochs ``shuffle_epoch + 1`` …
    ``shuffle_epoch + window`` (the rectangle rule: each epoch's accuracy counts for that epoch), times 100.
    NaN when any of those epochs has no row (the run ended before) or a NaN value."""
    check(isinstance(shuffle_epoch, int) and shuffle_epoch >= 0, "shuffle_epoch", shuffle_epoch,
          "must be an integer >= 0")
    check(isinstance(window, int) and window >= 1, "window", window, "must be an integer >= 1")
    acc = train_accuracy(rows)
    values = [acc.get(e, math.nan) for e in range(shuffle_epoch + 1, shuffle_epoch + window + 1)]
    return 100 * math.fsum(values) / window if not any(math.isnan(v) for v in values) else math.nan


def run_numbers(r: RunResult, window: int) -> dict[str, Any]:
    """One finished run: its shuffle setting, method, seed, metric (:func:`post_shuffle_auc`), training accuracy
    (%) in the last epoch before the shuffle, the training-accuracy curve (completed epochs -> %), the summary's
    ``label_shuffles`` and which data ran."""
    k = int(r.params["shuffle_at"])
    acc = train_accuracy(r.rows)
    return {"shuffle_at": k, "method": r.method, "seed": r.seed, "id": r.id, "auc": post_shuffle_auc(r.rows, k, window),
            "before": 100 * acc.get(k, math.nan), "curve": {e: 100 * v for e, v in acc.items()},
            "label_shuffles": list(r.summary.get("label_shuffles", [])), "data": r.summary.get("data")}


def _stats(values: Sequence[float]) -> dict[str, Any]:
    finite = [v for v in values if not math.isnan(v)]
    return {"mean": statistics.fmean(finite) if finite else math.nan,
            "sd": statistics.stdev(finite) if len(finite) > 1 else math.nan, "n": len(finite),
            "values": list(values)}


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """From the runs' numbers (:func:`run_numbers`), per (shuffle setting, base): the vanilla and the +EGD metric
    over seeds (mean, sd, n, the per-seed values), the training accuracy before the shuffle, and the paper's pair;
    the data that ran; shuffles not where planned; and the runs."""
    cells = []
    for k in sorted({r["shuffle_at"] for r in runs}):
        at_k = [r for r in runs if r["shuffle_at"] == k]
        for b in [b for b in BASES if any(method_base(r["method"])[0] == b for r in at_k)]:
            mine = {egd: sorted((r for r in at_k if method_base(r["method"]) == (b, egd)), key=lambda r: r["seed"])
                    for egd in (False, True)}
            cells.append({
                "shuffle_at": k, "base": b,
                **{key: {**_stats([r["auc"] for r in mine[egd]]), "seeds": [r["seed"] for r in mine[egd]],
                         "before": _stats([r["before"] for r in mine[egd]])["mean"]}
                   for key, egd in (("vanilla", False), ("egd", True))},
                "paper": PAPER.get((k, b)),
            })
    off = [f"{r['method']} seed {r['seed']} (shuffle at {r['shuffle_at']}): {r['label_shuffles']}" for r in runs
           if [s.get("epoch") for s in r["label_shuffles"]] != [r["shuffle_at"]]]
    return {"cells": cells, "data": sorted({r["data"] or "?" for r in runs}), "shuffle_mismatch": off,
            "runs": list(runs)}


# ------------------------------------------------------------------------------------------------ the table


def _ms(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "-"
    return f"{s['mean']:.1f}" + (f" ± {s['sd']:.1f}" if s["n"] > 1 else "")


def _f(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.1f}"


COLUMNS = ("shuffle at epoch", "base", "ours: vanilla → +EGD", "paper (CIFAR-10): vanilla → +EGD", "seeds",
           "train acc. before the shuffle: vanilla / +EGD")


def table_rows(res: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in res["cells"]:
        v, e, paper = c["vanilla"], c["egd"], c["paper"]
        seeds = str(v["n"]) if v["n"] == e["n"] else f"{v['n']} / {e['n']}"
        rows.append([str(c["shuffle_at"]), LABELS.get(c["base"], c["base"]), f"{_ms(v)} → {_ms(e)}",
                     f"{paper[0]:.1f} → {paper[1]:.1f}" if paper else "-", seeds,
                     f"{_f(v['before'])} / {_f(e['before'])}"])
    return rows


def markdown(res: dict[str, Any], *, quick: bool, dataset: str, window: int, missing: Sequence[str] = ()) -> str:
    """The table with its caption: the protocol (our interpretation), the data that ran, what is missing."""
    parts = [
        f"# Table 8: label shuffling, small CNN ({dataset}){' [quick]' if quick else ''}",
        "",
        f"Our interpretation of App. E (no code was released): train K epochs on the true labels, reshuffle the "
        f"training labels once (a random permutation of the label vector: random labels, same class counts; the "
        f"batch order is unchanged), train {window} more epochs; the metric is the mean over those {window} epochs "
        "of the per-epoch training accuracy against the current labels (the mean over each epoch's batches), in %: "
        "the area under the post-shuffle training-accuracy curve divided by its length. Higher = more plasticity "
        "kept. Ours: mean ± sd over seeds. EGD: exact SVD whitening of every conv kernel and the FC layer, then the "
        "base optimizer; lr 1e-3 for every method. The paper's numbers are for CIFAR-10"
        + ("." if dataset == "cifar10" else f"; ours are for {dataset}, so only the pattern compares."),
        "",
        markdown_table(COLUMNS, table_rows(res)),
        "",
        "Data: " + ("; ".join(res["data"]) if res["data"] else "-"),
    ]
    if res["shuffle_mismatch"]:
        parts += ["", "**Label shuffles not where planned**: " + "; ".join(res["shuffle_mismatch"])]
    if missing:
        parts += ["", "Not finished (left out): " + "; ".join(missing)]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------ the figure


def draw(res: dict[str, Any], path: str | Path, *, title: str, window: int) -> Path:
    """Training accuracy (%) per epoch, mean over seeds, one panel per shuffle setting (the shuffle a dotted line,
    the metric's window shaded); each base its colour, dashed vanilla, solid +EGD.  A Figure with its own Agg
    canvas (never pyplot's global backend), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    settings = sorted({r["shuffle_at"] for r in res["runs"]}) or [0]
    fig = Figure(figsize=(4.6 * len(settings), 4.2), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(settings), squeeze=False)[0]
    color = {b: f"C{i}" for i, b in enumerate(BASES)}
    for ax, k in zip(axes, settings, strict=True):
        mine = [r for r in res["runs"] if r["shuffle_at"] == k]
        for method in dict.fromkeys(r["method"] for r in mine):
            curves = [r["curve"] for r in mine if r["method"] == method]
            epochs = sorted({int(e) for c in curves for e in c})
            mean = [statistics.fmean([c[e] for c in curves if e in c]) for e in epochs]
            b, egd = method_base(method)
            label = f"{'EGD+' if egd else ''}{LABELS.get(b, b)} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"
            ax.plot(epochs, mean, "-" if egd else "--", color=color.get(b, "C7"), marker="o", ms=3, label=label)
        ax.axvline(k, color="k", ls=":", lw=1)
        ax.axvspan(k + 0.5, k + window + 0.5, color="0.9", zorder=0)
        ax.set(xlabel="epoch (completed)", ylabel="training accuracy (%), current labels", ylim=(0, 100),
               title=f"labels shuffled after epoch {k}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fio.atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path


# ------------------------------------------------------------------------------------------------- the command


def check_data(sweep: Sweep) -> None:
    """Build the task of the sweep's first run, so missing data is one ConfigError before any run starts."""
    from ..build import make_task
    from ..config import section_kwargs

    cfg = sweep.runs[0].config
    make_task(cfg["task"]["name"], **section_kwargs(cfg, "task"))


def plan(artifact: Artifact, options: Options) -> Plan:
    """The sweep (default 3 seeds, 2 with ``--quick``) on ``options.dataset``: ``"fashion-mnist"`` (the recipe's)
    or ``"cifar10"`` (the paper's)."""
    quick, dataset = options.quick, options.dataset or DATASETS[0]
    seeds = chosen_seeds(artifact, options)
    sweep = build_sweep(seeds, quick, options.out, dataset)
    window = QUICK_WINDOW if quick else WINDOW
    settings = QUICK_SHUFFLE_EPOCHS if quick else SHUFFLE_EPOCHS
    n_seeds = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    headline = (f"{NAME}: label shuffling (App. E), small CNN on {dataset}; labels reshuffled after epoch "
                f"{', '.join(map(str, settings))}, then {window} epochs; {len(sweep.runs)} runs ({n_seeds})"
                f"{' [quick]' if quick else ''}")
    return Plan(artifact, options, headline, sweep, {"dataset": dataset, "window": window})


def run(plan: Plan) -> dict[str, int]:
    """Check that the data is there, then train (or continue) the sweep."""
    check_data(plan.sweep)
    return base.run_sweep(plan)


def analyse(plan: Plan, counts: dict[str, int]) -> dict[str, Any]:
    """The finished runs' numbers and the table's cells (:func:`summarise`); the runs not finished (``missing``)."""
    results, missing = load_runs(plan.sweep, lambda p: f"shuffle at {int(p['shuffle_at'])}, {p['method']} seed "
                                                       f"{int(p['seed'])}")
    runs = [run_numbers(r, plan.detail["window"]) for r in results]
    return {**summarise(runs), "missing": missing, "failed": counts.get("failed", 0)}


def write(plan: Plan, numbers: dict[str, Any]) -> dict[str, Any]:
    """``OUT/table8[-cifar10][-quick]-report/``: ``table8.md`` (also printed), ``table8.json``, ``table8.png`` and
    the store's standard report.  Returns the numbers, the markdown and the paths written."""
    quick, dataset, window = plan.options.quick, plan.detail["dataset"], plan.detail["window"]
    res = {k: v for k, v in numbers.items() if k not in ("missing", "failed")}
    folder = report_dir(plan.sweep)
    text = markdown(res, quick=quick, dataset=dataset, window=window, missing=numbers["missing"])
    fio.write_text(folder / "table8.md", text)
    fio.write_text(folder / "table8.json", json.dumps(
        {"quick": quick, "dataset": dataset, "window_epochs": window,
         "paper": {f"{k} {b}": v for (k, b), v in PAPER.items()}, **res}, indent=1, default=str) + "\n")
    figure = draw(res, folder / "table8.png", window=window,
                  title=f"Table 8: label shuffling, small CNN, {dataset}{' [quick]' if quick else ''}")
    finish_sweep(plan, text, {"figure": figure, "table": folder / "table8.md"}, numbers["failed"])
    return {**res, "markdown": text, "figure": figure, "table": folder / "table8.md", "store": plan.sweep.store,
            "missing": numbers["missing"]}

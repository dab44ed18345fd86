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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import io as fio
from .config import load_config
from .errors import ConfigError, check
from .reproduce import parse_seeds
from .rundir import MetricRow
from .sweep import Store, Sweep, expand, run_sweep
from .sweep.spec import group_label

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
DEFAULT_SEEDS = 3
QUICK_SEEDS = 2
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
    tag = "" if dataset == DATASETS[0] else f"-{dataset}"
    return Path(root) / f"{NAME}{tag}{'-quick' if quick else ''}.sqlite"


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


@dataclass(frozen=True)
class RunResult:
    """One finished run of the sweep: its setting, metric and training-accuracy curve (epochs, %)."""

    shuffle_at: int
    method: str
    seed: int
    id: str
    auc: float
    before: float  # training accuracy (%) in the last epoch before the shuffle
    curve: dict[int, float]  # completed epochs -> training accuracy in %
    shuffles: list[dict[str, int]]  # the summary's label_shuffles
    data: str | None

    @property
    def base(self) -> str:
        return method_base(self.method)[0]

    @property
    def egd(self) -> bool:
        return method_base(self.method)[1]


def load_results(store_path: str | Path, sweep: Sweep, window: int) -> tuple[list[RunResult], list[str]]:
    """The finished runs of ``sweep`` (store order) with their metric, and a note for each one not finished."""
    results, missing = [], []
    with Store(store_path, create=False) as store:
        for r in store.runs([x.id for x in sweep.runs]):
            k, method, seed = int(r["params"]["shuffle_at"]), str(r["params"]["method"]), int(r["params"]["seed"])
            if r["status"] != "done":
                missing.append(f"shuffle at {k}, {method} seed {seed}: {r['status']}")
                continue
            rows = store.metrics(r["id"])
            acc = train_accuracy(rows)
            summary = r["summary"] or {}
            results.append(RunResult(k, method, seed, r["id"], post_shuffle_auc(rows, k, window),
                                     100 * acc.get(k, math.nan), {e: 100 * v for e, v in acc.items()},
                                     list(summary.get("label_shuffles", [])), summary.get("data")))
    return results, missing


def _stats(values: Sequence[float]) -> dict[str, Any]:
    finite = [v for v in values if not math.isnan(v)]
    return {"mean": statistics.fmean(finite) if finite else math.nan,
            "sd": statistics.stdev(finite) if len(finite) > 1 else math.nan, "n": len(finite),
            "values": list(values)}


def analyse(results: Sequence[RunResult]) -> dict[str, Any]:
    """Per (shuffle setting, base): the vanilla and the +EGD metric over seeds (mean, sd, n, the per-seed values),
    the training accuracy before the shuffle, and the paper's pair; the data that ran; shuffles not where planned."""
    cells = []
    for k in sorted({r.shuffle_at for r in results}):
        for b in [b for b in BASES if any(r.shuffle_at == k and r.base == b for r in results)]:
            mine = {egd: sorted((r for r in results if r.shuffle_at == k and r.base == b and r.egd == egd),
                                key=lambda r: r.seed) for egd in (False, True)}
            cells.append({
                "shuffle_at": k, "base": b,
                "vanilla": {**_stats([r.auc for r in mine[False]]), "seeds": [r.seed for r in mine[False]],
                            "before": _stats([r.before for r in mine[False]])["mean"]},
                "egd": {**_stats([r.auc for r in mine[True]]), "seeds": [r.seed for r in mine[True]],
                        "before": _stats([r.before for r in mine[True]])["mean"]},
                "paper": PAPER.get((k, b)),
            })
    off = [f"{r.method} seed {r.seed} (shuffle at {r.shuffle_at}): {r.shuffles}" for r in results
           if [s.get("epoch") for s in r.shuffles] != [r.shuffle_at]]
    return {"cells": cells, "data": sorted({r.data or "?" for r in results}), "shuffle_mismatch": off,
            "runs": [{"shuffle_at": r.shuffle_at, "method": r.method, "seed": r.seed, "id": r.id, "auc": r.auc,
                      "before": r.before, "curve": r.curve, "label_shuffles": r.shuffles, "data": r.data}
                     for r in results]}


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
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(res)]
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
        "\n".join(lines),
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
    from .build import make_task
    from .config import section_kwargs

    cfg = sweep.runs[0].config
    make_task(cfg["task"]["name"], **section_kwargs(cfg, "task"))


def table8(quick: bool = False, seeds: int | str | Sequence[int] | None = None, out: str | Path = "reproduce",
           workers: int | None = None, dataset: str = "fashion-mnist") -> dict[str, Any]:
    """``egd reproduce table8``: run (or continue) the sweep, then write and print the table.

    ``seeds``: a count, range or list (:func:`egalitarian.reproduce.parse_seeds`); default 3, 2 with ``quick``.
    ``dataset``: ``"fashion-mnist"`` (the recipe's) or ``"cifar10"`` (the paper's).  Returns the numbers
    (``cells``, ``runs``, ``data``), the markdown and the paths written."""
    chosen = parse_seeds(seeds if seeds is not None else (QUICK_SEEDS if quick else DEFAULT_SEEDS))
    sweep = build_sweep(chosen, quick, out, dataset)
    window = QUICK_WINDOW if quick else WINDOW
    settings = QUICK_SHUFFLE_EPOCHS if quick else SHUFFLE_EPOCHS
    n_seeds = f"{len(chosen)} seed{'s' if len(chosen) > 1 else ''}"
    print(f"{NAME}: label shuffling (App. E), small CNN on {dataset}; labels reshuffled after epoch "
          f"{', '.join(map(str, settings))}, then {window} epochs; {len(sweep.runs)} runs ({n_seeds})"
          f"{' [quick]' if quick else ''}", flush=True)
    check_data(sweep)
    counts = run_sweep(sweep, workers=workers)
    results, missing = load_results(sweep.store, sweep, window)
    if not results:
        raise ConfigError(f"no run of {str(sweep.store)!r} finished ({'; '.join(missing)}): see "
                          f"`egd sweep status {sweep.store}`")
    res = analyse(results)
    report_dir = Path(f"{sweep.store.with_suffix('').as_posix()}-report")
    report_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(res, quick=quick, dataset=dataset, window=window, missing=missing)
    fio.write_text(report_dir / "table8.md", text)
    fio.write_text(report_dir / "table8.json", json.dumps(
        {"quick": quick, "dataset": dataset, "window_epochs": window, "paper": {f"{k} {b}": v for (k, b), v in
                                                                                PAPER.items()}, **res},
        indent=1, default=str) + "\n")
    figure = draw(res, report_dir / "table8.png", window=window,
                  title=f"Table 8: label shuffling, small CNN, {dataset}{' [quick]' if quick else ''}")
    from .report import write_report

    write_report(sweep.store, report_dir)
    print()
    print(text)
    if counts.get("failed"):
        print(f"{counts['failed']} runs failed: see `egd sweep status {sweep.store}`")
    print(f"store: {sweep.store}\nfigure: {figure}\ntable: {report_dir / 'table8.md'}")
    return {**res, "markdown": text, "figure": figure, "table": report_dir / "table8.md", "store": sweep.store,
            "missing": missing}

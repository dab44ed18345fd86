"""``egd reproduce table5``: the EGD paper's Table 5, the per-method average speed-up over the tasks of Tables 2–4.

The paper's definition (Saheb Pasand & Dohmatob, ICLR 2026, arXiv 2510.04930, App. C, "Average Over All Tasks"):
for each problem (the 9 tasks of Tables 2–4: modular addition and multiplication at p = 79, 97, 127, sparse parity
at k = 2, 3, 4) take the best setup of each method (EGD with exact SVD; EGD-rSVD at its best rank for that task;
column normalization), its gain over vanilla SGD (vanilla's epochs, or seconds, to 95% test accuracy divided by
the method's), and average the gains over the tasks (arithmetic mean).  A method that never reaches 95% on a task
is left out of that task's average ("For Column Normalization, Sparse Parity Problem with k = 4 is excluded as
the test accuracy does not increase at all").  Recomputed from the paper's own Tables 2–4 (:data:`PAPER_TASKS`)
this gives 44.8× / 9.9×, 55.7× / 14.7× and 17.0× / 13.2×; the paper prints 44.8× / 9.8×, 55.6× / 14.7× and
16.9× / 13.2× (within 0.1: rounding).

Ours: each time is a Kaplan–Meier median over seeds (:func:`~egalitarian.sweep.stats.km_median`; a run that did
not reach 95% is censored at its budget, so the median is infinite when fewer than half the seeds got there), the
gain is KM(vanilla) / KM(method), and the best rSVD rank is chosen per task and per metric (in the paper's tables
the same rank is best for both).  A (task, method) whose KM median is infinite is left out like the paper's
column-norm k = 4; one whose baseline's is infinite too (no finite ratio) as well.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..report import markdown_table
from ..sweep import Store
from ..sweep.stats import km_median, outcome
from .base import Artifact, Options, Plan, store_path
from .paper_tables import TABLES

SOURCES = ("table2", "table3", "table4")
METRICS = ("epochs", "seconds")
FAMILIES = {"egd": "EGD (SVD)", "rsvd": "EGD-rSVD, best rank per task", "column_norm": "column norm"}
PAPER_TABLE5 = {"egd": (44.8, 9.8), "rsvd": (55.6, 14.7), "column_norm": (16.9, 13.2)}
"""The paper's Table 5: (epochs, wall-clock) average speed-ups."""

Times = Mapping[str, Mapping[str, float]]  # method -> metric -> time to the threshold (inf: never)


def _paper(rows: dict[str, tuple[float, float] | None]) -> dict[str, dict[str, float]]:
    return {m: ({"epochs": v[0], "seconds": v[1]} if v else {"epochs": math.inf, "seconds": math.inf})
            for m, v in rows.items()}


PAPER_TASKS: dict[str, dict[str, dict[str, float]]] = {
    f"mod-{op} p={p}": _paper(dict(zip(("sgd", "egd", "egd_rsvd128", "egd_rsvd64", "column_norm"), row, strict=True)))
    for op, p, row in [
        ("add", 79, ((10099, 133.3), (222, 12.5), (224, 11.1), (397, 14.0), (863, 15.4))),
        ("add", 97, ((5392, 156.9), (116, 10.9), (139, 11.5), (237, 12.2), (328, 10.3))),
        ("add", 127, ((3293, 123.8), (62, 11.4), (76, 10.1), (146, 12.1), (133, 5.9))),
        ("mult", 79, ((10116, 133.5), (221, 11.4), (233, 11.6), (371, 12.9), (814, 13.8))),
        ("mult", 97, ((5715, 115.4), (107, 10.4), (126, 9.9), (233, 12.7), (328, 8.4))),
        ("mult", 127, ((3261, 99.8), (65, 11.9), (74, 9.8), (142, 11.5), (142, 5.8))),
    ]
} | {
    f"parity k={k}": _paper(dict(zip(("sgd", "egd", "egd_rsvd40", "egd_rsvd30", "egd_rsvd20", "egd_rsvd10",
                                        "column_norm"), row, strict=True)))
    for k, row in [
        (2, ((7873, 409.4), (109, 28.3), (42, 9.1), (424, 70.7), (890, 137.5), (2586, 354.5), (520, 40.4))),
        (3, ((1784, 89.4), (115, 36.3), (180, 39.7), (76, 13.5), (99, 15.2), (312, 41.4), (120, 8.8))),
        (4, ((5273, 253.1), (254, 50.5), None, (176, 27.6), (312, 45.5), (1067, 136.5), None)),
    ]
}
"""The paper's Tables 2–4 (epochs, seconds to 95%; None: never), single runs on a T4, by task and method."""


def family(method: str) -> str | None:
    """Which Table 5 row a method belongs to: ``egd``, ``rsvd`` (any ``egd_rsvdN``) or ``column_norm``."""
    if method in ("egd", "column_norm"):
        return method
    return "rsvd" if re.fullmatch(r"egd_rsvd\d+", method) else None


def average(tasks: Mapping[str, Times], baseline: str = "sgd") -> dict[str, dict[str, Any]]:
    """The Table 5 average per family and metric: ``{family: {metric: {"mean", "n", "per_task": [(task, method,
    gain)], "left_out": [(task, why)]}}}``.  ``tasks[task][method][metric]`` is a time to the threshold (inf:
    never); a missing method or metric is "not run"."""
    out: dict[str, dict[str, Any]] = {}
    for fam in FAMILIES:
        out[fam] = {}
        for metric in METRICS:
            per_task, left_out = [], []
            for task, times in tasks.items():
                base = times.get(baseline, {}).get(metric)
                members = {m: t[metric] for m, t in times.items() if family(m) == fam and metric in t}
                if not members:
                    left_out.append((task, "not run"))
                    continue
                if base is None or math.isnan(base):
                    left_out.append((task, "no baseline"))
                    continue
                gains = {m: base / t for m, t in members.items() if math.isfinite(t) and t > 0 and math.isfinite(base)}
                if not gains:
                    why = "never reached" if all(math.isinf(t) for t in members.values()) else "baseline never reached"
                    left_out.append((task, why))
                    continue
                best = max(gains, key=gains.__getitem__)
                per_task.append((task, best, gains[best]))
            mean = sum(g for _, _, g in per_task) / len(per_task) if per_task else math.nan
            out[fam][metric] = {"mean": mean, "n": len(per_task), "per_task": per_task, "left_out": left_out}
    return out


def tasks_from_store(path: str | Path, name: str) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, int]]:
    """Per task (``"NAME SETTING"``) and method, the Kaplan–Meier median epochs and seconds over the store's finished
    runs; and the store's run counts (done, not done)."""
    with Store(path, create=False) as store:
        runs = store.runs()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    counts = {"done": 0, "not done": 0}
    for r in runs:
        if r["status"] != "done":
            counts["not done"] += 1
            continue
        counts["done"] += 1
        key = (str(r["params"].get("setting", "")), str(r["params"].get("method", "")))
        groups.setdefault(key, []).append(r["summary"] or {})
    tasks: dict[str, dict[str, dict[str, float]]] = {}
    for (setting, method), summaries in groups.items():
        times = {}
        for metric in METRICS:
            t, e = zip(*[outcome(s, metric) for s in summaries], strict=True)
            times[metric] = km_median(t, e)
        tasks.setdefault(f"{name} {setting}".strip(), {})[method] = times
    return tasks, counts


def _x(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.1f}×"


def format_table5(ours: dict[str, dict[str, Any]], paper: dict[str, dict[str, Any]]) -> str:
    """The summary table: ours (tasks averaged), the paper's Table 5, and the paper's Tables 2–4 averaged by the
    same code."""
    header = ["method", "epochs: ours (tasks)", "paper", "paper's Tables 2–4, recomputed", "wall-clock: ours (tasks)",
              "paper", "paper's Tables 2–4, recomputed"]
    rows = []
    for fam, label in FAMILIES.items():
        cells = [label]
        for i, metric in enumerate(METRICS):
            o, p = ours[fam][metric], paper[fam][metric]
            cells += [f"{_x(o['mean'])} ({o['n']})", f"{PAPER_TABLE5[fam][i]}×", f"{_x(p['mean'])} ({p['n']})"]
        rows.append(cells)
    return markdown_table(header, rows)


def format_per_task(ours: dict[str, dict[str, Any]]) -> str:
    """Per task: the best method of each family and its gain, epochs and seconds."""
    tasks = list(dict.fromkeys(t for fam in ours.values() for m in fam.values()
                               for t in [*(x[0] for x in m["per_task"]), *(x[0] for x in m["left_out"])]))
    rows = []
    for task in tasks:
        cells = [task]
        for fam in FAMILIES:
            parts = []
            for metric in METRICS:
                m = ours[fam][metric]
                hit = next((x for x in m["per_task"] if x[0] == task), None)
                why = next((w for t, w in m["left_out"] if t == task), "-")
                parts.append(f"{hit[2]:.1f}× ({hit[1]})" if hit else why)
            cells.append(" / ".join(parts))
        rows.append(cells)
    return markdown_table(["task", *(f"{FAMILIES[f]}: epochs / s" for f in FAMILIES)], rows)


def plan(artifact: Artifact, options: Options) -> Plan:
    """Which of ``OUT/table2.sqlite``, ``table3``, ``table4`` exist (``--quick``: the ``-quick`` stores), and how to
    make the missing ones; a ConfigError when none exists."""
    root, quick = Path(options.out), options.quick
    paths = {name: store_path(root, name, quick) for name in SOURCES}
    found = {name: path for name, path in paths.items() if path.is_file()}
    missing = [name for name in SOURCES if name not in found]
    how = "; ".join(f"{paths[n]}: `egd reproduce {n} {'--quick' if quick else '--seeds 5'}"
                    f"{'' if str(root) == 'reproduce' else f' --out {root}'}`" for n in missing)
    if not found:
        raise ConfigError(f"--out = {str(root)!r}: no results store of {', '.join(SOURCES)} in it; make them with: "
                          f"{how}")
    headline = f"table5: the paper's Table 5 (average speed-up over tasks){' [quick]' if quick else ''}"
    return Plan(artifact, options, headline, detail={"found": found, "missing": missing, "how": how})


def run(plan: Plan) -> dict[str, Times]:
    """Nothing to train: read the stores found (saying what each holds), every task's baseline named ``sgd``."""
    tasks: dict[str, dict[str, dict[str, float]]] = {}
    for name, path in plan.detail["found"].items():
        t, counts = tasks_from_store(path, name)
        baseline = TABLES[name].baseline
        if baseline != "sgd":  # every task's baseline under one name
            t = {k: {("sgd" if m == baseline else m): v for m, v in ms.items()} for k, ms in t.items()}
        tasks |= t
        note = f", {counts['not done']} not finished (not counted)" if counts["not done"] else ""
        print(f"  {path}: {len(t)} tasks, {counts['done']} finished runs{note}")
    if plan.detail["missing"]:
        print(f"  missing, so left out: {plan.detail['how']}")
    return tasks


def analyse(plan: Plan, tasks: dict[str, Times]) -> dict[str, Any]:
    """The averages of ours and of the paper's Tables 2–4 (:func:`average`), the stores found and missing."""
    return {"ours": average(tasks), "paper": average(PAPER_TASKS),
            "found": {k: str(v) for k, v in plan.detail["found"].items()}, "missing": plan.detail["missing"]}


def write(plan: Plan, numbers: dict[str, Any]) -> dict[str, Any]:
    """Print the two tables (:func:`format_table5`, :func:`format_per_task`); nothing is written."""
    print("\nspeed-up over vanilla SGD, averaged over tasks: per task the best setup of each method (rSVD: best rank "
          "per task and metric), gain = KM median time of SGD / of the method, arithmetic mean over the tasks where "
          "the method reached 95% (paper: App. C, Table 5)\n")
    print(format_table5(numbers["ours"], numbers["paper"]))
    print("\nper task (gain, the setup chosen; 'never reached': KM median infinite, left out)\n")
    print(format_per_task(numbers["ours"]))
    return numbers

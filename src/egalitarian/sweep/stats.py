"""Statistics per group of runs (runs that differ only by seed), tables, CSV and JSON export.

Per group: n (runs in the store), done/failed/pending, the success rate (grokked within the budget, over
finished runs), and for steps, epochs and seconds to grok:

* over the runs that grokked: the median, the quartiles (IQR), and a 95% percentile-bootstrap CI of the
  median (2000 resamples, fixed seed, so reports are reproducible);
* over **all** finished runs, the Kaplan–Meier median (:func:`km_median`): a run that did not grok is
  *censored* at the point it stopped (its budget), not dropped, so a group where 3 of 5 seeds grok at 125,
  300 and 700 and 2 stop at 1000 has a median of 700, not 300.  A run stopped by a non-finite loss is
  censored at infinity (it would never grok).  When fewer than half the runs grok the median is infinite
  ("> budget").  Its CI resamples runs (bootstrap of the KM median).

The speed-up of a group against its baseline group is the ratio of Kaplan–Meier medians
``km(baseline) / km(group)`` (> 1: faster), with a CI from resampling both groups independently; without
censored runs it is the ratio of ordinary medians.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .spec import SEED_FIELDS, distinct_labels, matches, parse_spec

METRICS = ("epochs", "steps", "seconds")
_EVENT_KEY = {"epochs": "epoch", "steps": "step", "seconds": "seconds"}


def quartiles(x: Sequence[float]) -> tuple[float, float, float]:
    """(median, 25th, 75th percentile), linear interpolation between order statistics (numpy's default)."""
    q50, q25, q75 = np.percentile(np.asarray(x, dtype=float), [50, 25, 75])
    return float(q50), float(q25), float(q75)


def bootstrap_ci(
    x: Sequence[float],
    stat: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of ``stat`` (default: the median) over ``n_boot`` resamples of ``x``."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap of an empty sample")
    stat = stat or (lambda s: np.median(s, axis=-1))
    rng = np.random.default_rng(seed)
    values = stat(x[rng.integers(0, x.size, size=(n_boot, x.size))])
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def ratio_ci(
    num: Sequence[float], den: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap CI of ``median(num) / median(den)``, each sample resampled independently."""
    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    rng = np.random.default_rng(seed)
    ma = np.median(a[rng.integers(0, a.size, size=(n_boot, a.size))], axis=1)
    mb = np.median(b[rng.integers(0, b.size, size=(n_boot, b.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = np.percentile(ma / mb, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def km_curve(times: Sequence[float], events: Sequence[bool]) -> list[tuple[float, float]]:
    """The Kaplan–Meier survival curve ``[(t, S(t)), ...]`` at each event time, ``S`` the fraction of runs
    that have not grokked by ``t``.  ``events[i]`` False means run i was censored at ``times[i]`` (it did not
    grok by then; it may later).  At a tie, events count before censorings (the usual convention)."""
    at_risk, s, out = len(times), 1.0, []
    for t in sorted(set(times)):
        d = sum(1 for u, e in zip(times, events, strict=True) if u == t and e)
        if d:
            s *= 1 - d / at_risk
            out.append((float(t), s))
        at_risk -= sum(1 for u in times if u == t)
    return out


def km_median(times: Sequence[float], events: Sequence[bool]) -> float:
    """The Kaplan–Meier median: the first time at which ``S(t) ≤ 1/2``; ``inf`` if it never gets there.

    When ``S`` equals 1/2 exactly on an interval (e.g. 2 of 4 uncensored runs), the median is the middle of
    that interval, as in R's ``survfit``; without censoring this is the ordinary sample median.  When it stays
    at 1/2 to the end (no later event), the median is not reached: ``inf``.
    """
    curve = km_curve(times, events)
    for j, (t, s) in enumerate(curve):
        if s <= 0.5 + 1e-12:
            if abs(s - 0.5) <= 1e-12:
                later = [u for u, _ in curve[j + 1 :] if u > t]
                return (t + later[0]) / 2 if later else math.inf
            return t
    return math.inf


def _km_boot(times: np.ndarray, events: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """KM medians of the resamples ``idx`` (n_boot, n): vectorised when nothing is censored."""
    if events.all():
        return np.median(times[idx], axis=1)
    return np.array([km_median(times[row], events[row]) for row in idx])


def km_ci(
    times: Sequence[float], events: Sequence[bool], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the Kaplan–Meier median (runs resampled; bounds may be ``inf``)."""
    t, e = np.asarray(times, dtype=float), np.asarray(events, dtype=bool)
    if t.size == 0:
        raise ValueError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    values = _km_boot(t, e, rng.integers(0, t.size, size=(n_boot, t.size)))
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)], method="lower" if np.isinf(values).any()
                           else "linear")
    return float(lo), float(hi)


def km_ratio_ci(
    num: tuple[Sequence[float], Sequence[bool]], den: tuple[Sequence[float], Sequence[bool]], *,
    n_boot: int = 2000, level: float = 0.95, seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of ``km_median(num) / km_median(den)``, each group resampled independently."""
    ta, ea = np.asarray(num[0], dtype=float), np.asarray(num[1], dtype=bool)
    tb, eb = np.asarray(den[0], dtype=float), np.asarray(den[1], dtype=bool)
    rng = np.random.default_rng(seed)
    ma = _km_boot(ta, ea, rng.integers(0, ta.size, size=(n_boot, ta.size)))
    mb = _km_boot(tb, eb, rng.integers(0, tb.size, size=(n_boot, tb.size)))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = ma / mb
    r = r[~np.isnan(r)]
    if r.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(r, [50 * (1 - level), 50 * (1 + level)], method="lower" if np.isinf(r).any() else "linear")
    return float(lo), float(hi)


def outcome(summary: dict[str, Any], metric: str) -> tuple[float, bool]:
    """A finished run's (time, grokked) for ``metric``: the grokking event's steps/epochs/seconds, or the point
    it stopped at (censored), or ``inf`` for a run stopped by a non-finite loss (it would never grok)."""
    if summary.get("grokked") and summary.get("grok"):
        return float(summary["grok"][_EVENT_KEY[metric]]), True
    if summary.get("status") == "nonfinite":
        return math.inf, False
    return float(summary.get(metric) or 0.0), False


def loss_curve(rows: Sequence[Sequence[Any]], split: str = "test") -> list[tuple[int, float]]:
    """``[(step, loss), ...]`` of one run's ``split`` from its metric rows ``(step, epoch, split, metric, value)``
    (:meth:`egalitarian.sweep.Store.metrics`), in training order; a NaN loss (stored as NULL) reads as NaN."""
    return [(int(r[0]), math.nan if r[4] is None else float(r[4])) for r in rows if r[2] == split and r[3] == "loss"]


def loss_outcome(rows: Sequence[Sequence[Any]], target: float, *, nonfinite: bool = False,
                 split: str = "test") -> tuple[float, bool]:
    """A finished run's (steps, reached) for "steps to a target loss": the first evaluation step at which the
    ``split`` loss is ``<= target``, or the last evaluated step, censored (``False``); a run stopped by a
    non-finite loss (``nonfinite``) that never reached the target, or one without evaluations: ``inf``.  The
    Kaplan–Meier median of these pairs (:func:`km_median`) is the "steps to the target" of a group."""
    curve = loss_curve(rows, split)
    hit = next((step for step, loss in curve if loss <= target), None)
    if hit is not None:
        return float(hit), True
    return (math.inf if nonfinite or not curve else float(curve[-1][0])), False


def _ratio(a: float, b: float) -> float:
    if math.isinf(a) and math.isinf(b):
        return math.nan
    return a / b if b else math.inf


def pick_baselines(groups: list[dict[str, Any]], spec: str | None) -> dict[str, str | None]:
    """For each group id, the group id of its baseline (None when there is none or it is ambiguous).

    The spec names fields of the group label (``"method=sgd"``, or a whole label). When it matches one group,
    that group is everyone's baseline; when it matches several (e.g. one per learning rate), each group is
    compared with the matching group that agrees with it on every other field.
    """
    if not spec:
        return {g["group"]: None for g in groups}
    want = parse_spec(spec) if spec != "(all)" else {}
    hits = [g for g in groups if matches(g["params"], want)]
    if not hits:
        labels = "; ".join(g["label"] for g in groups)
        raise ConfigError(f"baseline = {spec!r}: matches no group; groups: {labels}")
    out = {}
    for g in groups:
        if len(hits) == 1:
            out[g["group"]] = hits[0]["group"]
            continue
        rest = {k: v for k, v in g["params"].items() if k not in want}
        same = [h for h in hits if {k: v for k, v in h["params"].items() if k not in want} == rest]
        out[g["group"]] = same[0]["group"] if len(same) == 1 else None
    return out


def machine(summary: dict[str, Any]) -> str:
    """What a run's seconds were measured on, from its summary: ``"cpu, 2 threads"`` (device and thread count;
    seconds of different ones are never pooled)."""
    threads = summary.get("threads")
    return f"{summary.get('device', 'device unknown')}, {threads} thread{'' if threads == 1 else 's'}"


def group_stats(
    runs: list[dict[str, Any]], baseline: str | None = None, *, n_boot: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """Statistics per group of store rows (see :meth:`egalitarian.sweep.Store.runs`), groups in order of first
    appearance."""
    groups: dict[str, dict[str, Any]] = {}
    labels = distinct_labels(runs)  # two groups never share a label (a sweep file's budget edited between runs)
    for r in runs:
        g = groups.setdefault(
            r["group_key"],
            {
                "group": r["group_key"],
                "label": labels[r["group_key"]],
                "params": {k: v for k, v in r["params"].items() if k not in SEED_FIELDS},
                "runs": [],
            },
        )
        g["runs"].append(r)
    out = []
    for g in groups.values():
        rs = g.pop("runs")
        status = {s: sum(r["status"] == s for r in rs) for s in ("done", "failed", "running", "pending")}
        done = [r["summary"] for r in rs if r["status"] == "done"]
        grokked = [s for s in done if s.get("grokked") and s.get("grok")]
        g.update(n=len(rs), **status, grokked=len(grokked), censored=len(done) - len(grokked))
        g["success_rate"] = len(grokked) / len(done) if done else None
        g["samples"] = {m: [float(s["grok"][_EVENT_KEY[m]]) for s in grokked] for m in METRICS}
        g["outcomes"] = {m: tuple(zip(*[outcome(s, m) for s in done], strict=True)) or ((), ()) for m in METRICS}
        g["km"] = {}
        for m in METRICS:
            x = g["samples"][m]
            if x:
                med, q25, q75 = quartiles(x)
                ci = bootstrap_ci(x, n_boot=n_boot, seed=seed)
                g[m] = {"median": med, "q25": q25, "q75": q75, "iqr": q75 - q25, "ci": list(ci)}
            else:
                g[m] = None
            times, events = g["outcomes"][m]
            g["km"][m] = {
                "median": km_median(times, events), "ci": list(km_ci(times, events, n_boot=n_boot, seed=seed)),
                "censored": len(times) - sum(events),
            } if times else None
        kinds = sorted({machine(s) for s in done})
        if len(kinds) > 1:  # seconds measured with different devices or thread counts are not one sample
            g["mixed"], g["seconds"], g["km"]["seconds"] = kinds, None, None
        out.append(g)
    base_of = pick_baselines(out, baseline)
    by_id = {g["group"]: g for g in out}
    for g in out:
        b = by_id.get(base_of[g["group"]]) if base_of[g["group"]] else None
        g["baseline"] = b["label"] if b else None
        g["is_baseline"] = b is g
        g["speedup"] = {}
        for m in METRICS:
            gk, bk = g["km"][m], (b["km"][m] if b else None)
            if bk is None or gk is None or (math.isinf(gk["median"]) and math.isinf(bk["median"])):
                g["speedup"][m] = None
                continue
            ci = km_ratio_ci(b["outcomes"][m], g["outcomes"][m], n_boot=n_boot, seed=seed)
            g["speedup"][m] = {"ratio": _ratio(bk["median"], gk["median"]), "ci": list(ci)}
    for g in out:
        g.pop("samples")
        g.pop("outcomes")
    return out


# ------------------------------------------------------------------------------------------------- output


def _num(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if math.isinf(x) or math.isnan(x):
        return str(x)
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e9 else f"{x:.{digits}g}"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = []
    for row in [header, *rows]:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in pairs]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def km_cell(k: dict[str, Any] | None, digits: int = 4) -> str:
    """A Kaplan–Meier summary ``{"median": m, "ci": [lo, hi]}`` as one table cell ``m [lo, hi]``, numbers to
    ``digits`` significant figures; an infinite median (fewer than half the runs crossed) reads ``> budget``,
    an infinite upper bound ``inf``; no summary reads ``-``."""
    if not k:
        return "-"
    med, (lo, hi) = k["median"], k["ci"]
    text = "> budget" if math.isinf(med) else _num(med, digits)
    return f"{text} [{_num(lo, digits)}, {'inf' if math.isinf(hi) else _num(hi, digits)}]"


def stats_table(groups: list[dict[str, Any]], metric: str = "epochs") -> str:
    """The per-group table printed by ``egd sweep status`` and ``egd results``."""
    if metric not in METRICS:
        raise ConfigError(f"--metric {metric!r}: allowed: {', '.join(METRICS)}")
    unit = {"epochs": "epochs", "steps": "steps", "seconds": "s"}[metric]
    header = [
        "group",
        "n",
        "done",
        "failed",
        "grokked",
        f"KM median {unit} [95% CI]",
        "median of grokked",
        "IQR",
        "KM median s",
        "speed-up [95% CI]",
    ]
    rows = []
    for g in groups:
        st, sp = g[metric], g["speedup"][metric]
        rate = f"{g['grokked']}/{g['done']}" if g["done"] else "-"
        iqr = f"{_num(st['q25'])}-{_num(st['q75'])}" if st else "-"
        if g["is_baseline"]:
            speed = "(baseline)"
        elif sp:
            speed = f"{sp['ratio']:.2f} [{sp['ci'][0]:.2f}, {sp['ci'][1]:.2f}]"
        else:
            speed = "-"
        ks = g["km"]["seconds"]
        km_s = "-" if not ks else ("> budget" if math.isinf(ks["median"]) else _num(ks["median"], 3))
        rows.append([g["label"], g["n"], g["done"], g["failed"], rate, km_cell(g["km"][metric]),
                     _num(st["median"]) if st else "-", iqr, km_s, speed])
    mixed = [f"{g['label']} ({'; '.join(g['mixed'])})" for g in groups if g.get("mixed")]
    note = f"\nseconds left out where a group's runs ran on different devices or thread counts: {'; '.join(mixed)}"
    return format_table(header, rows) + (note if mixed else "")


def best_by(groups: list[dict[str, Any]], field: str, metric: str = "steps") -> list[dict[str, Any]]:
    """For each value of ``field`` (e.g. ``method``) among the groups' params, the group with the smallest
    Kaplan–Meier median ``metric`` (ties: higher success rate, then first seen); groups without the field are
    left out.  Order: best first."""
    best: dict[Any, dict[str, Any]] = {}
    for g in groups:
        if field not in g["params"] or not g["km"][metric]:
            continue
        key = json.dumps(g["params"][field], sort_keys=True)
        rank = (g["km"][metric]["median"], -(g["success_rate"] or 0.0))
        if key not in best or rank < best[key][0]:
            best[key] = (rank, g)
    if not best and groups:
        fields = sorted({k for g in groups for k in g["params"]})
        raise ConfigError(f"--best-by {field!r}: no group varies it; fields: {', '.join(fields) or 'none'}")
    return [g for _, g in sorted(best.values(), key=lambda x: x[0])]


def finite_json(x: Any) -> Any:
    """``x`` with every NaN or ±inf float replaced by None, recursively through dicts and lists, so that it
    can be written as strict JSON (which has neither).  Dicts and lists are rebuilt; ``x`` is not changed."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite_json(v) for v in x]
    return x


def csv_rows(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per group: counts, then median/q25/q75/ci_lo/ci_hi and speed-up columns per metric."""
    out = []
    for g in groups:
        row = {"group": g["label"], "group_key": g["group"]}
        row.update({k: g[k] for k in ("n", "done", "failed", "running", "pending", "grokked", "censored")})
        row["success_rate"] = g["success_rate"]
        row["baseline"] = g["baseline"]
        for m in METRICS:
            st, sp, km = g[m] or {}, g["speedup"][m] or {}, g["km"][m] or {}
            kci = km.get("ci") or [None, None]
            row.update({f"{m}_km_median": km.get("median"), f"{m}_km_ci_lo": kci[0], f"{m}_km_ci_hi": kci[1]})
            row.update({f"{m}_median": st.get("median"), f"{m}_q25": st.get("q25"), f"{m}_q75": st.get("q75")})
            ci, sci = st.get("ci") or [None, None], sp.get("ci") or [None, None]
            row.update({f"{m}_ci_lo": ci[0], f"{m}_ci_hi": ci[1]})
            row.update({f"speedup_{m}": sp.get("ratio"), f"speedup_{m}_ci_lo": sci[0], f"speedup_{m}_ci_hi": sci[1]})
        out.append(row)
    return out


def write_csv(path: str | Path, groups: list[dict[str, Any]]) -> None:
    """The group statistics as CSV (one row per group, see ``csv_rows``), written atomically."""
    from .. import io as fio

    rows = csv_rows(groups)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["group"], lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    fio.write_text(path, text.getvalue())


def write_json(path: str | Path, report: dict[str, Any]) -> None:
    """A report (groups, runs, ...) as strict JSON (NaN and inf become null), written atomically."""
    from .. import io as fio

    fio.write_text(path, json.dumps(finite_json(report), indent=2, allow_nan=False) + "\n")


def run_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-run part of a JSON report: id, group, params, status, attempts, summary, error."""
    keys = ("id", "label", "group_key", "params", "status", "attempts", "worker", "started", "finished", "error")
    return [{k: r[k] for k in keys} | {"summary": r["summary"]} for r in runs]


__all__ = [
    "METRICS",
    "best_by",
    "bootstrap_ci",
    "format_table",
    "group_stats",
    "km_ci",
    "km_curve",
    "km_median",
    "km_ratio_ci",
    "loss_curve",
    "loss_outcome",
    "outcome",
    "parse_spec",
    "pick_baselines",
    "quartiles",
    "ratio_ci",
    "stats_table",
    "write_csv",
    "write_json",
]

"""Statistics per group of runs (runs that differ only by seed), tables, CSV and JSON export.

Per group: n (runs in the store), done/failed/pending, the success rate (grokked within the budget, over
finished runs), and for steps, epochs and seconds to grok, over the runs that grokked: the median, the
quartiles (IQR), and a 95% percentile-bootstrap CI of the median (2000 resamples, fixed seed, so reports
are reproducible). Runs that finished without grokking are *censored*: they are counted, not timed, so the
median is that of the successful runs only. The speed-up of a group against its baseline group is the
ratio of medians ``median(baseline) / median(group)`` (> 1: faster), with a CI from resampling both groups
independently.
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
from .spec import SEED_FIELDS, matches, parse_spec

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


def _ratio(a: float, b: float) -> float:
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


def group_stats(
    runs: list[dict[str, Any]], baseline: str | None = None, *, n_boot: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """Statistics per group of store rows (see :meth:`Store.runs`), groups in order of first appearance."""
    groups: dict[str, dict[str, Any]] = {}
    for r in runs:
        g = groups.setdefault(
            r["group_key"],
            {
                "group": r["group_key"],
                "label": r["label"],
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
        for m in METRICS:
            x = g["samples"][m]
            if x:
                med, q25, q75 = quartiles(x)
                ci = bootstrap_ci(x, n_boot=n_boot, seed=seed)
                g[m] = {"median": med, "q25": q25, "q75": q75, "iqr": q75 - q25, "ci": list(ci)}
            else:
                g[m] = None
        out.append(g)
    base_of = pick_baselines(out, baseline)
    by_id = {g["group"]: g for g in out}
    for g in out:
        b = by_id.get(base_of[g["group"]]) if base_of[g["group"]] else None
        g["baseline"] = b["label"] if b else None
        g["is_baseline"] = b is g
        g["speedup"] = {}
        for m in METRICS:
            if b is None or g[m] is None or b[m] is None:
                g["speedup"][m] = None
                continue
            ci = ratio_ci(b["samples"][m], g["samples"][m], n_boot=n_boot, seed=seed)
            g["speedup"][m] = {"ratio": _ratio(b[m]["median"], g[m]["median"]), "ci": list(ci)}
    for g in out:
        g.pop("samples")
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
        f"median {unit} [95% CI]",
        "IQR",
        "median s",
        "speed-up [95% CI]",
    ]
    rows = []
    for g in groups:
        st, sec, sp = g[metric], g["seconds"], g["speedup"][metric]
        rate = f"{g['grokked']}/{g['done']}" if g["done"] else "-"
        med = f"{_num(st['median'])} [{_num(st['ci'][0])}, {_num(st['ci'][1])}]" if st else "-"
        iqr = f"{_num(st['q25'])}-{_num(st['q75'])}" if st else "-"
        if g["is_baseline"]:
            speed = "(baseline)"
        elif sp:
            speed = f"{sp['ratio']:.2f} [{sp['ci'][0]:.2f}, {sp['ci'][1]:.2f}]"
        else:
            speed = "-"
        rows.append(
            [g["label"], g["n"], g["done"], g["failed"], rate, med, iqr, _num(sec["median"], 3) if sec else "-", speed]
        )
    return format_table(header, rows)


def _finite(x: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON has neither)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
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
            st, sp = g[m] or {}, g["speedup"][m] or {}
            row.update({f"{m}_median": st.get("median"), f"{m}_q25": st.get("q25"), f"{m}_q75": st.get("q75")})
            ci, sci = st.get("ci") or [None, None], sp.get("ci") or [None, None]
            row.update({f"{m}_ci_lo": ci[0], f"{m}_ci_hi": ci[1]})
            row.update({f"speedup_{m}": sp.get("ratio"), f"speedup_{m}_ci_lo": sci[0], f"speedup_{m}_ci_hi": sci[1]})
        out.append(row)
    return out


def write_csv(path: str | Path, groups: list[dict[str, Any]]) -> None:
    """The group statistics as CSV (one row per group, see :func:`csv_rows`), written atomically."""
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

    fio.write_text(path, json.dumps(_finite(report), indent=2, allow_nan=False) + "\n")


def run_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-run part of a JSON report: id, group, params, status, attempts, summary, error."""
    keys = ("id", "label", "group_key", "params", "status", "attempts", "worker", "started", "finished", "error")
    return [{k: r[k] for k in keys} | {"summary": r["summary"]} for r in runs]


__all__ = [
    "METRICS",
    "bootstrap_ci",
    "format_table",
    "group_stats",
    "parse_spec",
    "pick_baselines",
    "quartiles",
    "ratio_ci",
    "stats_table",
    "write_csv",
    "write_json",
]

"""Performance profiles across tasks, and how precisely a time to threshold is known.

**Performance profiles** (Dolan & Moré, "Benchmarking optimization software with performance profiles",
Math. Programming 91, 2002, arXiv:cs/0102001), scored as AlgoPerf does (MLCommons ``algorithmic-efficiency``,
docs/DOCUMENTATION.md, "AlgoPerf Benchmark Score via Integrated Performance Profiles"; code:
``scoring/performance_profile.py`` and ``scoring/score_submissions.py``, as of 2025-09). The input is a table
``{task: {method: t}}`` with ``t`` a time to target (steps here), smaller is better; ``math.inf``: the method was
run and never reached the target; ``None`` or NaN (or the method missing from the task): not run.

* :func:`ratios`: ``r[t][m] = t_{t,m} / min_m' t_{t,m'}`` (min over the methods that were run); ``inf`` for a
  method that failed, NaN for one not run.  A task that no method solved has no finite best: it is reported
  in ``unsolved`` and left out of everything below.  (AlgoPerf keeps such a workload in its denominator, where
  it scores 0 for everyone; leaving it out multiplies every method's score by the same factor ``n / (n - 1)``
  and changes no ranking.)
* :func:`performance_profile`: ``rho_m(tau) = |{t : r[t][m] <= tau}| / n``, ``n`` the number of solved tasks
  (a method not run on a task counts as failing it; ``not_run="exclude"`` instead takes ``n`` over the solved
  tasks the method was run on).  ``rho_m(1)`` is the fraction of tasks the method wins (ties count for all of
  the tied methods).
* :func:`profile_score`: AlgoPerf's benchmark score ``B_m = 1/(r_max - 1) * integral_1^r_max rho_m(tau) dtau``
  with ``r_max = 4`` (linear tau, as in the documentation's formula and ``score_submissions.py``:
  ``min_tau=1.0, max_tau=4.0, scale='linear'``, normalised by the tau range).  ``B`` is in [0, 1]; 1 means
  fastest on every task, and a method more than 4x slower than the best on a task earns nothing there.
  ``scale="log"`` gives the alternative ``1/ln r_max * integral rho_m d(ln tau)`` (the area under a profile
  drawn on a log axis, Dolan & Moré's usual plot).  Both are computed **exactly**: ``rho_m`` is a step
  function, so ``B_m`` is the mean over tasks of the credit ``(r_max - r)/(r_max - 1)`` (log: ``1 - ln r /
  ln r_max``), clipped at 0.  AlgoPerf's code integrates with ``np.trapz`` over 100 evenly spaced tau, which
  is off by at most half a grid step per task: ``1/198 ≈ 0.005`` in ``B`` for ``r_max = 4``, divided by ``n``.

**Resolution.**  A run is evaluated at some steps only, so "the first evaluation with test accuracy >=
threshold" (the trainer's grokking event, :mod:`egalitarian.grokking`) at step ``s`` after the previous
evaluation at ``p`` says only that the true crossing lies in ``(p, s]``: :func:`first_at_or_above` returns that
bracket, :func:`relative_resolution` its width over ``s``.  :func:`is_tie` flags two medians that differ by less
than the larger of their resolutions, and :func:`cadence` is the evaluation interval that resolves a crossing
to a relative width ``rel`` (2 % by default) once the last evaluation below the threshold is known.

Pure functions of numbers; numpy-free and torch-free (stdlib only).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

#: AlgoPerf's upper integration limit r_max (DOCUMENTATION.md: "will be set to r_max = 4").
TAU_MAX = 4.0
#: Default tau columns of a profile table.
DEFAULT_TAUS = (1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0)
#: The relative resolution asked of a time to threshold (issue #28: "within 2%").
REL_RESOLUTION = 0.02

_EPS = 1e-12  # relative slack in r <= tau, so that e.g. 162/90 counts as <= 1.8

Table = Mapping[str, Mapping[str, float | None]]


# ------------------------------------------------------------------------------------- performance profiles


def _value(x: Any) -> float:
    """A table cell as a float: NaN for not run (None/NaN), inf for failed, else a positive number."""
    if x is None:
        return math.nan
    v = float(x)
    if not math.isnan(v) and v <= 0:
        raise ValueError(f"a time to target must be positive (or inf: failed, None/NaN: not run), got {x!r}")
    return v


def methods_of(table: Table) -> list[str]:
    """The methods of a table, in order of first appearance over its tasks."""
    return list(dict.fromkeys(m for row in table.values() for m in row))


class Ratios(NamedTuple):
    """Performance ratios ``{task: {method: r}}`` of the solved tasks, and the tasks no method solved."""

    ratios: dict[str, dict[str, float]]
    unsolved: list[str]


def ratios(table: Table) -> Ratios:
    """Dolan–Moré performance ratios: ``r[t][m] = t[t][m] / min over methods of t[t]`` (>= 1; the winner's is
    exactly 1), ``inf`` where the method failed, NaN where it was not run (or is missing from the task's row).
    Tasks where no method reached the target (no finite value) go to ``unsolved``, in table order."""
    names = methods_of(table)
    out: dict[str, dict[str, float]] = {}
    unsolved = []
    for task, row in table.items():
        vals = {m: _value(row.get(m)) for m in names}
        finite = [v for v in vals.values() if math.isfinite(v)]
        if not finite:
            unsolved.append(task)
            continue
        best = min(finite)
        out[task] = {m: (v if math.isnan(v) else v / best) for m, v in vals.items()}
    return Ratios(out, unsolved)


def _check_not_run(not_run: str) -> None:
    if not_run not in ("fail", "exclude"):
        raise ValueError(f"not_run must be 'fail' or 'exclude', got {not_run!r}")


def _per_method(table: Table, not_run: str) -> tuple[dict[str, list[float]], list[str]]:
    """Each method's ratios over the tasks that count for it (NaN -> inf under not_run="fail")."""
    _check_not_run(not_run)
    r, unsolved = ratios(table)
    out: dict[str, list[float]] = {m: [] for m in methods_of(table)}
    for row in r.values():
        for m, x in row.items():
            if math.isnan(x):
                if not_run == "exclude":
                    continue
                x = math.inf
            out[m].append(x)
    return out, unsolved


def performance_profile(table: Table, taus: Iterable[float] = DEFAULT_TAUS, *,
                        not_run: str = "fail") -> dict[str, list[float]]:
    """``{method: [rho_m(tau) for tau in taus]}``, ``rho_m(tau)`` the fraction of solved tasks on which the
    method is within a factor ``tau`` of the best (``r <= tau``).  A method not run on a task fails it
    (``not_run="fail"``) or that task is left out of the method's denominator (``"exclude"``); a method with no
    task left reads NaN.  Unsolved tasks are left out (see :func:`ratios`)."""
    taus = [float(t) for t in taus]
    per, _ = _per_method(table, not_run)
    return {m: [sum(x <= t * (1 + _EPS) for x in rs) / len(rs) if rs else math.nan for t in taus]
            for m, rs in per.items()}


def credit(r: float, tau_max: float = TAU_MAX, scale: str = "linear") -> float:
    """One task's contribution to :func:`profile_score` for a ratio ``r``: the normalised length of
    ``[1, tau_max]`` on which ``r <= tau``: ``(tau_max - r)/(tau_max - 1)`` (log: ``1 - ln r/ln tau_max``),
    0 when ``r >= tau_max`` or ``r`` is infinite, 1 when ``r = 1``."""
    if not tau_max > 1:
        raise ValueError(f"tau_max must be > 1, got {tau_max}")
    if scale not in ("linear", "log"):
        raise ValueError(f"scale must be 'linear' or 'log', got {scale!r}")
    if not r < tau_max:
        return 0.0
    r = max(r, 1.0)
    if scale == "linear":
        return (tau_max - r) / (tau_max - 1)
    return 1 - math.log(r) / math.log(tau_max)


def profile_score(table: Table, *, tau_max: float = TAU_MAX, scale: str = "linear",
                  not_run: str = "fail") -> dict[str, float]:
    """AlgoPerf's benchmark score per method: the area under its performance profile over ``tau`` in
    ``[1, tau_max]`` divided by the area of that range (``scale="linear"``, AlgoPerf's definition with
    ``tau_max = 4``), or over ``ln tau`` (``scale="log"``); computed exactly as the mean :func:`credit` over
    the tasks that count for the method (NaN when none does)."""
    per, _ = _per_method(table, not_run)
    return {m: (sum(credit(x, tau_max, scale) for x in rs) / len(rs) if rs else math.nan) for m, rs in per.items()}


def _fmt(x: float, digits: int = 3) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf"
    return str(int(x)) if float(x).is_integer() else f"{x:.{digits}g}"


def profile_rows(table: Table, taus: Iterable[float] = DEFAULT_TAUS, *, tau_max: float = TAU_MAX,
                 scale: str = "linear", not_run: str = "fail") -> tuple[list[str], list[list[str]]]:
    """The profile as a table: header ``method, tasks, reached, wins, rho(tau)..., score`` and one row per
    method, best score first (ties in table order).  ``tasks``: the solved tasks that count for the method;
    ``reached``: on how many of them it reached the target; ``wins``: how many it won (``r = 1``)."""
    taus = [float(t) for t in taus]
    prof = performance_profile(table, taus, not_run=not_run)
    score = profile_score(table, tau_max=tau_max, scale=scale, not_run=not_run)
    per, _ = _per_method(table, not_run)
    label = "score" if scale == "linear" else "score (log tau)"
    header = ["method", "tasks", "reached", "wins", *[f"rho({_fmt(t)})" for t in taus],
              f"{label}, tau <= {_fmt(tau_max)}"]
    order = sorted(prof, key=lambda m: -score[m] if not math.isnan(score[m]) else math.inf)
    rows = []
    for m in order:
        rs = per[m]
        rows.append([m, str(len(rs)), str(sum(math.isfinite(x) for x in rs)), str(sum(x <= 1 + _EPS for x in rs)),
                     *[_fmt(p) for p in prof[m]], _fmt(score[m])])
    return header, rows


def markdown(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (the same format as :func:`egalitarian.report.markdown_table`, which
    this layer cannot import)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def profile_markdown(table: Table, taus: Iterable[float] = DEFAULT_TAUS, *, tau_max: float = TAU_MAX,
                     scale: str = "linear", not_run: str = "fail") -> str:
    """:func:`profile_rows` as markdown, followed by a line naming the unsolved tasks that were left out."""
    text = markdown(*profile_rows(table, taus, tau_max=tau_max, scale=scale, not_run=not_run))
    unsolved = ratios(table).unsolved
    if unsolved:
        text += f"\n\nLeft out (no method reached the target): {', '.join(unsolved)}."
    return text


# ----------------------------------------------------------------------------------- resolution and ties


class Crossing(NamedTuple):
    """The first evaluation at or past a threshold: at ``step`` (value ``value``), the previous evaluation at
    ``prev_step``; the true crossing lies in ``(prev_step, step]``."""

    step: int
    prev_step: int
    value: float

    @property
    def width(self) -> int:
        """The resolution: how precisely the crossing step is known (0 when it was reached at ``start``)."""
        return self.step - self.prev_step


def _first(curve: Iterable[tuple[int, float]], reached, start: int) -> Crossing | None:
    prev = start
    for step, value in sorted(((int(s), float(v)) for s, v in curve), key=lambda p: p[0]):
        if not math.isnan(value) and reached(value):
            return Crossing(step, min(prev, step), value)
        prev = step
    return None


def first_at_or_above(curve: Iterable[tuple[int, float]], threshold: float, *, start: int = 0) -> Crossing | None:
    """The first evaluation of ``curve`` (``[(step, value), ...]``, sorted by step here) whose value is ``>=
    threshold`` (NaN never is), with the bracket ``(previous evaluated step, step]``; ``None`` if none is.
    When the first evaluation already reaches it, the previous step is ``start`` (the step training began at,
    0 by default: an evaluation at step 0 then has width 0)."""
    return _first(curve, lambda v: v >= threshold, start)


def first_at_or_below(curve: Iterable[tuple[int, float]], threshold: float, *, start: int = 0) -> Crossing | None:
    """As :func:`first_at_or_above`, for targets to go below (a validation loss): the first value ``<=
    threshold``."""
    return _first(curve, lambda v: v <= threshold, start)


def relative_resolution(crossing: Crossing) -> float:
    """``width / step`` of a crossing: the uncertainty of the time to threshold relative to it (0 for a
    crossing of width 0)."""
    return crossing.width / crossing.step if crossing.width else 0.0


def resolved(crossing: Crossing, rel: float = REL_RESOLUTION) -> bool:
    """Whether a crossing is known to within ``rel`` of its step (issue #28 asks 2 %)."""
    return relative_resolution(crossing) <= rel + _EPS


def median_resolution(crossings: Iterable[Crossing | None]) -> int:
    """The resolution of a median over seeds: the largest width among the crossings (runs that never crossed,
    ``None``, are skipped; 0 when none crossed).  A median is one of the crossing steps or the mean of two, so
    it is known at least this precisely; conservative when cadences differ between seeds."""
    return max((c.width for c in crossings if c is not None), default=0)


def is_tie(median_a: float, median_b: float, resolution_a: float, resolution_b: float) -> bool:
    """Whether two medians cannot be told apart: equal, or differing by less than the larger of the two
    resolutions (``|a - b| < max(res_a, res_b)``).  Two brackets ``(a - res_a, a]`` and ``(b - res_b, b]``
    overlap exactly when the later median exceeds the earlier by less than its own resolution, so every
    overlapping pair is a tie (the rule is the conservative one the board uses).  Two infinite medians
    (neither method reached the target) are a tie; one infinite and one finite are not."""
    if math.isinf(median_a) or math.isinf(median_b):
        return math.isinf(median_a) and math.isinf(median_b)
    return median_a == median_b or abs(median_a - median_b) < max(resolution_a, resolution_b)


def cadence(step_below: int, rel: float = REL_RESOLUTION) -> int:
    """The evaluation interval that resolves a crossing to a relative width of at most ``rel``, given the
    last evaluated step ``step_below`` whose value was still short of the threshold: ``max(1, floor(rel *
    step_below))``.  The crossing ``t`` is later than ``step_below``, so evaluating every ``c`` steps from
    there brackets it in an interval of width ``c <= rel * step_below < rel * t`` (``c = 1``, per-step
    evaluation, is exact).  Use it to adapt the cadence near the threshold, or to replay at this cadence
    from a checkpoint at ``step_below``."""
    if not 0 < rel < 1:
        raise ValueError(f"rel must be in (0, 1), got {rel}")
    if step_below < 0:
        raise ValueError(f"step_below must be >= 0, got {step_below}")
    return max(1, math.floor(rel * step_below))


def metric_curve(rows: Sequence[Sequence[Any]], split: str = "test", metric: str = "acc") -> list[tuple[int, float]]:
    """``[(step, value), ...]`` of one run's ``split``/``metric`` from its metric rows ``(step, epoch, split,
    metric, value)`` (:meth:`egalitarian.sweep.Store.metrics`), in training order; NULL reads as NaN."""
    return [(int(r[0]), math.nan if r[4] is None else float(r[4])) for r in rows if r[2] == split and r[3] == metric]


__all__ = [
    "DEFAULT_TAUS",
    "REL_RESOLUTION",
    "TAU_MAX",
    "Crossing",
    "Ratios",
    "cadence",
    "credit",
    "first_at_or_above",
    "first_at_or_below",
    "is_tie",
    "markdown",
    "median_resolution",
    "methods_of",
    "metric_curve",
    "performance_profile",
    "profile_markdown",
    "profile_rows",
    "profile_score",
    "ratios",
    "relative_resolution",
    "resolved",
]

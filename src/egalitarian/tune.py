"""``egd tune SPEC.toml``: every method tuned with the same budget, then measured on held-out seeds.

A tune spec (docs/TUNING.md has every field) names a base config, the methods to compare, ONE search space
and ONE number of trials: every method gets the same budget and the same search-space shape.  A range is
absolute by default (``relative = false``): the fair choice, one range shared by every method of a family
(all learning rates over the same ≥ 7 decades, say), never centred on a value tuned for the task.  With
``relative = true`` its ends are factors of each method's own value (the recipe's or the registry's default):
equal in shape but not in position, so a method whose default was tuned for the task is favoured.

The space's dimensions (``[space]``):

* a range ``{low, high, log, relative, int}``; ``off = true`` adds the value 0 as one more option (a
  categorical parameter ``FIELD.off``, true meaning 0: weight decay "off or log-uniform 1e-5..1");
* a categorical ``{choices = [...]}``: values of the field named by the key, or tables of several fields
  (``{ "scheduler.name" = "cosine", "scheduler.warmup_steps" = 10, "scheduler.min_factor" = 0.1 }``), the key
  then being only a label; the sampler sees the option's index;
* ``optional = true``: a method whose config has no such field (``optimizer.momentum`` for AdamW), or holds it
  inert (:func:`egalitarian.methods.inert_hyperparameters`: ``momentum`` of Grokfast on Adam), lacks the
  dimension and is not asked it; without it, every method must accept every field;
* ``fields = [...]``: alternative fields, each method searching the first it has, live (momentum or β₁:
  ``["optimizer.momentum", "optimizer.betas.0"]``; an element ``SECTION.KEY.INDEX`` sets the method's whole
  list with that element replaced); the key is then a label;
* ``limit_low``/``limit_high``: bounds a widening never passes (momentum below 1).

How it runs:

1. **Search.** ``tune.studies`` (default 1) Optuna studies per method, study ``k`` seeded ``tune.seed + k``
   and named ``NAME/LABEL`` (k = 0) or ``NAME/LABEL/studyK`` in the study file, each with the same budget
   (ask/tell, seeded sampler: TPE, random or a grid; no pruner: a grokking run sits at chance until it jumps,
   so pruning on test accuracy would kill the slow methods under comparison).  ``tune.stages``:
   ``"single"`` (default) asks ``trials`` trials over the space; ``"coarse-refine"`` first asks every point
   of a ×√10 log grid over the whole range of the first dimension (the learning rate; the other dimensions
   at the method's own values), then ``trials`` trials with the first dimension narrowed to one decade
   (×1/√10..×√10) around stage 1's best point and the others over their ranges (``_next_asks``): the
   same stages and counts for every method.  That window is a range too: a stage-2 winner in its outer 10%
   doubles its half-width (±0.5, ±1, ±2 decades) for every method in the next round (from round
   ``tune.window_widens_from``, default 0).  Each asked trial becomes one run per *tuning seed*, executed by
   the sweep executor into the results store (process isolation, local or Ray, resumable; a run's id is its
   config hash, so a configuration repeated within or across studies is never run twice).  A trial's value
   is the median over its tuning seeds of the steps (or epochs, or seconds) to the accuracy threshold, a
   censored run counting as infinite; a trial whose median is censored ranks after every success, by its
   mean final test accuracy (``CENSORED + 1 − accuracy``).  With ``metric = "loss"`` (models that do not
   grok: a language model, a CNN) a trial's value is the median over its tuning seeds of the final test loss
   (a failed or diverged run counting as ``CENSORED``).
2. **Report.** The best trial of each study of each method (after a widening, of every round: :func:`best`) is
   re-run on the *reporting seeds* (disjoint from the tuning seeds) as a normal sweep, and the leaderboard gives
   per method: the best hyperparameters (``edge`` when a winner lies in the outer 10% of a range, in log
   position for log ranges: :func:`search` widens such a range for every method and reruns, up to
   ``tune.widen`` rounds), the success rate, the
   Kaplan–Meier medians of steps and seconds with bootstrap CIs, and speed-ups against each baseline
   method's tuned best.  With several studies a row also gives the median across
   studies of the best configurations' held-out medians and their spread (min–max: tuning luck), the rest of
   the row being the median study's (:func:`across_studies`), and a second table lists every study.  With
   ``metric = "loss"`` it gives instead the final test loss (median, min, max), the test loss at 1/3 and 2/3
   of the step budget, and the steps to the target loss, the first baseline's median final test loss: the
   first evaluation at which a run's test loss is at or below it, a run that never gets there censored
   (:func:`egalitarian.sweep.stats.loss_outcome`), as a Kaplan–Meier median with a bootstrap CI; the speed-ups
   are ratios of those medians.

Rerunning the command continues: finished runs are kept, trials asked but not told (a killed search) are
completed with the runs they already have, no trial beyond the budget is asked, and the trials asked next are
those an uninterrupted search asks (see :func:`replay`), study by study.  A spec changed since a study was made
(its space, budget, seeds, sampler, base, ``[set]``, ``[report_set]`` or a method's settings: :func:`made_with`)
is refused rather than mixed with the old trials (``_check_made_with``).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from . import io as fio
from .config import load_config, load_toml, toml_table
from .errors import ConfigError, check, invalid
from .report import markdown_table
from .sweep import Store, Sweep, expand, run_sweep
from .sweep.profiles import is_tie
from .sweep.spec import PlannedRun, group_label
from .sweep.stats import (
    METRICS,
    finite_json,
    km_cell,
    km_ci,
    km_median,
    km_ratio_ci,
    loss_curve,
    loss_outcome,
    outcome,
)
from .sweep.store import JOB_STATES

CENSORED = 1e9
"""A trial whose median run did not reach the threshold scores ``CENSORED + 1 − mean final test accuracy``."""

OBJECTIVES = (*METRICS, "loss")
"""``tune.metric``: time (epochs, steps, seconds) to the accuracy threshold, or the final test loss."""
SAMPLERS = ("tpe", "random", "grid")
STAGES = ("single", "coarse-refine")
"""``tune.stages``: one search over the space, or a ×√10 grid over the first dimension then a refined search."""
EDGE = 0.1
"""A winner within this fraction of either end of a range (log position for log ranges) is flagged ``edge``."""
WIDEN = 2
# coarse-refine's stage 2 searches the first dimension over ×10^-WINDOW..×10^WINDOW around stage 1's best; a
# stage-2 winner in the outer EDGE of that window doubles its half-width in the next round (±0.5, ±1, ±2 decades)
WINDOW = 0.5
"""``tune.widen``'s default (``0`` with the grid sampler): at most this many widening rounds (:func:`search`).  Two
rounds let a range grow by two decades per side (a log range), enough for an optimum a default put far off, while
the worst case stays bounded (three whole searches); an edge still there after them is flagged."""
TOP_LEVEL = ("base", "tune", "set", "report_set", "space", "methods")
TUNE_KEYS = ("name", "store", "metric", "trials", "sampler", "seed", "batch", "startup_trials", "tuning_seeds",
             "reporting_seeds", "baselines", "studies", "stages", "widen", "window_widens_from")
DIMENSION_KEYS = ("low", "high", "log", "relative", "int", "points", "off", "optional", "fields", "limit_low",
                  "limit_high")
CHOICE_KEYS = ("choices", "optional")
METHOD_KEYS = ("method", "set")


@dataclass(frozen=True)
class Dimension:
    """One searched field: ``low..high`` (factors of the method's own value when ``relative``)."""

    field: str
    low: float
    high: float
    log: bool = True
    relative: bool = False
    integer: bool = False
    points: int | None = None  # grid sampler: values per dimension (log- or linearly spaced, ends included)
    off: bool = False  # the value 0 is one more option: a categorical parameter FIELD.off (true: the value is 0)
    optional: bool = False  # a method whose config has no such field (or an inert one) lacks this dimension
    choices: tuple[Any, ...] | None = None  # a categorical dimension: its options (values, or tables of fields)
    alternatives: tuple[str, ...] | None = None  # `fields`: a method searches the first it has, live (`field`: a label)
    limit_low: float | None = None  # widening never takes the range past these (momentum: limit_high = 1)
    limit_high: float | None = None

    @property
    def off_param(self) -> str:
        """The name of the parameter that switches an ``off`` dimension to 0."""
        return self.field + ".off"

    def fields(self) -> set[str]:
        """The config fields this dimension sets (with ``fields``: any of them)."""
        if self.choices is not None:
            return {k for ch in self.choices if isinstance(ch, dict) for k in ch} or {self.field}
        return set(self.alternatives or (self.field,))

    def setting(self, value: Any) -> dict[str, Any]:
        """The config fields a choice (by its index) sets."""
        ch = self.choices[value]  # type: ignore[index]
        return dict(ch) if isinstance(ch, dict) else {self.field: ch}

    def grid(self) -> list[float]:
        if self.choices is not None:
            return list(range(len(self.choices)))
        n = self.points or 1
        if n == 1:
            return [self.low]
        if self.log:
            a, b = math.log(self.low), math.log(self.high)
            vals = [math.exp(a + (b - a) * i / (n - 1)) for i in range(n)]
        else:
            vals = [self.low + (self.high - self.low) * i / (n - 1) for i in range(n)]
        return [round(v) for v in vals] if self.integer else [float(f"{v:.6g}") for v in vals]

    def position(self, x: float) -> float:
        """Where ``x`` (a factor or an absolute value, as searched) sits in the range: 0 at low, 1 at high."""
        if self.log:
            return (math.log(x) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (x - self.low) / (self.high - self.low)

    def widened(self, side: str) -> Dimension | None:
        """This range widened on ``side`` (``"low"`` or ``"high"``) for a widening round, or None at its limit.

        A log range by one decade (×1/10 or ×10), so the ×√10 lattice ``low·√10^i`` of ``coarse-refine``'s
        stage 1 keeps its points; when ``limit_low``/``limit_high`` is in the way, by half a decade, else up to
        the limit.  A linear range by half its width, up to the limit.  An integer range rounds outward (a log
        one stays >= 1).  6 significant digits, as the grid.  The low side of an ``off`` dimension is at its
        limit: the search already has 0 below the range, so a winner near ``low`` is not a reason to search lower."""
        if self.off and side == "low":
            return None
        sign = -1 if side == "low" else 1
        end = self.low if side == "low" else self.high
        limit = self.limit_low if side == "low" else self.limit_high
        if self.integer and self.log and side == "low":
            limit = max(limit or 1.0, 1.0)
        steps = [end * 10 ** (sign * j / 2) for j in (2, 1)] if self.log else [end + sign * (self.high - self.low) / 2]
        if self.integer:
            steps = [math.floor(x) if side == "low" else math.ceil(x) for x in steps]
            limit = limit if limit is None else (math.ceil(limit) if side == "low" else math.floor(limit))
        else:
            steps = [float(f"{x:.6g}") for x in steps]
        ok = [x for x in steps if limit is None or sign * (limit - x) >= 0]
        x = ok[0] if ok else limit
        if sign * (x - end) <= 0:
            return None
        return replace(self, low=float(x)) if side == "low" else replace(self, high=float(x))


@dataclass(frozen=True)
class Contender:
    """A method as the leaderboard names it: a recipe table or registry method plus fixed overrides."""

    label: str
    method: str
    fixed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TuneSpec:
    name: str
    store: Path
    base: dict[str, Any]
    contenders: list[Contender]
    space: list[Dimension]
    trials: int
    metric: str = "steps"
    sampler: str = "tpe"
    seed: int = 0
    batch: int = 1
    startup_trials: int | None = None
    tuning_seeds: list[int] = field(default_factory=lambda: [0, 1])
    reporting_seeds: list[int] = field(default_factory=lambda: [100, 101, 102, 103, 104])
    baselines: list[str] = field(default_factory=list)
    fixed: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    studies: int = 1
    stages: str = "single"
    report_fixed: dict[str, Any] = field(default_factory=dict)  # [report_set]: the reporting runs only
    widen: int = WIDEN  # at most this many widening rounds (tune.widen)
    round: int = 0  # set by search: the widening round this spec's space is (0: the spec's own ranges)
    history: tuple[dict[str, Any], ...] = ()  # set by search: each earlier round's ranges and the edges that widened
    window: float = WINDOW  # set by search: coarse-refine's stage-2 window, decades each side of stage 1's best
    window_from: int = 0  # tune.window_widens_from: the first round whose winners at a window's end widen it

    @property
    def study_path(self) -> Path:
        return self.store.with_name(self.store.stem + ".optuna.sqlite")


# --------------------------------------------------------------------------------------------- the spec


def _seeds(value: Any, key: str, where: str) -> list[int]:
    ok = isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                    for s in value) and len(set(value)) == len(value)
    check(bool(ok), f"{where}: tune.{key}", value, "must be a non-empty list of distinct integers >= 0", ConfigError)
    return list(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _choice_dimension(fld: str, d: dict[str, Any], at: str) -> Dimension:
    for key in d:
        check(key in CHOICE_KEYS, f"{at}.{key}", d[key], f"unknown key with choices; allowed: {', '.join(CHOICE_KEYS)}",
              ConfigError)
    choices = d["choices"]
    check(isinstance(choices, list) and len(choices) >= 1, f"{at}.choices", choices,
          "must be a non-empty list of values or of tables {FIELD = VALUE, ...}", ConfigError)
    for ch in choices:
        ok = (isinstance(ch, (str, int, float, bool)) or (isinstance(ch, dict) and ch and all(
            isinstance(k, str) and "." in k and isinstance(v, (str, int, float, bool)) for k, v in ch.items())))
        check(bool(ok), f"{at}.choices", ch, "each choice must be a value or a table of SECTION.FIELD = VALUE",
              ConfigError)
    if not all(isinstance(ch, dict) for ch in choices):
        check("." in fld, at, fld, "a choice of values needs a field name SECTION.FIELD", ConfigError)
    optional = d.get("optional", False)
    check(isinstance(optional, bool), f"{at}.optional", optional, "must be true or false", ConfigError)
    return Dimension(fld, 0.0, 0.0, log=False, relative=False, optional=optional, choices=tuple(choices))


def _dimension(fld: str, d: Any, sampler: str, where: str) -> Dimension:
    at = f"{where}: space.{fld}"
    check(isinstance(d, dict), at, d, "must be a table {low = ..., high = ..., log = true}", ConfigError)
    if "choices" in d:
        return _choice_dimension(fld, d, at)
    for key in d:
        check(key in DIMENSION_KEYS, f"{at}.{key}", d[key], f"unknown key; allowed: {', '.join(DIMENSION_KEYS)}",
              ConfigError)
    for key in ("low", "high"):
        check(_number(d.get(key)), f"{at}.{key}", d.get(key), "must be a finite number", ConfigError)
    log, rel, integer = d.get("log", True), d.get("relative", False), d.get("int", False)
    off, optional = d.get("off", False), d.get("optional", False)
    for key, v in (("log", log), ("relative", rel), ("int", integer), ("off", off), ("optional", optional)):
        check(isinstance(v, bool), f"{at}.{key}", v, "must be true or false", ConfigError)
    if off:
        check(sampler != "grid", f"{at}.off", off, "not with sampler = 'grid' (list the values as choices)",
              ConfigError)
    check(d["low"] < d["high"], f"{at}.low", d["low"], f"must be < high = {d['high']!r}", ConfigError)
    if log:
        check(d["low"] > 0, f"{at}.low", d["low"], "must be > 0 for a log range (log = true)", ConfigError)
    points = d.get("points")
    if sampler == "grid":
        check(isinstance(points, int) and not isinstance(points, bool) and points >= 1, f"{at}.points", points,
              "the grid sampler needs an integer >= 1 (values per dimension)", ConfigError)
    elif points is not None:
        raise ConfigError(f"{at}.points = {points!r}: only for sampler = 'grid'")
    alternatives = d.get("fields")
    if alternatives is not None:
        check(isinstance(alternatives, list) and alternatives and all(isinstance(f, str) for f in alternatives)
              and len(set(alternatives)) == len(alternatives), f"{at}.fields", alternatives,
              "must be a non-empty list of distinct field names, e.g. ['optimizer.momentum', 'optimizer.betas.0']",
              ConfigError)
        alternatives = tuple(alternatives)
    limits = {}
    for key, end, sign in (("limit_low", "low", -1), ("limit_high", "high", 1)):
        v = d.get(key)
        if v is not None:
            check(_number(v) and sign * (v - d[end]) >= 0, f"{at}.{key}", v, f"must be a finite number "
                  f"{'<=' if sign < 0 else '>='} {end} = {d[end]!r} (widening never passes it)", ConfigError)
            limits[key] = float(v)
    return Dimension(fld, float(d["low"]), float(d["high"]), log, rel, integer, points, off, optional,
                     alternatives=alternatives, **limits)


def load_tune(path: str | Path) -> TuneSpec:
    """Read and check a tune spec; any problem is one ConfigError naming the file, the field and the value."""
    path = Path(path)
    doc = load_toml(path)
    where = f"tune spec {str(path)!r}"
    for key in doc:
        check(key in TOP_LEVEL, f"{where}: {key}", doc[key], f"unknown key; allowed: {', '.join(TOP_LEVEL)}",
              ConfigError)
    meta = toml_table(doc, "tune", where)
    for key in meta:
        check(key in TUNE_KEYS, f"{where}: tune.{key}", meta[key], f"unknown key; allowed: {', '.join(TUNE_KEYS)}",
              ConfigError)
    name = meta.get("name", path.stem)
    check(isinstance(name, str) and name != "", f"{where}: tune.name", name, "must be a non-empty string", ConfigError)
    metric = meta.get("metric", "steps")
    check(metric in OBJECTIVES, f"{where}: tune.metric", metric, f"must be one of {', '.join(OBJECTIVES)}",
          ConfigError)
    sampler = meta.get("sampler", "tpe")
    check(sampler in SAMPLERS, f"{where}: tune.sampler", sampler, f"must be one of {', '.join(SAMPLERS)}",
          ConfigError)
    for key, low in (("trials", 1), ("batch", 1), ("seed", 0)):
        v = meta.get(key, {"trials": None, "batch": 1, "seed": 0}[key])
        check(isinstance(v, int) and not isinstance(v, bool) and v >= low, f"{where}: tune.{key}", v,
              f"must be an integer >= {low}", ConfigError)
    startup = meta.get("startup_trials")
    if startup is not None:
        check(isinstance(startup, int) and not isinstance(startup, bool) and startup >= 1,
              f"{where}: tune.startup_trials", startup, "must be an integer >= 1", ConfigError)
    tuning = _seeds(meta.get("tuning_seeds", [0, 1]), "tuning_seeds", where)
    reporting = _seeds(meta.get("reporting_seeds", [100, 101, 102, 103, 104]), "reporting_seeds", where)
    both = sorted(set(tuning) & set(reporting))
    check(not both, f"{where}: tune.reporting_seeds", reporting,
          f"must be disjoint from tuning_seeds (both have {both})", ConfigError)
    store = Path(meta.get("store", f"tunes/{name}.sqlite"))  # relative to the working directory, like sweeps

    base = doc.get("base")
    check(isinstance(base, (str, dict)), f"{where}: base", base, "must be a recipe name, a TOML file or a [base] table",
          ConfigError)
    if isinstance(base, str):
        local = path.parent / base
        try:
            base = load_config(str(local) if local.is_file() else base)
        except ConfigError as e:
            raise ConfigError(f"{where}: base = {doc['base']!r}: {e}") from None
    fixed = toml_table(doc, "set", where)
    report_fixed = toml_table(doc, "report_set", where)
    space_doc = toml_table(doc, "space", where)
    check(bool(space_doc), f"{where}: space", space_doc, "needs at least one field to search", ConfigError)
    space = [_dimension(k, v, sampler, where) for k, v in space_doc.items()]
    trials = meta.get("trials")
    studies = meta.get("studies", 1)
    check(isinstance(studies, int) and not isinstance(studies, bool) and studies >= 1, f"{where}: tune.studies",
          studies, "must be an integer >= 1", ConfigError)
    stages = meta.get("stages", "single")
    check(stages in STAGES, f"{where}: tune.stages", stages, f"must be one of {', '.join(STAGES)}", ConfigError)
    widen = meta.get("widen", 0 if sampler == "grid" else WIDEN)
    check(isinstance(widen, int) and not isinstance(widen, bool) and widen >= 0, f"{where}: tune.widen", widen,
          "must be an integer >= 0 (the most widening rounds; 0: only flag a winner at an edge)", ConfigError)
    window_from = meta.get("window_widens_from", 0)
    check(isinstance(window_from, int) and not isinstance(window_from, bool) and window_from >= 0,
          f"{where}: tune.window_widens_from", window_from, "must be an integer >= 0 (the first round whose "
          "stage-2 winners at an end of their window widen it)", ConfigError)
    if stages == "coarse-refine":
        first = space[0]
        check(sampler != "grid", f"{where}: tune.stages", stages, "needs sampler = 'tpe' or 'random' for stage 2",
              ConfigError)
        check(first.choices is None and first.log and not first.integer and not first.off and not first.optional,
              f"{where}: space.{first.field}", first.field, "coarse-refine needs the first dimension to be a "
              "continuous log range every method has (the learning rate)", ConfigError)
    if sampler == "grid":
        check(not any(d.optional for d in space), f"{where}: space", [d.field for d in space if d.optional],
              "optional dimensions need sampler = 'tpe' or 'random' (a grid's size must be the same for every "
              "method)", ConfigError)
        n = math.prod(len(d.choices) if d.choices is not None else d.points or 1 for d in space)
        check(trials == n, f"{where}: tune.trials", trials, f"must equal the grid's size, {n} points", ConfigError)

    methods_doc = toml_table(doc, "methods", where)
    check(bool(methods_doc), f"{where}: methods", methods_doc, "needs at least one [methods.NAME] table", ConfigError)
    contenders = []
    for label, m in methods_doc.items():
        check(isinstance(m, dict), f"{where}: methods.{label}", m, "must be a table", ConfigError)
        for key in m:
            check(key in METHOD_KEYS, f"{where}: methods.{label}.{key}", m[key],
                  f"unknown key; allowed: {', '.join(METHOD_KEYS)}", ConfigError)
        fixed_m = m.get("set", {})
        check(isinstance(fixed_m, dict), f"{where}: methods.{label}.set", fixed_m, "must be a table of FIELD = VALUE",
              ConfigError)
        clash = sorted(set(fixed_m) & {f for d in space if not d.relative for f in d.fields()})
        check(not clash, f"{where}: methods.{label}.set", fixed_m,
              f"may not fix a searched field ({', '.join(clash)}): every method searches the same space "
              "(for a relative range, set gives the value it is centred on)", ConfigError)
        contenders.append(Contender(label, m.get("method", label), dict(fixed_m)))
    baselines = meta.get("baselines", [])
    spec = TuneSpec(name=name, store=store, base=base, contenders=contenders, space=space, trials=trials,
                    metric=metric, sampler=sampler, seed=meta.get("seed", 0), batch=meta.get("batch", 1),
                    startup_trials=startup, tuning_seeds=tuning, reporting_seeds=reporting, baselines=baselines,
                    fixed=fixed, path=path, studies=studies, stages=stages, report_fixed=report_fixed, widen=widen,
                    window_from=window_from)
    had: set[str] = set()
    for c in contenders:  # every method must accept every field (but optional ones), and have a value to scale
        base_values(spec, c, where)  # relative ranges
        had |= {d.field for d in dimensions(spec, c, where)}
    for d in space:
        check(d.field in had, f"{where}: space.{d.field}", d.field, "no method of this spec has it (optional = true "
              "only lets some methods lack a dimension)", ConfigError)
    # after the methods: a label that names no method is blamed on its [methods.LABEL] table, not on the baselines
    check(isinstance(baselines, list) and all(b in methods_doc for b in baselines), f"{where}: tune.baselines",
          baselines, f"must be a list of method labels of this spec: {', '.join(methods_doc)}", ConfigError)
    return spec


def _resolved(spec: TuneSpec, c: Contender, where: str, extra: dict[str, Any] | None = None, *,
              reporting: bool = False) -> dict[str, Any]:
    """Method ``c``'s resolved config (``extra`` applied; with ``reporting``, ``[report_set]`` too), seeds unset."""
    fixed = {**spec.fixed, **spec.report_fixed} if reporting else spec.fixed
    try:
        (run,) = expand(spec.base, None, [{"method": c.method, **c.fixed, **(extra or {})}], fixed,
                        where=f"{where}: methods.{c.label}")
    except ConfigError as e:
        raise ConfigError(str(e)) from None
    return run.config


def _path(f: str, at: str) -> tuple[str, str, int | None]:
    """A searched field's parts: ``SECTION.FIELD``, or ``SECTION.FIELD.INDEX`` for one element of a list field
    (``optimizer.betas.0``: β₁)."""
    parts = f.split(".")
    ok = (len(parts) in (2, 3) and parts[0] in ("optimizer", "loss", "train", "model", "task", "scheduler")
          and parts[1] != "" and (len(parts) == 2 or parts[2].isdigit()))
    check(ok, at, f, "must be SECTION.FIELD, e.g. optimizer.lr, or SECTION.FIELD.INDEX, e.g. optimizer.betas.0",
          ConfigError)
    return parts[0], parts[1], int(parts[2]) if len(parts) == 3 else None


def _value_at(cfg: dict[str, Any], section: str, key: str) -> Any:
    """A field's value in a resolved config; for the optimizer, the registry's default when the config has none."""
    from .methods import OPTIMIZERS

    value = cfg.get(section, {}).get(key)
    if value is None and section == "optimizer":
        value = OPTIMIZERS[cfg["optimizer"]["name"]].defaults.get(key)
    return value


def _field_for(spec: TuneSpec, c: Contender, cfg: dict[str, Any], d: Dimension, where: str) -> str | None:
    """The config field method ``c`` (resolved config ``cfg``) searches for dimension ``d``, or None when it lacks
    ``d`` (an error unless ``d.optional``).

    A field is the method's when its section accepts it; for an ``optional`` dimension it must also be *live*:
    not inert under the method's resolved settings (:func:`egalitarian.methods.inert_hyperparameters`:
    ``momentum`` of Grokfast on Adam is accepted and ignored).  With ``fields``, the first alternative that is
    the method's (``optimizer.momentum`` for SGD, ``optimizer.betas.0`` for AdamW)."""
    at = f"{where}: space.{d.field}"
    if d.choices is not None:
        for i in range(len(d.choices)):
            try:
                _resolved(spec, c, where, d.setting(i))
            except ConfigError as e:
                if d.optional:
                    return None
                raise ConfigError(f"{at}: choice {d.choices[i]!r}: {e}") from None
        return d.field
    from .build import accepted_fields
    from .methods import inert_hyperparameters

    present, live = [], []
    for f in d.alternatives or (d.field,):
        section, key, index = _path(f, f"{at}.fields" if d.alternatives else at)
        name = cfg.get(section, {}).get("name")
        try:
            ok = key in accepted_fields(section, name)
        except ConfigError:
            ok = False
        if not ok:
            continue
        present.append(f)
        if index is not None:
            v = _value_at(cfg, section, key)
            check(isinstance(v, (list, tuple)) and index < len(v) and all(_number(x) for x in v), at, f,
                  f"method {c.label!r} has {section}.{key} = {v!r}: an element needs a list of numbers that long",
                  ConfigError)
        if not (section == "optimizer" and key in inert_hyperparameters(name, cfg["optimizer"])):
            live.append(f)
    if d.optional:
        return live[0] if live else None
    if present:
        return (live or present)[0]
    if d.alternatives:
        raise invalid(f"{at}.fields", list(d.alternatives), f"method {c.label!r} has none of these fields; optional "
                      "= true lets the methods without them lack this dimension", ConfigError)
    section = d.field.partition(".")[0]
    raise invalid(at, d.field, f"method {c.label!r} ({section} {cfg.get(section, {}).get('name')!r}) has no such "
                  "field; optional = true lets the methods without it lack this dimension", ConfigError)


def searched_fields(spec: TuneSpec, c: Contender, where: str = "tune") -> dict[str, str]:
    """The dimensions method ``c`` is searched over, by key, each with the config field it sets for ``c``:
    every dimension of the space but the ``optional`` ones its config lacks or holds inert (e.g.
    ``optimizer.momentum`` for AdamW, or for Grokfast on Adam); a dimension with ``fields`` sets the first
    one the method has, live (``_field_for``)."""
    cfg = _resolved(spec, c, where)
    out = {}
    for d in spec.space:
        f = _field_for(spec, c, cfg, d, where)
        if f is not None:
            out[d.field] = f
    return out


def dimensions(spec: TuneSpec, c: Contender, where: str = "tune") -> list[Dimension]:
    """The dimensions method ``c`` is searched over (:func:`searched_fields`), in the space's order."""
    have = searched_fields(spec, c, where)
    return [d for d in spec.space if d.field in have]


def base_values(spec: TuneSpec, c: Contender, where: str = "tune") -> dict[str, float]:
    """Each searched numeric dimension's value in this method's resolved config (the value relative ranges
    multiply; 0 when it has none), by key, for the dimensions the method has (:func:`searched_fields`)."""
    cfg = _resolved(spec, c, where)
    return _base_values(spec, c, cfg, {d.field: f for d in spec.space
                                       if (f := _field_for(spec, c, cfg, d, where)) is not None}, where)


def _base_values(spec: TuneSpec, c: Contender, cfg: dict[str, Any], used: dict[str, str],
                 where: str) -> dict[str, float]:
    out = {}
    for d in spec.space:
        if d.field not in used or d.choices is not None:
            continue
        at = f"{where}: space.{d.field}"
        section, key, index = _path(used[d.field], at)
        value = _value_at(cfg, section, key)
        if index is not None:
            value = value[index]
        if d.relative:
            check(_number(value) and value > 0, at, value,
                  f"relative = true needs a value > 0 in method {c.label!r}'s config; give an absolute range "
                  "(relative = false)", ConfigError)
        out[d.field] = float(value) if _number(value) else 0.0
    return out


# ------------------------------------------------------------------------------------------- the search


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("egd tune needs Optuna: pip install 'egalitarian[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _sampler(spec: TuneSpec, optuna: Any, study: int = 0) -> Any:
    """Study ``study``'s sampler, seeded ``tune.seed + study``."""
    seed = spec.seed + study
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler({d.field: d.grid() for d in spec.space}, seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = spec.startup_trials or min(10, max(2, spec.trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def replay(spec: TuneSpec, trials: list[Any], n: int = 0, *, study: int = 0, c: Contender | None = None,
           dists: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[int]]:
    """What a fresh sampler seeded by the spec (``tune.seed + study``) proposes next, after it is shown a
    study's ``trials`` in the rounds of ``batch`` asks in which :func:`search` makes them: the values of the
    next ``n`` trials, and the numbers of the given trials it would not have asked (none for a search made by
    this rule).  ``dists``: the distributions asked (default: method ``c``'s space, or the whole space).

    Every new trial of :func:`search` comes from here, so a search's trials depend on the spec and the results
    only, never on where it was interrupted: a new process's sampler starts from its seed, and asked directly,
    a resumed search once drew every method's first learning rate again.  Replayed on an in-memory study, the
    sampler draws exactly what it drew in the search that made the trials."""
    optuna = _import_optuna()
    dists = dists if dists is not None else _distributions(spec, optuna, c)
    scratch = optuna.create_study(direction="minimize", sampler=_sampler(spec, optuna, study))
    state = optuna.trial.TrialState
    other: list[int] = []
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # replayed trials told FAIL below warn otherwise
    try:
        for start in range(0, len(trials), spec.batch):
            chunk = trials[start:start + spec.batch]
            for asked, t in zip([scratch.ask(dists) for _ in chunk], chunk, strict=True):
                if asked.params != t.params:
                    other.append(t.number)
                if t.state == state.RUNNING:  # asked in the round still under way: running in both studies
                    continue
                if t.state == state.COMPLETE and asked.params == t.params:
                    scratch.tell(asked, t.value)
                else:  # a trial this rule did not ask (an older search): the sampler is shown the real one
                    scratch.tell(asked, state=state.FAIL)
                    if t.state == state.COMPLETE:
                        scratch.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                                    value=t.value))
        return [scratch.ask(dists).params for _ in range(n)], other
    finally:
        optuna.logging.set_verbosity(level)


def coarse_grid(d: Dimension) -> list[float]:
    """Stage 1 of ``coarse-refine``: ``low·√10^i`` for i = 0, 1, … up to ``high`` (as searched: factors of the
    method's own value when the range is relative), 6 significant digits."""
    n = int(math.floor(2 * math.log10(d.high / d.low) + 1e-9)) + 1
    return [float(f"{d.low * 10 ** (i / 2):.6g}") for i in range(n)]


def window_key(spec: TuneSpec) -> str:
    """The name under which a winner's edge of stage 2's window (not of the range) is recorded."""
    return f"{spec.space[0].field} window"


def refine_window(spec: TuneSpec, x: float) -> tuple[float, float]:
    """Stage 2's range of the first dimension around stage 1's best point ``x``: ×10^-w..×10^w with w =
    ``spec.window`` decades (0.5 unless a widening round widened it), never past a declared limit, 6 significant
    digits."""
    first, w = spec.space[0], spec.window
    lo, hi = float(f"{x / 10 ** w:.6g}"), float(f"{x * 10 ** w:.6g}")
    if first.limit_low is not None:  # never past a declared limit
        lo = max(lo, first.limit_low)
    if first.limit_high is not None:
        hi = min(hi, first.limit_high)
    return lo, hi


def _next_asks(spec: TuneSpec, c: Contender, k: int, study: Any, optuna: Any) -> list[tuple[dict[str, Any], Any]]:
    """The trials of study ``k`` of method ``c`` to ask now: (values, distributions) pairs.

    ``single``: up to ``batch`` trials from :func:`replay`, until ``trials`` are asked.  ``coarse-refine``:
    first every point of :func:`coarse_grid` over the first dimension (the others at the method's own values,
    so left out); once all are told, stage 2 as ``single`` over a space whose first dimension is narrowed to
    one decade around stage 1's best point (×1/√10..×√10, the same width for every method, reaching half a
    decade past the range when the best point is at its end) and whose other dimensions span their ranges;
    stage 2's sampler (seeded ``tune.seed + k``, replayed) is shown stage 2's trials only."""
    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    dists = _distributions(spec, optuna, c)
    if spec.stages == "coarse-refine":
        first = spec.space[0]
        grid = coarse_grid(first)
        if len(trials) < len(grid):
            d1 = {first.field: optuna.distributions.FloatDistribution(first.low, first.high, log=True)}
            return [({first.field: x}, d1) for x in grid[len(trials):]]
        stage1, trials = trials[:len(grid)], trials[len(grid):]
        if any(t.state != state.COMPLETE for t in stage1):  # asked in the round under way: told at its end
            return []
        x = min(stage1, key=lambda t: (t.value, t.number)).params[first.field]
        dists[first.field] = optuna.distributions.FloatDistribution(*refine_window(spec, x), log=True)
    done = sum(t.state == state.COMPLETE for t in trials)
    running = sum(t.state == state.RUNNING for t in trials)
    new = max(0, min(spec.batch - running, spec.trials - done - running))
    return [(p, dists) for p in replay(spec, trials, new, study=k, c=c, dists=dists)[0]] if new else []


def _distributions(spec: TuneSpec, optuna: Any, c: Contender | None = None) -> dict[str, Any]:
    """The parameters asked of method ``c`` (every dimension when ``c`` is None): one per dimension it has,
    a choice's being the index of the option, and ``FIELD.off`` (false/true) for an ``off`` dimension."""
    out = {}
    for d in dimensions(spec, c) if c is not None else spec.space:
        if spec.sampler == "grid" or d.choices is not None:
            out[d.field] = optuna.distributions.CategoricalDistribution(d.grid())
        elif d.integer:
            out[d.field] = optuna.distributions.IntDistribution(int(d.low), int(d.high), log=d.log)
        else:
            out[d.field] = optuna.distributions.FloatDistribution(d.low, d.high, log=d.log)
        if d.off:
            out[d.off_param] = optuna.distributions.CategoricalDistribution([False, True])
    return out


def _method_space(spec: TuneSpec, c: Contender) -> tuple[dict[str, Any], dict[str, str], dict[str, float]]:
    """Method ``c``'s resolved config, the field it searches for each dimension it has, and its own values there."""
    cfg = _resolved(spec, c, "tune")
    used = {d.field: f for d in spec.space if (f := _field_for(spec, c, cfg, d, "tune")) is not None}
    return cfg, used, _base_values(spec, c, cfg, used, "tune")


def trial_values(spec: TuneSpec, c: Contender, params: dict[str, Any]) -> dict[str, Any]:
    """The config values of a trial: searched factors times the method's own values (relative dimensions),
    a choice's fields, 0 for an ``off`` dimension switched off, each in the field the method searches
    (:func:`searched_fields`; an element ``optimizer.betas.0`` sets the whole pair, ``[x, β₂]`` with the
    method's own β₂).  A dimension the trial does not have (the method lacks it, or stage 1 of
    ``coarse-refine`` left it at the method's own value) sets nothing."""
    cfg, used, base = _method_space(spec, c)
    out: dict[str, Any] = {}
    for d in spec.space:
        if d.field not in params:
            continue
        x = params[d.field]
        if d.choices is not None:
            out.update(d.setting(x))
            continue
        if d.off and params.get(d.off_param):
            v: Any = 0 if d.integer else 0.0
        else:
            v = x * base[d.field] if d.relative else x
            v = int(round(v)) if d.integer else float(f"{v:.6g}")
        section, key, index = _path(used[d.field], "tune")
        if index is None:
            out[used[d.field]] = v
        else:  # one element of a list field: the method's list with that element set (betas = [beta1, beta2])
            whole = list(out.get(f"{section}.{key}") or _value_at(cfg, section, key))
            whole[index] = v
            out[f"{section}.{key}"] = whole
    return out


def point_of(spec: TuneSpec, c: Contender, values: dict[str, Any]) -> dict[str, Any]:
    """The search-space point whose config values (:func:`trial_values`) are ``values``, for the dimensions that
    ``values`` sets: a leaderboard's configuration back as the params a trial carries (an ``off`` dimension at 0 is
    off, at the range's low end as :func:`own_params` has it; a categorical the choice whose fields equal the
    values').  ``{**own_params(...), **point_of(...)}`` completes it."""
    _, used, base = _method_space(spec, c)
    out: dict[str, Any] = {}
    for d in spec.space:
        if d.field not in used:
            continue
        if d.choices is not None:
            mine = {k: values[k] for k in d.fields() if k in values}
            found = [i for i in range(len(d.choices)) if mine and d.setting(i) == mine]
            if found:
                out[d.field] = found[0]
            continue
        section, key, index = _path(used[d.field], "tune")
        whole = used[d.field] if index is None else f"{section}.{key}"
        if whole not in values:
            continue
        v = values[whole] if index is None else values[whole][index]
        if d.off and v == 0:
            out[d.field], out[d.off_param] = d.low, True
            continue
        out[d.field] = v / base[d.field] if d.relative else v
        if d.off:
            out[d.off_param] = False
    return out


def own_params(spec: TuneSpec, c: Contender) -> dict[str, Any]:
    """Method ``c``'s own configuration as a point of the search space, for the dimensions it has (the params a
    trial would carry): a range's value (1.0 when ``relative``), with ``FIELD.off`` true where that value is 0 and
    the dimension has ``off``; a categorical's index where one choice equals the method's settings (else left out).
    ``{**own_params(...), **searched}`` completes a winner that left dimensions at the method's own values."""
    cfg, used, base = _method_space(spec, c)
    out: dict[str, Any] = {}
    for d in spec.space:
        if d.field not in used:
            continue
        if d.choices is not None:
            for i in range(len(d.choices)):
                if all(_value_at(cfg, *k.split(".", 1)) == v for k, v in d.setting(i).items()):
                    out[d.field] = i
                    break
            continue
        value = base[d.field]
        if d.off and value == 0:
            out[d.field], out[d.off_param] = d.low, True
            continue
        out[d.field] = 1.0 if d.relative else value
        if d.off:
            out[d.off_param] = False
    return out


def plan(spec: TuneSpec, c: Contender, values: dict[str, Any], seeds: list[int], *,
         reporting: bool = False) -> list[PlannedRun]:
    """The runs of one configuration of a method over ``seeds``, labelled by the method and the values; with
    ``reporting``, ``[report_set]``'s fields too (e.g. evaluation every step: the held-out runs' resolution)."""
    fixed = {**spec.fixed, **spec.report_fixed} if reporting else spec.fixed
    runs = expand(spec.base, {"seed": seeds}, [{"method": c.method, **c.fixed, **values}], fixed,
                  where=f"tune {spec.name}: methods.{c.label}")
    out = []
    for r in runs:
        params = {"method": c.label, **values, "seed": r.params["seed"]}
        out.append(replace(r, params=params, label=group_label(params)))
    return out


def score(spec: TuneSpec, rows: list[dict[str, Any]]) -> float:
    """A trial's value from its runs' store rows: the median over seeds of the time to the threshold (a
    censored or failed run counts as infinite); censored medians rank after all successes, by accuracy.
    ``metric = "loss"``: the median final test loss, a failed or diverged run counting as ``CENSORED``."""
    if spec.metric == "loss":
        return float(statistics.median([_final_loss(r) for r in rows] or [CENSORED]))
    times, accs = [], []
    for r in rows:
        s = r["summary"] or {}
        t, event = outcome(s, spec.metric) if r["status"] == "done" else (math.inf, False)
        times.append(t if event else math.inf)
        accs.append(float(s.get("final_test_acc", 0.0) or 0.0))
    med = statistics.median(times) if times else math.inf
    if math.isfinite(med):
        return float(med)
    return CENSORED + 1.0 - statistics.fmean(accs or [0.0])


def _final_loss(row: dict[str, Any]) -> float:
    """A store row's final test loss; ``CENSORED`` for a failed or diverged run."""
    s = row["summary"] or {}
    loss = s.get("final_test_loss")
    ok = row["status"] == "done" and s.get("status") != "nonfinite" and loss is not None and math.isfinite(loss)
    return float(loss) if ok else CENSORED


def study_name(spec: TuneSpec, c: Contender, k: int = 0) -> str:
    """The name of study ``k`` of a method in ``spec.study_path`` (study 0 keeps the name of a one-study tune);
    in widening round ``r`` >= 1, ``.../widenR`` (round 0 keeps the names of a tune that never widens)."""
    return f"{spec.name}/{c.label}" + (f"/study{k}" if k else "") + (f"/widen{spec.round}" if spec.round else "")


# ------------------------------------------------------------------- what a study was made with, and its file

MADE_WITH = "made_with"
"""The Optuna user attribute of every study: :func:`made_with` of the spec that made it (refused if it changes)."""
FIXED_ONCE_RUN = ("metric", "trials", "sampler", "seed", "startup_trials", "batch", "stages", "tuning_seeds")
"""``[tune]`` keys a study's trials depend on (which trials are asked, and their values); the others may change:
``studies`` and ``widen`` (raised: the finished studies and rounds are kept), ``baselines`` and ``reporting_seeds``
(the reporting runs are planned from the spec each time, one run per seed of the same configurations), ``name`` and
``store`` (another name or store is another tune)."""


def made_with(spec: TuneSpec, c: Contender) -> dict[str, Any]:
    """What a study of method ``c`` is made with, as JSON: the ``[tune]`` keys of :data:`FIXED_ONCE_RUN`, the
    spec's space (round 0's ranges, whatever the widening did since) and the method's resolved configs of the
    tuning and the reporting runs (the base, ``[set]``, ``[report_set]`` and the method's table and ``set``)."""
    record = {"tune": {key: getattr(spec, key) for key in FIXED_ONCE_RUN},
              "space": {d.field: asdict(d) for d in spec.space},
              "config": _resolved(spec, c, "tune"), "reporting config": _resolved(spec, c, "tune", reporting=True)}
    return json.loads(json.dumps(record))  # tuples as lists: as Optuna stores it


def _where(spec: TuneSpec) -> str:
    """How a message names the spec: its file (``load_tune``'s wording), else its name."""
    return f"tune spec {str(spec.path)!r}" if spec.path else f"tune {spec.name}"


def _changes(old: Any, new: Any, at: str = "") -> list[tuple[str, Any, Any]]:
    """Where two JSON values differ: (dotted path, old, new) for each leaf that differs (a list is a leaf; a key
    one side lacks is None there)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for key in dict.fromkeys([*old, *new])
                for change in _changes(old.get(key), new.get(key), f"{at}.{key}" if at else key)]
    return [] if old == new else [(at, old, new)]


def _check_made_with(spec: TuneSpec, studies: dict[str, list[Any]], made: dict[str, dict[str, Any]]) -> None:
    """Refuse (one ConfigError) when a study was made with other settings than ``made`` (:func:`made_with`, by
    method label): its trials would be mixed with the changed spec's.  A study without the attribute (new, or
    made before it existed: stores made before 2026-12-06, trusted once) takes it; none does if one is refused."""
    missing = []
    for c in spec.contenders:
        for st in studies[c.label]:
            old = st.user_attrs.get(MADE_WITH)
            if old is None:
                missing.append((st, made[c.label]))
                continue
            changes = _changes(old, made[c.label])
            if changes:
                path, was, now = changes[0]
                section, _, key = path.partition(".")
                field = {"tune": f"tune.{key}", "space": f"space.{key}",
                         "config": f"{key} (method {c.label}'s runs)",
                         "reporting config": f"{key} (method {c.label}'s reporting runs)"}[section]
                raise invalid(f"{_where(spec)}: {field}", now,
                              f"study {st.study_name!r} in {str(spec.study_path)!r} was made with {was!r}; a tune's "
                              "space, budget and method settings may not change once it has run (tune.studies, "
                              "widen, baselines and reporting_seeds may): give the tune a new name or store, or "
                              f"delete {str(spec.store)!r} and {str(spec.study_path)!r} to start over", ConfigError)
    for st, record in missing:
        st.set_user_attr(MADE_WITH, record)


def _storage(spec: TuneSpec, optuna: Any) -> Any:
    """The study file as Optuna storage; one that cannot be opened (an unwritable place, a file that is not an
    Optuna database) is one ConfigError naming it."""
    from sqlalchemy.exc import SQLAlchemyError

    path = spec.study_path
    try:
        return optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    except (SQLAlchemyError, RuntimeError, ValueError) as e:
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        raise ConfigError(f"tune {spec.name}: study file {str(path)!r} cannot be used ({reason}): it must be an "
                          "Optuna SQLite file (made by egd tune) in a writable directory; give another tune.store, or "
                          "move the file away to start the search over") from None


def check_methods(spec: TuneSpec) -> None:
    """Build each method's tuning and reporting configs once (task, model, loss and optimizer), so that a bad value
    in ``[set]``, ``[report_set]`` or a method's ``set`` (``"optimizer.momentum" = "abc"``) is one ConfigError
    naming the method before anything runs: otherwise each of its runs fails and the board reads ∞ for it."""
    from .build import build_loss, build_model, build_optimizer_from, make_task
    from .config import section_kwargs
    from .sweep.spec import canonical_json

    where = _where(spec)
    tasks: dict[str, Any] = {}
    for c in spec.contenders:
        for cfg in {canonical_json(cfg): cfg for cfg in (_resolved(spec, c, where),
                                                         _resolved(spec, c, where, reporting=True))}.values():
            try:
                key = canonical_json(cfg["task"])
                if key not in tasks:  # one task per setting: an MNIST or a text task is read once
                    tasks[key] = make_task(cfg["task"]["name"], **section_kwargs(cfg, "task"))
                build_loss(cfg)
                build_optimizer_from(cfg, build_model(cfg, tasks[key]))
            except ConfigError as e:
                raise ConfigError(f"{where}: methods.{c.label}: {e}") from None


class Studies(dict):  # type: ignore[type-arg]
    """:func:`search`'s result: each method's Optuna studies of the last round, by label; ``spec``: that round's
    spec (its widened space, ``round`` and ``history``), the one :func:`best` judges the winners' edges on;
    ``earlier``: each earlier round's ``(spec, studies)``, whose trials :func:`best` counts too."""

    spec: TuneSpec
    earlier: list[tuple[TuneSpec, dict[str, list[Any]]]]


def search(spec: TuneSpec, *, workers: int | None = None, backend: str = "local", address: str | None = None,
           log: Any = print) -> Studies:
    """Run (or continue) the search, widening round by round; returns each method's Optuna studies of the last
    round (``tune.studies`` of them, study ``k`` seeded ``tune.seed + k``) by method label, with that round's
    spec as ``.spec``.

    Round 0 searches the spec's space.  When it is complete and a winner of any study of any method lies at an
    edge of a range (``_winner``), that range is widened on that side for every method alike
    (:meth:`Dimension.widened`; a range at its limit is not; coarse-refine's stage-2 window, once the round is
    ``tune.window_widens_from`` or later, to twice its half-width) and round 1 searches the whole space again, the
    same stages and trials for every method, in new studies (:func:`study_name`); at most ``tune.widen``
    rounds.  A round's space depends on the spec and the earlier rounds' results only, so a killed search
    resumes in the round it was in, as an uninterrupted one would be (:func:`replay`)."""
    optuna = _import_optuna()
    fio.make_dir(spec.store.parent, f"tune {spec.name}: tune.store's directory")
    storage = _storage(spec, optuna)
    made = {c.label: made_with(spec, c) for c in spec.contenders}  # the spec's, in every round
    current, earlier = spec, []
    while True:
        studies = _search_round(current, optuna, storage, made, workers=workers, backend=backend, address=address,
                                log=log)
        nxt = _widened(current, studies) if current.round < spec.widen else None
        if nxt is None:
            out = Studies(studies)
            out.spec, out.earlier = current, earlier
            return out
        earlier.append((current, studies))
        log(f"tune {spec.name}: widening round {nxt.round}: " + "; ".join(
            f"{e['dimension']} {e['side']} edge -> " + (f"±{e['widened_to'][1]:g} decades" if e["dimension"]
                                                        == window_key(spec) else _range(e["widened_to"]))
            for e in nxt.history[-1]["edges"] if e["widened_to"]), flush=True)
        current = nxt


def _ranges(spec: TuneSpec) -> dict[str, list[float]]:
    """Each range dimension's ``[low, high]`` (as searched: factors when relative), and once a round widened
    coarse-refine's stage-2 window, that window's ``[-w, w]`` decades under :func:`window_key`."""
    out = {d.field: [d.low, d.high] for d in spec.space if d.choices is None}
    if spec.window != WINDOW:
        out[window_key(spec)] = [-spec.window, spec.window]
    return out


def _range(r: list[float]) -> str:
    return f"{r[0]:g}..{r[1]:g}"


def _widened(spec: TuneSpec, studies: dict[str, list[Any]]) -> TuneSpec | None:
    """The next round's spec: every range a winner of a study of ``spec``'s round reached an edge of, widened on
    that side (:meth:`Dimension.widened`); ``history`` gains this round's ranges and edges.  None when no range
    widens (no edge, or each at its limit)."""
    record = _round_record(spec, studies)
    if not any(e["widened_to"] for e in record["edges"]):
        return None
    space = []
    for d in spec.space:
        for e in record["edges"]:
            if e["dimension"] == d.field and e["widened_to"]:
                d = replace(d, low=e["widened_to"][0], high=e["widened_to"][1])
        space.append(d)
    window = max([spec.window] + [e["widened_to"][1] for e in record["edges"]
                                  if e["dimension"] == window_key(spec) and e["widened_to"]])
    return replace(spec, space=space, round=spec.round + 1, history=(*spec.history, record), window=window)


def _round_record(spec: TuneSpec, studies: dict[str, list[Any]]) -> dict[str, Any]:
    """A round's ranges, and each edge its winners reached: the dimension, the side, which studies of which
    methods (``"LABEL study K"``), and the range it widens to (None at its limit).  A censored winner (no trial
    of the study reached the threshold on the tuning seeds) widens nothing: its place in the range ranks by final
    accuracy, not by the board's measure, and widening reruns every method's search; the leaderboard still flags
    its edge."""
    hits: dict[tuple[str, str], list[str]] = {}
    for c in spec.contenders:
        for k, st in enumerate(studies[c.label]):
            w = _winner(spec, c, st)
            if w["censored"]:
                continue
            for key, side in w["edges"].items():
                hits.setdefault((key, side), []).append(f"{c.label} study {k}")
    edges, ranges = [], {key: list(r) for key, r in _ranges(spec).items()}
    for d in spec.space:
        for side in ("low", "high"):
            if (d.field, side) in hits:
                w = d.widened(side)
                to = None if w is None else [w.low, w.high]
                if to:  # both sides: the second widens the first's result
                    old = ranges[d.field]
                    to = [to[0], old[1]] if side == "low" else [old[0], to[1]]
                    ranges[d.field] = to
                edges.append({"dimension": d.field, "side": side, "hit_by": hits[(d.field, side)],
                              "widened_to": to, "at_limit": w is None})
    wkey = window_key(spec)
    for side in ("low", "high"):  # stage 2's window widens on both sides: it is centred on stage 1's best
        if (wkey, side) in hits and spec.round >= spec.window_from:
            to = 2 * spec.window
            edges.append({"dimension": wkey, "side": side, "hit_by": hits[(wkey, side)], "widened_to": [-to, to],
                          "at_limit": False})
    return {"round": spec.round, "ranges": _ranges(spec), "edges": edges}


def _search_round(spec: TuneSpec, optuna: Any, storage: Any, made: dict[str, dict[str, Any]], *,
                  workers: int | None, backend: str, address: str | None, log: Any) -> dict[str, list[Any]]:
    """Run (or continue) one round's search: its studies advance batch by batch, all methods' runs going
    through the one store (identical configurations share a run id, so they run once).  A study made with other
    settings than ``made`` is refused first (``_check_made_with``)."""
    studies = {
        c.label: [optuna.create_study(study_name=study_name(spec, c, k), storage=storage, direction="minimize",
                                      sampler=_sampler(spec, optuna, k), load_if_exists=True)
                  for k in range(spec.studies)]
        for c in spec.contenders
    }
    _check_made_with(spec, studies, made)
    if spec.round:  # a widening round's studies were made for its ranges: results or a spec changed since, refuse
        for st in (st for sts in studies.values() for st in sts):
            ranges = st.user_attrs.get("ranges")
            if ranges is None:
                st.set_user_attr("ranges", _ranges(spec))
            elif ranges != _ranges(spec):
                raise ConfigError(f"tune {spec.name}: study {st.study_name!r} searched {ranges}, but the spec and "
                                  f"results now give widening round {spec.round} the ranges {_ranges(spec)}: the "
                                  "spec changed since; give the tune a new name or store")
    running_state, done_states = optuna.trial.TrialState.RUNNING, (optuna.trial.TrialState.COMPLETE,)
    rounds = 0
    while True:
        pending: list[tuple[Contender, int, int, dict[str, Any]]] = []
        for c in spec.contenders:
            for k, study in enumerate(studies[c.label]):
                running = study.get_trials(deepcopy=False, states=(running_state,))
                asked = []
                for params, dists in _next_asks(spec, c, k, study, optuna):
                    study.enqueue_trial(params)
                    asked.append(study.ask(dists))
                pending += [(c, k, t.number, dict(t.params)) for t in running]
                pending += [(c, k, t.number, dict(t.params)) for t in asked]
        if not pending:
            return studies
        rounds += 1
        runs, of_trial = [], []
        for c, k, number, params in pending:
            rs = plan(spec, c, trial_values(spec, c, params), spec.tuning_seeds)
            runs += rs
            of_trial.append((c, k, number, [r.id for r in rs]))
        unique = list({r.id: r for r in runs}.values())
        counts = run_sweep(Sweep(name=f"{spec.name}-tuning", store=spec.store, baseline=None, runs=unique),
                           workers=workers, backend=backend, address=address)
        if counts.get("pending") or counts.get("running"):
            raise RuntimeError(f"tune {spec.name}: runs left unfinished; rerun to continue")
        with Store(spec.store, create=False) as store:
            rows = {r["id"]: r for r in store.runs([r.id for r in unique])}
        for c, k, number, ids in of_trial:
            studies[c.label][k].tell(number, score(spec, [rows[i] for i in ids]))
        total = _total_trials(spec)
        told = {c.label: sum(len(st.get_trials(deepcopy=False, states=done_states)) for st in studies[c.label])
                for c in spec.contenders}
        widening = f" (widening round {spec.round})" if spec.round else ""
        log(f"tune {spec.name}: round {rounds}{widening}, trials done " + ", ".join(
            f"{k} {v}/{total * spec.studies}" for k, v in told.items()), flush=True)


def _total_trials(spec: TuneSpec) -> int:
    """Trials per study: ``trials``, plus stage 1's grid with ``coarse-refine``."""
    return spec.trials + (len(coarse_grid(spec.space[0])) if spec.stages == "coarse-refine" else 0)


def value_text(v: Any) -> str:
    """A configuration value as tables print it: numbers to 3 significant figures, lists elementwise."""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    return f"{v:.3g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def choice_text(ch: Any) -> str:
    """A categorical choice by name: a value as itself; a table by its ``*.name`` value, then its other fields'
    last parts and values (``cosine (warmup_steps 10, min_factor 0.1)``)."""
    if not isinstance(ch, dict):
        return value_text(ch)
    names = [value_text(v) for k, v in ch.items() if k.rsplit(".", 1)[-1] == "name"]
    rest = [f"{k.rsplit('.', 1)[-1]} {value_text(v)}" for k, v in ch.items() if k.rsplit(".", 1)[-1] != "name"]
    return " ".join(names) + (f" ({', '.join(rest)})" if rest else "") if names else ", ".join(rest)


def trial_text(spec: TuneSpec, c: Contender, params: dict[str, Any]) -> str:
    """A trial's configuration in words: each searched field's last part and value, a choice by name."""
    chosen, keys = [], set()
    for d in spec.space:
        if d.choices is not None and d.field in params:
            chosen.append(choice_text(d.choices[params[d.field]]))
            keys |= set(d.setting(params[d.field]))
    rest = [f"{k.rsplit('.', 1)[-1]} {value_text(v)}" for k, v in trial_values(spec, c, params).items()
            if k not in keys]
    return ", ".join(rest + chosen)


def status(path: str | Path) -> str:
    """``egd tune SPEC --status``: how far a search is, from its store and studies, running nothing (a search
    may be running beside it).  Per sweep of the store, its runs by state; per widening round, method and study,
    the trials done and under way, the stage (``coarse-refine``) and the best trial so far with its values."""
    spec = load_tune(path)
    if not spec.store.exists() or not spec.study_path.exists():
        raise ConfigError(f"tune {spec.name}: no store {str(spec.store)!r} (or its studies): nothing has run yet; "
                          f"`egd tune {path}` starts the search")
    n = _total_trials(spec)
    lines = [f"tune {spec.name}: {len(spec.contenders)} methods x {spec.studies} studies x {n} trials x "
             f"{len(spec.tuning_seeds)} tuning seeds; store {spec.store}"]
    with Store(spec.store, create=False) as store:
        counts = Counter((r["sweep"], r["status"]) for r in store.runs())
    for sweep in dict.fromkeys(sw for sw, _ in counts):  # in the store's order
        lines.append(f"sweep {sweep}: " + ", ".join(f"{counts[sweep, k]} {k}" for k in JOB_STATES
                                                   if counts[sweep, k]))
    optuna = _import_optuna()
    storage = f"sqlite:///{spec.study_path}"
    names = set(optuna.study.get_all_study_names(storage))
    grid = len(coarse_grid(spec.space[0])) if spec.stages == "coarse-refine" else 0
    state = optuna.trial.TrialState
    for r in range(spec.widen + 1):
        rspec = replace(spec, round=r)
        rows = []
        for c in spec.contenders:
            for k in range(spec.studies):
                name = study_name(rspec, c, k)
                if name not in names:
                    continue
                trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
                done = [t for t in trials if t.state == state.COMPLETE]
                running = sum(t.state == state.RUNNING for t in trials)
                stage = "" if not grid else ("1" if len(done) < grid else "2")  # stage 2 starts once 1 is told
                top = min(done, key=lambda t: (t.value, t.number)) if done else None
                if top is None:
                    best, values = "-", "-"
                elif spec.metric != "loss" and top.value >= CENSORED:
                    best, values = f"none (test acc {CENSORED + 1 - top.value:.3f})", trial_text(rspec, c, top.params)
                else:
                    best, values = f"{top.value:g}", trial_text(rspec, c, top.params)
                rows.append([c.label, str(k), f"{len(done)}/{n}", str(running), stage, best, values])
        if rows:
            unit = "final test loss" if spec.metric == "loss" else f"{spec.metric}, median over tuning seeds"
            lines += ["", f"widening round {r}" + ("" if r else " (the spec's ranges)"), markdown_table(
                ["method", "study", "trials done", "under way", "stage", f"best so far ({unit})", "its values"],
                rows)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ leaderboard


def _winner(spec: TuneSpec, c: Contender, study: Any) -> dict[str, Any]:
    """A study's best trial (smallest value; the first one on a tie): its searched values (as the sampler saw
    them), config values, value, and edges: the outer ``EDGE`` of a range (in log position for log ranges), or
    with ``coarse-refine``, stage 1's best at an end of its grid (the first dimension).  ``at_limit``: the
    edges a widening cannot move (:meth:`Dimension.widened`); ``fields``: the field a dimension set for this
    method where it is not the dimension's key (``fields = [...]``, e.g. ``optimizer.betas.0``)."""
    trials = [t for t in study.trials if t.value is not None]
    t = min(trials, key=lambda t: (t.value, t.number))
    edges = {}
    for d in spec.space:
        if d.choices is not None or d.field not in t.params or (d.off and t.params.get(d.off_param)):
            continue
        pos = d.position(t.params[d.field]) if d.high > d.low else 0.5
        if pos <= EDGE:
            edges[d.field] = "low"
        elif pos >= 1 - EDGE:
            edges[d.field] = "high"
    if spec.stages == "coarse-refine":
        first, grid = spec.space[0], coarse_grid(spec.space[0])
        stage1 = [u for u in study.trials[:len(grid)] if u.value is not None]
        if len(stage1) == len(grid) > 1:
            x = min(stage1, key=lambda u: (u.value, u.number)).params[first.field]
            side = "low" if x == grid[0] else "high" if x == grid[-1] else None
            if side:
                edges.setdefault(first.field, side)
            elif t.number >= len(grid) and first.field in t.params:  # a stage-2 winner: where in its window?
                lo, hi = refine_window(spec, x)
                pos = (math.log(t.params[first.field]) - math.log(lo)) / (math.log(hi) - math.log(lo))
                side = "low" if pos <= EDGE and lo != first.limit_low else \
                    "high" if pos >= 1 - EDGE and hi != first.limit_high else None
                if side:
                    edges[window_key(spec)] = side
    out = {"trial": t.number, "searched": dict(t.params), "values": trial_values(spec, c, t.params),
           "tuning_value": t.value, "censored": t.value >= CENSORED, "edges": edges, "trials": len(trials)}
    by = {d.field: d for d in spec.space}
    at_limit = [key for key, side in edges.items() if key in by and by[key].widened(side) is None]
    fields = {key: f for key, f in searched_fields(spec, c).items() if f != key and key in t.params}
    if at_limit:
        out["at_limit"] = at_limit
    if fields:
        out["fields"] = fields
    return out


def _carried(final: TuneSpec, spec: TuneSpec, w: dict[str, Any]) -> dict[str, Any]:
    """A winner of round ``spec`` judged on the last round ``final``: an edge of a range that no later round
    widened stays; on a range widened since, the winner is judged again on the widened range (its position, the
    outer ``EDGE``); stage 2's window edge stays only if the window was not widened since."""
    if spec.round == final.round:
        return w
    then, now, by = _ranges(spec), _ranges(final), {d.field: d for d in final.space}
    edges = {}
    for key, side in w["edges"].items():
        if then.get(key) == now.get(key) or (key == window_key(final) and spec.window == final.window):
            edges[key] = side
        elif key in by and key in w["searched"]:
            pos = by[key].position(w["searched"][key])
            if (side == "low" and pos <= EDGE) or (side == "high" and pos >= 1 - EDGE):
                edges[key] = side
    out = {**w, "edges": edges}
    out.pop("at_limit", None)
    at_limit = [key for key, side in edges.items() if key in by and by[key].widened(side) is None]
    if at_limit:
        out["at_limit"] = at_limit
    return out


def best(spec: TuneSpec, studies: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per method: study 0's best trial (``_winner``); with several studies, ``per_study`` lists every
    study's best trial, each with its ``study`` number.  After a widening, study ``k``'s best trial is the best
    of study ``k``'s trials in every round (smallest value; on a tie the earlier round, then the earlier trial),
    with its ``round``: every method has the same rounds and trials, so a later round adds trials without
    discarding the earlier ones, which lie inside its ranges.  The winners are judged on the space of the last
    round (``studies.spec`` of :func:`search`'s result, else ``spec``; ``_carried``); each winner carries
    ``rounds``: every round's ranges and the edges its winners reached (the last round's: those still flagged)."""
    spec = getattr(studies, "spec", spec)
    def listed(sts: dict[str, Any]) -> dict[str, list[Any]]:  # a one-study search may hold bare studies
        return {label: ss if isinstance(ss, list) else [ss] for label, ss in sts.items()}

    rounds_searched = [(r_spec, listed(r_studies)) for r_spec, r_studies in
                       [*getattr(studies, "earlier", []), (spec, studies)]]
    out = {}
    for c in spec.contenders:
        ws = []
        for k in range(len(rounds_searched[-1][1][c.label])):
            found = []
            for r_spec, r_studies in rounds_searched:
                st = r_studies[c.label][k]
                if any(t.value is not None for t in st.trials):
                    w = _winner(r_spec, c, st)
                    found.append({**_carried(spec, r_spec, w), "round": r_spec.round} if spec.history else w)
            ws.append(min(found, key=lambda w: (w["tuning_value"], w.get("round", 0), w["trial"])))
        out[c.label] = dict(ws[0])
        if len(ws) > 1:
            out[c.label]["per_study"] = [{"study": k, **w} for k, w in enumerate(ws)]
    if spec.history:
        last = _round_record(spec, rounds_searched[-1][1])
        last["edges"] = [{**e, "widened_to": None} for e in last["edges"]]  # the last round: flagged, not widened
        rounds = [*spec.history, last]
        for w in out.values():
            w["rounds"] = rounds
            for p in w.get("per_study", []):
                p["rounds"] = rounds
    return out


def _headline(spec: TuneSpec, entry: dict[str, Any]) -> float:
    """The number a leaderboard ranks by: the KM median of the metric, or the median final test loss."""
    if spec.metric == "loss":
        return entry["final_loss"]["median"] if entry["final_loss"] else math.inf
    return entry[spec.metric]["median"]


OPTIONAL_WINNER_KEYS = ("at_limit", "fields", "round", "searched")
"""Keys of a winner (``_winner``, :func:`best`) that a per-study entry of the leaderboard keeps when present."""


def across_studies(values: list[float]) -> dict[str, Any]:
    """Per-study held-out medians -> the median across studies, the spread (min, max: tuning luck), and the
    representative study: the first whose value is the lower median (the study whose configuration the
    leaderboard row shows)."""
    low = statistics.median_low(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "study": values.index(low), "per_study": list(values)}


def pooled_study(per_study: list[dict[str, Any]]) -> int:
    """The study that every study of a method pooled into one search picks: the one whose winner has the lowest
    tuning value (ties: the earlier study).  The reporting seeds play no part.  ``per_study``: a leaderboard row's
    (each entry with ``study`` and ``tuning_value``)."""
    return min(per_study, key=lambda s: (s["tuning_value"], s["study"]))["study"]


def report(spec: TuneSpec, winners: dict[str, dict[str, Any]], *, workers: int | None = None,
           backend: str = "local", address: str | None = None) -> list[dict[str, Any]]:
    """Re-run each method's best configuration (of each study) on the reporting seeds; the leaderboard rows,
    best first.  With several studies a row is the representative study's (:func:`across_studies`), with
    ``across`` (median across studies and spread) and ``per_study`` (each study's best and held-out value)."""
    per = {c.label: winners[c.label].get("per_study") or [winners[c.label]] for c in spec.contenders}
    n_studies = len(per[spec.contenders[0].label])
    runs: dict[tuple[str, int], list[PlannedRun]] = {
        (c.label, k): plan(spec, c, per[c.label][k]["values"], spec.reporting_seeds, reporting=True)
        for c in spec.contenders for k in range(n_studies)
    }
    every = list({r.id: r for rs in runs.values() for r in rs}.values())
    run_sweep(Sweep(name=f"{spec.name}-report", store=spec.store, baseline=None, runs=every), workers=workers,
              backend=backend, address=address)
    with Store(spec.store, create=False) as store:
        rows = {r["id"]: r for r in store.runs([r.id for r in every])}
        curves = {r.id: store.metrics(r.id) for r in every} if spec.metric == "loss" else {}
    boards = []
    for k in range(n_studies):
        board_k: list[dict[str, Any]] = []
        outcomes_k: dict[str, dict[str, tuple[list[float], list[bool]]]] = {}
        for c in spec.contenders:
            rs = runs[(c.label, k)]
            w = {key: v for key, v in per[c.label][k].items() if key != "study"}
            done = [rows[r.id]["summary"] for r in rs if rows[r.id]["status"] == "done"]
            entry: dict[str, Any] = {"method": c.label, "runs": len(rs), "done": len(done),
                                     "grokked": sum(bool(s.get("grokked")) for s in done), **w}
            outcomes_k[c.label] = {}
            for m in METRICS:
                pairs = [outcome(s, m) for s in done]
                t, e = [p[0] for p in pairs], [p[1] for p in pairs]
                outcomes_k[c.label][m] = (t, e)
                entry[m] = {"median": km_median(t, e), "ci": list(km_ci(t, e)) if t else [math.nan, math.nan]}
            board_k.append(entry)
        if spec.metric == "loss":
            _loss_readings(spec, board_k, {c.label: [rows[r.id] for r in runs[(c.label, k)]] for c in spec.contenders},
                           {c.label: [curves[r.id] for r in runs[(c.label, k)]] for c in spec.contenders}, outcomes_k)
        boards.append((board_k, outcomes_k))
    if n_studies == 1:
        board, outcomes = boards[0]
    else:
        board, outcomes = [], {}
        for i, c in enumerate(spec.contenders):
            values = [_headline(spec, boards[k][0][i]) for k in range(n_studies)]
            across = across_studies(values)
            rep = across["study"]
            entry = dict(boards[rep][0][i])
            entry["study"] = rep
            entry["across"] = {key: across[key] for key in ("median", "min", "max")}
            entry["per_study"] = [{"study": k, "values": boards[k][0][i]["values"], "edges": boards[k][0][i]["edges"],
                                   "trial": boards[k][0][i]["trial"], "tuning_value": boards[k][0][i]["tuning_value"],
                                   "median": values[k], **{key: boards[k][0][i][key] for key in OPTIONAL_WINNER_KEYS
                                                           if key in boards[k][0][i]}} for k in range(n_studies)]
            board.append(entry)
            outcomes[c.label] = boards[rep][1][c.label]
    for entry in board:
        entry["speedup"] = {}
        for b in spec.baselines:
            bm, gm = outcomes[b][spec.metric], outcomes[entry["method"]][spec.metric]
            num, den = km_median(*bm), km_median(*gm)
            ratio = math.nan if math.isinf(num) and math.isinf(den) else (num / den if den else math.inf)
            ci = list(km_ratio_ci(bm, gm)) if bm[0] and gm[0] else [math.nan, math.nan]
            # one side did not reach the threshold: bound the speed-up by that side's budget
            def budget(o: tuple[list[float], list[bool]]) -> float:
                return max([t for t, e in zip(*o, strict=True) if not e and math.isfinite(t)], default=math.nan)

            at_least = budget(bm) / den if math.isinf(num) and math.isfinite(den) and den else None
            at_most = num / budget(gm) if math.isinf(den) and math.isfinite(num) else None
            at_least = at_least if at_least is not None and math.isfinite(at_least) else None  # diverged: no bound
            at_most = at_most if at_most is not None and math.isfinite(at_most) else None
            entry["speedup"][b] = {"ratio": ratio, "ci": ci, "at_least": at_least, "at_most": at_most}
    if n_studies > 1:
        board.sort(key=lambda e: (e["across"]["median"], _headline(spec, e), -e["grokked"]))
    elif spec.metric == "loss":
        board.sort(key=lambda e: e["final_loss"]["median"])
    else:
        board.sort(key=lambda e: (e[spec.metric]["median"], -e["grokked"]))
    if spec.metric in ("steps", "epochs") and board:
        res = _resolution(spec, [rows[r.id]["summary"] for r in every if rows[r.id]["status"] == "done"])
        value = [e["across"]["median"] if "across" in e else e[spec.metric]["median"] for e in board]
        for entry, v in zip(board, value, strict=True):
            entry["resolution"] = res
            entry["tie_with_leader"] = is_tie(value[0], v, res, res)
    return board


def _resolution(spec: TuneSpec, summaries: list[dict[str, Any]]) -> float:
    """The reporting runs' evaluation spacing in the board's unit (steps or epochs): a time to the threshold is the
    first evaluation at or above it, so it is known to within this (``sweep.profiles.first_at_or_above``).  With
    ``train.refine_grok`` the crossing is replayed step by step (:mod:`egalitarian.train`): one step."""
    tc = board_train(spec, reporting=True)
    per_epoch = next((s["steps_per_epoch"] for s in summaries if s.get("steps_per_epoch")), 1)
    if tc.get("refine_grok"):  # left out of the resolved config while false
        return 1 if spec.metric == "steps" else 1 / per_epoch
    if spec.metric == "steps":
        return tc["eval_every"] * (per_epoch if tc["eval_unit"] == "epoch" else 1)
    return tc["eval_every"] / (per_epoch if tc["eval_unit"] == "step" else 1)


def _loss_readings(spec: TuneSpec, board: list[dict[str, Any]], rows: dict[str, list[dict[str, Any]]],
                   curves: dict[str, list[Any]], outcomes: dict[str, dict[str, Any]]) -> None:
    """``metric = "loss"``: each entry's final test loss (median, min, max over its reporting runs; a failed or
    diverged run counts as ``CENSORED``), its median test loss at 1/3 and 2/3 of the step budget (the nearest
    evaluation; none without a step budget), and ``entry["loss"]``, the Kaplan–Meier median steps to the target
    (the first baseline's median final test loss; none without baselines), whose (steps, reached) pairs go into
    ``outcomes[label]["loss"]``."""
    tc = board_train(spec)
    every = tc["eval_every"] if tc["eval_unit"] == "step" else 1
    at = [round(tc["max_steps"] * f / every) * every for f in (1 / 3, 2 / 3)] if tc["max_steps"] else []
    finals = {label: [_final_loss(r) for r in rs] for label, rs in rows.items()}
    target = statistics.median(finals[spec.baselines[0]]) if spec.baselines else math.nan
    for entry in board:
        label = entry["method"]
        f = finals[label]
        entry["final_loss"] = {"median": statistics.median(f), "min": min(f), "max": max(f)} if f else None
        entry["loss_at"] = {str(step): statistics.median([dict(loss_curve(c)).get(step, math.nan)
                                                          for c in curves[label]]) for step in at}
        pairs = [loss_outcome(c, target, nonfinite=(r["summary"] or {}).get("status") == "nonfinite")
                 for c, r in zip(curves[label], rows[label], strict=True)]
        t, e = [p[0] for p in pairs], [p[1] for p in pairs]
        outcomes[label]["loss"] = (t, e)
        entry["target_loss"] = target
        entry["reached"] = sum(e)
        entry["loss"] = {"median": km_median(t, e) if t else math.inf,
                         "ci": list(km_ci(t, e)) if t else [math.nan, math.nan]}


def _fmt_values(entry: dict[str, Any]) -> str:
    """A winner's values as ``lr=0.1 (low edge), momentum=0.9``; a dimension with ``fields`` shows the field it
    set for this method (``momentum=0.9`` for SGD, ``betas.0=0.8`` for AdamW: the pair's searched element)."""
    key_of = {f: key for key, f in entry.get("fields", {}).items()}  # the field set -> the dimension's key
    limited = set(entry.get("at_limit", ()))

    def flag(key: str) -> str:
        edge = entry["edges"].get(key)
        window = entry["edges"].get(f"{key} window")  # a stage-2 winner at an end of its window
        return (f" ({edge} edge{', at its limit' if key in limited else ''})" if edge else
                f" ({window} edge of stage 2's window)" if window else "")

    def short(k: str) -> str:
        return k.split(".", 1)[1] if k.startswith("optimizer.") else k  # loss.weight_decay, scheduler.name

    parts = []
    for k, v in entry["values"].items():
        elements = sorted(f for f in key_of if f.rsplit(".", 1)[0] == k)
        if elements and isinstance(v, list):
            parts += [f"{short(f)}={v[int(f.rsplit('.', 1)[1])]:g}" + flag(key_of[f]) for f in elements]
            continue
        text = f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
        parts.append(f"{short(k)}={text}" + flag(key_of.get(k, k)))
    return ", ".join(parts)


def _fmt_dimension(d: Dimension) -> str:
    if d.choices is not None:
        text = f"{d.field} one of " + " | ".join(
            "{" + ", ".join(f"{k}={v}" for k, v in ch.items()) + "}" if isinstance(ch, dict) else str(ch)
            for ch in d.choices)
    else:
        limits = ("" if d.limit_low is None and d.limit_high is None else
                  f", widened within [{'-∞' if d.limit_low is None else f'{d.limit_low:g}'}, "
                  f"{'∞' if d.limit_high is None else f'{d.limit_high:g}'}]")
        text = (f"{d.field}" + (f" ({' or '.join(d.alternatives)}, the first a method has)" if d.alternatives else "")
                + f" {'log-' if d.log else ''}uniform {d.low:g}..{d.high:g}"
                + (" × the method's own value" if d.relative else "") + (f", {d.points} points" if d.points else "")
                + (" or 0 (off)" if d.off else "") + limits)
    return text + (" (methods without the field, or with it inert, lack it)" if d.optional else "")


def last_round(spec: TuneSpec, board: list[dict[str, Any]]) -> TuneSpec:
    """``spec`` with the ranges of the last widening round its board's winners came from (``rounds``)."""
    rounds = board[0].get("rounds") if board else None
    if not rounds:
        return spec
    last = rounds[-1]["ranges"]
    return replace(spec, space=[replace(d, low=last[d.field][0], high=last[d.field][1]) if d.field in last else d
                                for d in spec.space], round=rounds[-1]["round"],
                   window=last.get(window_key(spec), [-WINDOW, WINDOW])[1])


def _widening_text(rounds: list[dict[str, Any]]) -> str:
    """The rounds of a widened search: each round's widened ranges and the edges that widened them."""
    keys = list(dict.fromkeys(key for r in rounds for key in r["ranges"]))
    window = [key for key in keys if key.endswith(" window")]  # stage 2's window, [-w, w] decades, once widened

    def at(r: dict[str, Any], key: str) -> list[float]:
        return r["ranges"].get(key, [-WINDOW, WINDOW] if key in window else None)

    def text(key: str, to: list[float]) -> str:
        return f"±{to[1]:g} decades" if key in window else _range(to)

    moved = [key for key in keys if len({tuple(at(r, key) or ()) for r in rounds}) > 1]
    parts = []
    for r in rounds:
        edges = "; ".join(f"{e['dimension']} {e['side']} edge ({', '.join(e['hit_by'])})" + (
            f" -> {text(e['dimension'], e['widened_to'])}" if e["widened_to"] else
            ", at its limit" if e["at_limit"] else "")
            for e in r["edges"])
        parts.append(f"round {r['round']}: " + ", ".join(f"{key} {text(key, at(r, key))}" for key in moved)
                     + f" ({edges or 'no edge'})")
    return ("Ranges widened for every method alike, each round a whole new search in the widened ranges; each "
            "study's winner is its best trial of every round: " + "; ".join(parts) + ".")


def _stage_text(spec: TuneSpec) -> str:
    if spec.stages != "coarse-refine":
        return ""
    first = spec.space[0]
    grid = coarse_grid(first)
    return (f" Two stages for every method: {len(grid)} points ×√10 apart over the whole range of {first.field} "
            f"(other dimensions at the method's own values), then {spec.trials} {spec.sampler} trials with "
            f"{first.field} over one decade (×1/√10..×√10) around stage 1's best and the other dimensions over "
            "their ranges.")


def leaderboard_markdown(spec: TuneSpec, board: list[dict[str, Any]]) -> str:
    """The leaderboard as a Markdown table with the budget stated above it (and, after a widening, every
    round's ranges and the edges that widened them)."""
    spec = last_round(spec, board)
    tc = board_train(spec)
    dims = "; ".join(_fmt_dimension(d) for d in spec.space)
    k = spec.studies
    multi = bool(board) and all("across" in e for e in board)  # a board of several studies (a re-timed one: not)
    trials = f"{_total_trials(spec)} trials" if spec.stages == "coarse-refine" else f"{spec.trials} trials"
    sampler = (f"{spec.sampler} sampler, seed {spec.seed}" if k == 1 else
               f"{k} studies per method, {spec.sampler} sampler seeds {spec.seed}..{spec.seed + k - 1}")
    unit = {"steps": "steps", "epochs": "epochs", "seconds": "s", "loss": "steps"}[spec.metric]
    objective = (f"median final test loss over tuning seeds {spec.tuning_seeds}" if spec.metric == "loss" else
                 f"median {spec.metric} to test accuracy >= {tc['grok_threshold']} over tuning seeds "
                 f"{spec.tuning_seeds}")
    lines = [
        f"Tune `{spec.name}`: {len(spec.contenders)} methods, {trials} {'each' if k == 1 else 'per study'} "
        f"({sampler}), the same space for "
        f"every method: {dims}.{_stage_text(spec)}",
        f"Objective: {objective}; evaluation every {tc['eval_every']} {tc['eval_unit']}(s); budget "
        f"{tc['max_epochs'] or '-'} epochs / {tc['max_steps'] or '-'} steps. Reported on seeds "
        f"{spec.reporting_seeds}: Kaplan-Meier medians (censored runs counted) with 95% bootstrap CIs."
        + _report_cadence(tc, board_train(spec, reporting=True))
        + (" Fewer than 5 reporting seeds: a smoke test, not a result." if len(spec.reporting_seeds) < 5 else ""),
        "",
    ]
    if board and board[0].get("rounds"):
        lines.insert(-1, _widening_text(board[0]["rounds"]))
    if multi:
        lines.insert(-1, f"Each of the {k} studies' best configuration is re-run on the reporting seeds; a row gives "
                     "the median across studies of those held-out medians, their spread (min-max: tuning luck), and "
                     "the median study's configuration and readings (the lower middle one for an even number).")
    if spec.metric == "loss":
        if spec.baselines and board:
            lines.insert(-1, f"Target loss: {spec.baselines[0]}'s median final test loss, "
                         f"{_loss(board[0]['target_loss'])}; steps to it: the first evaluation at or below it, a run "
                         "that never gets there censored.")
        header = ["method", "best hyperparameters", "final test loss, median [min, max]",
                  *(f"loss @ {step} (median)" for step in (board[0]["loss_at"] if board else {})),
                  "KM median steps to target [95% CI] (reached)"]
    else:
        header = ["method", "best hyperparameters", "grokked", f"KM median {unit} [95% CI]",
                  "KM median seconds [95% CI]"]
    if multi:
        what = "final test loss" if spec.metric == "loss" else f"KM median {unit}"
        header[1] = "best hyperparameters (median study)"
        header[2:2] = [f"{what}: median across {k} studies", "spread across studies [min, max]"]
    header += [f"speed-up vs {b}" for b in spec.baselines]
    rows = []
    for e in board:
        if spec.metric == "loss":
            f = e["final_loss"] or {"median": math.nan, "min": math.nan, "max": math.nan}
            cells = [e["method"], _fmt_values(e), f"{_loss(f['median'])} [{_loss(f['min'])}, {_loss(f['max'])}]",
                     *(_loss(v) for v in e["loss_at"].values()),
                     f"{km_cell(e['loss'])} ({e['reached']}/{e['runs']})".replace("inf", "∞")]
        else:
            cells = [e["method"], _fmt_values(e), f"{e['grokked']}/{e['done']}",
                     km_cell(e[spec.metric]).replace("inf", "∞"), km_cell(e["seconds"], 3).replace("inf", "∞")]
        if multi:
            a = e["across"]
            cells[2:2] = [_value(spec, a["median"]), f"[{_value(spec, a['min'])}, {_value(spec, a['max'])}]"]
        cells += [_speedup_cell(e["speedup"][b], b) for b in spec.baselines]
        rows.append(cells)
    lines.append(markdown_table(header, rows))
    if multi:
        what = "median final test loss" if spec.metric == "loss" else f"KM median {unit}"
        rounds = bool(board) and "round" in board[0]["per_study"][0]
        lines += ["", "Per study" + (" (its best trial of every round: the round it came from)" if rounds else "")
                  + ":", "", markdown_table(
            ["method", "study (sampler seed)", *(["round"] if rounds else []), "best hyperparameters", "tuning value",
             f"held-out {what}"],
            [[e["method"], f"{s['study']} ({spec.seed + s['study']})", *([str(s["round"])] if rounds else []),
              _fmt_values(s), _value(spec, s["tuning_value"]), _value(spec, s["median"])]
             for e in board for s in e["per_study"]])]
        winners = [(e["method"], s) for e in board for s in e["per_study"]]
    else:
        winners = [(e["method"], e) for e in board]
    edged = list(dict.fromkeys(m for m, w in winners if set(w["edges"]) - set(w.get("at_limit", ()))
                               and w["tuning_value"] < CENSORED))
    censored = list(dict.fromkeys(m for m, w in winners if set(w["edges"]) - set(w.get("at_limit", ()))
                                  and w["tuning_value"] >= CENSORED))
    limited = list(dict.fromkeys(m for m, w in winners if w.get("at_limit")))
    if censored:
        lines += ["", "At an edge but censored (no trial reached the threshold: its place ranks by final accuracy, "
                  f"so it widens nothing): {', '.join(censored)}."]
    if edged and spec.widen:
        lines += ["", f"At an edge of the search range after {spec.round} widening round(s) (tune.widen = "
                  f"{spec.widen}; raise it to widen again): {', '.join(edged)}."]
    elif edged:
        lines += ["", f"At an edge of the search range (widen it to be sure): {', '.join(edged)}."]
    if limited:
        lines += ["", f"At an edge that is the range's limit (limit_low/limit_high: not widened): "
                  f"{', '.join(limited)}."]
    if board and "resolution" in board[0]:
        res, tied = board[0]["resolution"], [e["method"] for e in board[1:] if e["tie_with_leader"]]
        how = ("find the first step at or above the threshold by replaying the last interval step by step "
               "(train.refine_grok)" if board_train(spec, reporting=True).get("refine_grok") else
               f"evaluate every {res:g} {spec.metric}")
        lines += ["", f"Resolution: the reporting runs {how}, so a time is known to "
                  f"within {res:g} {spec.metric}; tied with the leader ({board[0]['method']}) within it: "
                  f"{', '.join(tied) if tied else 'none'}."]
    return "\n".join(lines) + "\n"


def _value(spec: TuneSpec, x: float) -> str:
    """A per-study number: a loss to 4 decimals, a time as ``:g``; censored reads ``> budget``."""
    if spec.metric == "loss":
        return _loss(x)
    if math.isinf(x) or x >= CENSORED:
        return "> budget"
    return f"{x:g}"


def _loss(x: float) -> str:
    """A loss to 4 decimals; a failed or diverged run (``CENSORED``) or none (NaN) reads ``-``."""
    return "-" if math.isnan(x) or x >= CENSORED else f"{x:.4f}"


def _speedup_cell(x: dict[str, Any], baseline: str) -> str:
    """A speed-up against ``baseline`` as one cell: ratio [CI], or a bound when one side is censored."""
    if x["at_least"] is not None:
        return f"> {x['at_least']:.2f} ({baseline} censored)"
    if x["at_most"] is not None:
        return f"< {x['at_most']:.2f} (censored)"
    if math.isnan(x["ratio"]):
        return "-"
    return f"{x['ratio']:.2f} [{x['ci'][0]:.2f}, {x['ci'][1]:.2f}]".replace("inf", "∞")


def _report_cadence(tuning: dict[str, Any], reporting: dict[str, Any]) -> str:
    """The reporting runs' evaluation cadence when ``[report_set]`` makes it differ from the tuning runs'."""
    cadence = (reporting["eval_every"], reporting["eval_unit"])
    refine = " and replay the interval in which they first reach the threshold step by step (train.refine_grok)"
    refine = refine if reporting.get("refine_grok") and not tuning.get("refine_grok") else ""
    if cadence == (tuning["eval_every"], tuning["eval_unit"]):
        return f" Reporting runs evaluate as the tuning runs{refine}." if refine else ""
    return f" Reporting runs evaluate every {cadence[0]} {cadence[1]}(s){refine}."


def board_train(spec: TuneSpec, reporting: bool = False) -> dict[str, Any]:
    """The resolved ``[train]`` of the first method (the threshold and cadence the leaderboard states); with
    ``reporting``, that of the reporting runs (``[report_set]`` applied)."""
    return _resolved(spec, spec.contenders[0], f"tune {spec.name}", reporting=reporting)["train"]


def tune(path: str | Path, *, workers: int | None = None, backend: str = "local", address: str | None = None,
         log: Any = print) -> list[dict[str, Any]]:
    """``egd tune``: search, report, print and write the leaderboard (``STORE-leaderboard.md`` and ``.json``).

    Each method's configs are built first (:func:`check_methods`), and the command holds ``STUDY_FILE.lock`` from
    start to end, so a second ``egd tune`` of the same store is refused at once (the sweep lock is held only while
    runs run, and between them the studies are asked and told)."""
    spec = load_tune(path)
    check_methods(spec)
    fio.make_dir(spec.store.parent, f"tune {spec.name}: tune.store's directory")
    lock = spec.study_path.with_name(spec.study_path.name + ".lock")
    with fio.exclusive(lock, lambda who: ConfigError(
            f"tune {spec.name}: study file {str(spec.study_path)!r} is in use by another `egd tune` ({who}); wait for "
            "it to finish or stop it")):
        return _tune(spec, workers=workers, backend=backend, address=address, log=log)


def _tune(spec: TuneSpec, *, workers: int | None, backend: str, address: str | None,
          log: Any) -> list[dict[str, Any]]:
    n = _total_trials(spec)
    n_runs = n * spec.studies * len(spec.tuning_seeds) * len(spec.contenders)
    studies = f" x {spec.studies} studies" if spec.studies > 1 else ""
    widen = f", and up to {spec.widen} widening round(s) if a winner is at an edge" if spec.widen else ""
    log(f"tune {spec.name}: {len(spec.contenders)} methods{studies} x {n} trials x {len(spec.tuning_seeds)} tuning "
        f"seeds (at most {n_runs} runs{widen}), then {len(spec.reporting_seeds)} reporting seeds -> {spec.store}",
        flush=True)
    found = search(spec, workers=workers, backend=backend, address=address, log=log)
    spec = found.spec  # the last widening round's: its ranges
    winners = best(spec, found)
    board = report(spec, winners, workers=workers, backend=backend, address=address)
    text = leaderboard_markdown(spec, board)
    out = spec.store.with_name(spec.store.stem + "-leaderboard")
    fio.write_text(out.with_suffix(".md"), text)
    fio.write_text(out.with_suffix(".json"), json.dumps(finite_json(board), indent=2) + "\n")
    log("\n" + text + f"\nleaderboard: {out.with_suffix('.md')}", flush=True)
    return board

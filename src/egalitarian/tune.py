"""``egd tune SPEC.toml``: every method tuned with the same budget, then measured on held-out seeds.

A tune spec (docs/TUNING.md has every field) names a base config, the methods to compare, ONE search space
and ONE number of trials: every method gets the same budget and the same search-space shape.  Ranges are
given as factors of each method's own value (``relative = true``: the recipe's or the registry's default), so
"lr log-uniform over 1e-2..1e2 × the default" means four decades around every method's default.

How it runs:

1. **Search.** One Optuna study per method (ask/tell, seeded sampler: TPE, random or a grid; no pruner: a
   grokking run sits at chance until it jumps, so pruning on test accuracy would kill the slow methods under
   comparison).  Each asked trial becomes one run per *tuning seed*, executed by the sweep executor into the
   results store (process isolation, local or Ray, resumable; a run's id is its config hash, so a repeated
   configuration is never run twice).  A trial's value is the median over its tuning seeds of the steps
   (or epochs, or seconds) to the accuracy threshold, a censored run counting as infinite; a trial whose
   median is censored ranks after every success, by its mean final test accuracy
   (``CENSORED + 1 − accuracy``).  With ``metric = "loss"`` (models that do not grok: a language model, a CNN)
   a trial's value is the median over its tuning seeds of the final test loss (a failed or diverged run
   counting as ``CENSORED``).
2. **Report.** The best trial of each method is re-run on the *reporting seeds* (disjoint from the tuning
   seeds) as a normal sweep, and the leaderboard gives per method: the best hyperparameters (``edge`` when
   a winner sits at an end of its range: widen it), the success rate, the Kaplan–Meier medians of steps and
   seconds with bootstrap CIs, and speed-ups against each baseline method's tuned best.  With ``metric =
   "loss"`` it gives instead the final test loss (median, min, max), the test loss at 1/3 and 2/3 of the step
   budget, and the steps to the target loss, the first baseline's median final test loss: the first evaluation
   at which a run's test loss is at or below it, a run that never gets there censored
   (:func:`egalitarian.sweep.stats.loss_outcome`), as a Kaplan–Meier median with a bootstrap CI; the speed-ups
   are ratios of those medians.

Rerunning the command continues: finished runs are kept, trials asked but not told (a killed search) are
completed with the runs they already have, no trial beyond the budget is asked, and the trials asked next are
those an uninterrupted search asks (see :func:`replay`).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import io as fio
from .config import load_config, load_toml, toml_table
from .errors import ConfigError, check
from .report import markdown_table
from .sweep import Store, Sweep, expand, run_sweep
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

CENSORED = 1e9
"""A trial whose median run did not reach the threshold scores ``CENSORED + 1 − mean final test accuracy``."""

OBJECTIVES = (*METRICS, "loss")
"""``tune.metric``: time (epochs, steps, seconds) to the accuracy threshold, or the final test loss."""
SAMPLERS = ("tpe", "random", "grid")
TOP_LEVEL = ("base", "tune", "set", "space", "methods")
TUNE_KEYS = ("name", "store", "metric", "trials", "sampler", "seed", "batch", "startup_trials", "tuning_seeds",
             "reporting_seeds", "baselines")
DIMENSION_KEYS = ("low", "high", "log", "relative", "int", "points")
METHOD_KEYS = ("method", "set")


@dataclass(frozen=True)
class Dimension:
    """One searched field: ``low..high`` (factors of the method's own value when ``relative``)."""

    field: str
    low: float
    high: float
    log: bool = True
    relative: bool = True
    integer: bool = False
    points: int | None = None  # grid sampler: values per dimension (log- or linearly spaced, ends included)

    def grid(self) -> list[float]:
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


def _dimension(fld: str, d: Any, sampler: str, where: str) -> Dimension:
    at = f"{where}: space.{fld}"
    check(isinstance(d, dict), at, d, "must be a table {low = ..., high = ..., log = true}", ConfigError)
    for key in d:
        check(key in DIMENSION_KEYS, f"{at}.{key}", d[key], f"unknown key; allowed: {', '.join(DIMENSION_KEYS)}",
              ConfigError)
    for key in ("low", "high"):
        check(_number(d.get(key)), f"{at}.{key}", d.get(key), "must be a finite number", ConfigError)
    log, rel, integer = d.get("log", True), d.get("relative", True), d.get("int", False)
    for key, v in (("log", log), ("relative", rel), ("int", integer)):
        check(isinstance(v, bool), f"{at}.{key}", v, "must be true or false", ConfigError)
    check(d["low"] < d["high"], f"{at}.low", d["low"], f"must be < high = {d['high']!r}", ConfigError)
    if log:
        check(d["low"] > 0, f"{at}.low", d["low"], "must be > 0 for a log range (log = true)", ConfigError)
    points = d.get("points")
    if sampler == "grid":
        check(isinstance(points, int) and not isinstance(points, bool) and points >= 1, f"{at}.points", points,
              "the grid sampler needs an integer >= 1 (values per dimension)", ConfigError)
    elif points is not None:
        raise ConfigError(f"{at}.points = {points!r}: only for sampler = 'grid'")
    return Dimension(fld, float(d["low"]), float(d["high"]), log, rel, integer, points)


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
            base = load_config(str(local) if local.exists() else base)
        except ConfigError as e:
            raise ConfigError(f"{where}: base = {doc['base']!r}: {e}") from None
    fixed = toml_table(doc, "set", where)
    space_doc = toml_table(doc, "space", where)
    check(bool(space_doc), f"{where}: space", space_doc, "needs at least one field to search", ConfigError)
    space = [_dimension(k, v, sampler, where) for k, v in space_doc.items()]
    trials = meta.get("trials")
    if sampler == "grid":
        n = math.prod(d.points or 1 for d in space)
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
        clash = sorted(set(fixed_m) & {d.field for d in space if not d.relative})
        check(not clash, f"{where}: methods.{label}.set", fixed_m,
              f"may not fix a searched field ({', '.join(clash)}): every method searches the same space "
              "(for a relative range, set gives the value it is centred on)", ConfigError)
        contenders.append(Contender(label, m.get("method", label), dict(fixed_m)))
    baselines = meta.get("baselines", [])
    check(isinstance(baselines, list) and all(b in methods_doc for b in baselines), f"{where}: tune.baselines",
          baselines, f"must be a list of method labels of this spec: {', '.join(methods_doc)}", ConfigError)
    spec = TuneSpec(name=name, store=store, base=base, contenders=contenders, space=space, trials=trials,
                    metric=metric, sampler=sampler, seed=meta.get("seed", 0), batch=meta.get("batch", 1),
                    startup_trials=startup, tuning_seeds=tuning, reporting_seeds=reporting, baselines=baselines,
                    fixed=fixed, path=path)
    for c in contenders:  # every method must accept every field, and have a value to scale relative ranges
        base_values(spec, c, where)
    return spec


def base_values(spec: TuneSpec, c: Contender, where: str = "tune") -> dict[str, float]:
    """Each searched field's value in this method's resolved config (the value relative ranges multiply)."""
    from .build import accepted_fields
    from .methods import OPTIMIZERS

    try:
        (run,) = expand(spec.base, None, [{"method": c.method, **c.fixed}], spec.fixed,
                        where=f"{where}: methods.{c.label}")
    except ConfigError as e:
        raise ConfigError(str(e)) from None
    cfg = run.config
    out = {}
    for d in spec.space:
        section, _, key = d.field.partition(".")
        at = f"{where}: space.{d.field}"
        check(section in ("optimizer", "loss", "train", "model", "task") and key and "." not in key, at, d.field,
              "must be SECTION.FIELD, e.g. optimizer.lr", ConfigError)
        name = cfg.get(section, {}).get("name")
        check(key in accepted_fields(section, name), at, d.field,
              f"method {c.label!r} ({section} {name!r}) has no such field", ConfigError)
        value = cfg.get(section, {}).get(key)
        if value is None and section == "optimizer":
            value = OPTIMIZERS[name].defaults.get(key)
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


def _sampler(spec: TuneSpec, optuna: Any) -> Any:
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler({d.field: d.grid() for d in spec.space}, seed=spec.seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    startup = spec.startup_trials or min(10, max(2, spec.trials // 3))
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=startup, constant_liar=True)


def replay(spec: TuneSpec, trials: list[Any], n: int = 0) -> tuple[list[dict[str, Any]], list[int]]:
    """What a fresh sampler seeded by the spec proposes next, after it is shown a study's ``trials`` in the
    rounds of ``batch`` asks in which :func:`search` makes them: the values of the next ``n`` trials, and the
    numbers of the given trials it would not have asked (none for a search made by this rule).

    Every new trial of :func:`search` comes from here, so a search's trials depend on the spec and the results
    only, never on where it was interrupted: a new process's sampler starts from its seed, and asked directly,
    a resumed search once drew every method's first learning rate again.  Replayed on an in-memory study, the
    sampler draws exactly what it drew in the search that made the trials."""
    optuna = _import_optuna()
    dists = _distributions(spec, optuna)
    scratch = optuna.create_study(direction="minimize", sampler=_sampler(spec, optuna))
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


def _ask(spec: TuneSpec, study: Any, dists: dict[str, Any], n: int) -> list[Any]:
    """Ask ``n`` new trials of ``study`` with the values :func:`replay` proposes."""
    out = []
    for params in replay(spec, study.get_trials(deepcopy=False), n)[0]:
        study.enqueue_trial(params)
        out.append(study.ask(dists))
    return out


def _distributions(spec: TuneSpec, optuna: Any) -> dict[str, Any]:
    out = {}
    for d in spec.space:
        if spec.sampler == "grid":
            out[d.field] = optuna.distributions.CategoricalDistribution(d.grid())
        elif d.integer:
            out[d.field] = optuna.distributions.IntDistribution(int(d.low), int(d.high), log=d.log)
        else:
            out[d.field] = optuna.distributions.FloatDistribution(d.low, d.high, log=d.log)
    return out


def trial_values(spec: TuneSpec, c: Contender, params: dict[str, Any]) -> dict[str, Any]:
    """The config values of a trial: searched factors times the method's own values (relative dimensions)."""
    base = base_values(spec, c)
    out = {}
    for d in spec.space:
        x = params[d.field]
        v = x * base[d.field] if d.relative else x
        out[d.field] = int(round(v)) if d.integer else float(f"{v:.6g}")
    return out


def plan(spec: TuneSpec, c: Contender, values: dict[str, Any], seeds: list[int]) -> list[PlannedRun]:
    """The runs of one configuration of a method over ``seeds``, labelled by the method and the values."""
    runs = expand(spec.base, {"seed": seeds}, [{"method": c.method, **c.fixed, **values}], spec.fixed,
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


def study_name(spec: TuneSpec, c: Contender) -> str:
    """The name of a method's Optuna study in ``spec.study_path``."""
    return f"{spec.name}/{c.label}"


def search(spec: TuneSpec, *, workers: int | None = None, backend: str = "local", address: str | None = None,
           log: Any = print) -> dict[str, Any]:
    """Run (or continue) the search; returns the Optuna studies by method label."""
    optuna = _import_optuna()
    spec.store.parent.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{spec.study_path.resolve()}"
    dists = _distributions(spec, optuna)
    studies = {
        c.label: optuna.create_study(study_name=study_name(spec, c), storage=storage, direction="minimize",
                                     sampler=_sampler(spec, optuna), load_if_exists=True)
        for c in spec.contenders
    }
    running_state, done_states = optuna.trial.TrialState.RUNNING, (optuna.trial.TrialState.COMPLETE,)
    rounds = 0
    while True:
        pending: list[tuple[Contender, int, dict[str, Any]]] = []
        for c in spec.contenders:
            study = studies[c.label]
            done = study.get_trials(deepcopy=False, states=done_states)
            running = study.get_trials(deepcopy=False, states=(running_state,))
            new = max(0, min(spec.batch - len(running), spec.trials - len(done) - len(running)))
            asked = _ask(spec, study, dists, new) if new else []
            pending += [(c, t.number, dict(t.params)) for t in running]
            pending += [(c, t.number, dict(t.params)) for t in asked]
        if not pending:
            return studies
        rounds += 1
        runs, of_trial = [], []
        for c, number, params in pending:
            rs = plan(spec, c, trial_values(spec, c, params), spec.tuning_seeds)
            runs += rs
            of_trial.append((c, number, [r.id for r in rs]))
        unique = list({r.id: r for r in runs}.values())
        counts = run_sweep(Sweep(name=f"{spec.name}-tuning", store=spec.store, baseline=None, runs=unique),
                           workers=workers, backend=backend, address=address)
        if counts.get("pending") or counts.get("running"):
            raise RuntimeError(f"tune {spec.name}: runs left unfinished; rerun to continue")
        with Store(spec.store, create=False) as store:
            rows = {r["id"]: r for r in store.runs([r.id for r in unique])}
        for c, number, ids in of_trial:
            studies[c.label].tell(number, score(spec, [rows[i] for i in ids]))
        told = {c.label: len(studies[c.label].get_trials(deepcopy=False, states=done_states))
                for c in spec.contenders}
        log(f"tune {spec.name}: round {rounds}, trials done " + ", ".join(f"{k} {v}/{spec.trials}"
                                                                          for k, v in told.items()), flush=True)


# ------------------------------------------------------------------------------------------ leaderboard


def best(spec: TuneSpec, studies: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per method: the best trial's searched values (as the sampler saw them), config values, value, edges."""
    out = {}
    for c in spec.contenders:
        study = studies[c.label]
        trials = [t for t in study.trials if t.value is not None]
        t = min(trials, key=lambda t: (t.value, t.number))
        edges = {}
        for d in spec.space:
            pos = d.position(t.params[d.field]) if d.high > d.low else 0.5
            if pos <= 0.05:
                edges[d.field] = "low"
            elif pos >= 0.95:
                edges[d.field] = "high"
        out[c.label] = {"trial": t.number, "searched": dict(t.params), "values": trial_values(spec, c, t.params),
                        "tuning_value": t.value, "censored": t.value >= CENSORED, "edges": edges,
                        "trials": len(trials)}
    return out


def report(spec: TuneSpec, winners: dict[str, dict[str, Any]], *, workers: int | None = None,
           backend: str = "local", address: str | None = None) -> list[dict[str, Any]]:
    """Re-run each method's best configuration on the reporting seeds; the leaderboard rows, best first."""
    runs: dict[str, list[PlannedRun]] = {
        c.label: plan(spec, c, winners[c.label]["values"], spec.reporting_seeds) for c in spec.contenders
    }
    every = [r for rs in runs.values() for r in rs]
    run_sweep(Sweep(name=f"{spec.name}-report", store=spec.store, baseline=None, runs=every), workers=workers,
              backend=backend, address=address)
    with Store(spec.store, create=False) as store:
        rows = {r["id"]: r for r in store.runs([r.id for r in every])}
        curves = {r.id: store.metrics(r.id) for r in every} if spec.metric == "loss" else {}
    outcomes: dict[str, dict[str, tuple[list[float], list[bool]]]] = {}
    board = []
    for c in spec.contenders:
        done = [rows[r.id]["summary"] for r in runs[c.label] if rows[r.id]["status"] == "done"]
        entry: dict[str, Any] = {"method": c.label, "runs": len(runs[c.label]), "done": len(done),
                                 "grokked": sum(bool(s.get("grokked")) for s in done), **winners[c.label]}
        outcomes[c.label] = {}
        for m in METRICS:
            pairs = [outcome(s, m) for s in done]
            t, e = [p[0] for p in pairs], [p[1] for p in pairs]
            outcomes[c.label][m] = (t, e)
            entry[m] = {"median": km_median(t, e), "ci": list(km_ci(t, e)) if t else [math.nan, math.nan]}
        board.append(entry)
    if spec.metric == "loss":
        _loss_readings(spec, board, {c.label: [rows[r.id] for r in runs[c.label]] for c in spec.contenders},
                       {c.label: [curves[r.id] for r in runs[c.label]] for c in spec.contenders}, outcomes)
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
    if spec.metric == "loss":
        board.sort(key=lambda e: e["final_loss"]["median"])
    else:
        board.sort(key=lambda e: (e[spec.metric]["median"], -e["grokked"]))
    return board


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
    parts = []
    for k, v in entry["values"].items():
        edge = entry["edges"].get(k)
        parts.append(f"{k.split('.', 1)[1]}={v:g}" + (f" ({edge} edge)" if edge else ""))
    return ", ".join(parts)


def leaderboard_markdown(spec: TuneSpec, board: list[dict[str, Any]]) -> str:
    """The leaderboard as a Markdown table with the budget stated above it."""
    tc = board_train(spec)
    dims = "; ".join(
        f"{d.field} {'log-' if d.log else ''}uniform {d.low:g}..{d.high:g}"
        + (" × the method's own value" if d.relative else "") + (f", {d.points} points" if d.points else "")
        for d in spec.space
    )
    unit = {"steps": "steps", "epochs": "epochs", "seconds": "s", "loss": "steps"}[spec.metric]
    objective = (f"median final test loss over tuning seeds {spec.tuning_seeds}" if spec.metric == "loss" else
                 f"median {spec.metric} to test accuracy >= {tc['grok_threshold']} over tuning seeds "
                 f"{spec.tuning_seeds}")
    lines = [
        f"Tune `{spec.name}`: {len(spec.contenders)} methods, {spec.trials} trials each ({spec.sampler} sampler, "
        f"seed {spec.seed}), the same space for every method: {dims}.",
        f"Objective: {objective}; evaluation every {tc['eval_every']} {tc['eval_unit']}(s); budget "
        f"{tc['max_epochs'] or '-'} epochs / {tc['max_steps'] or '-'} steps. Reported on seeds "
        f"{spec.reporting_seeds}: Kaplan-Meier medians (censored runs counted) with 95% bootstrap CIs."
        + (" Fewer than 5 reporting seeds: a smoke test, not a result." if len(spec.reporting_seeds) < 5 else ""),
        "",
    ]
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
        cells += [_speedup_cell(e["speedup"][b], b) for b in spec.baselines]
        rows.append(cells)
    lines.append(markdown_table(header, rows))
    edged = [e["method"] for e in board if e["edges"]]
    if edged:
        lines += ["", f"At an edge of the search range (widen it to be sure): {', '.join(edged)}."]
    return "\n".join(lines) + "\n"


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


def board_train(spec: TuneSpec) -> dict[str, Any]:
    """The resolved ``[train]`` of the first method (the threshold and cadence the leaderboard states)."""
    c = spec.contenders[0]
    (run,) = expand(spec.base, None, [{"method": c.method, **c.fixed}], spec.fixed, where=f"tune {spec.name}")
    return run.config["train"]


def tune(path: str | Path, *, workers: int | None = None, backend: str = "local", address: str | None = None,
         log: Any = print) -> list[dict[str, Any]]:
    """``egd tune``: search, report, print and write the leaderboard (``STORE-leaderboard.md`` and ``.json``)."""
    spec = load_tune(path)
    n_runs = spec.trials * len(spec.tuning_seeds) * len(spec.contenders)
    log(f"tune {spec.name}: {len(spec.contenders)} methods x {spec.trials} trials x {len(spec.tuning_seeds)} tuning "
        f"seeds (at most {n_runs} runs), then {len(spec.reporting_seeds)} reporting seeds -> {spec.store}", flush=True)
    studies = search(spec, workers=workers, backend=backend, address=address, log=log)
    winners = best(spec, studies)
    board = report(spec, winners, workers=workers, backend=backend, address=address)
    text = leaderboard_markdown(spec, board)
    out = spec.store.with_name(spec.store.stem + "-leaderboard")
    fio.write_text(out.with_suffix(".md"), text)
    fio.write_text(out.with_suffix(".json"), json.dumps(finite_json(board), indent=2) + "\n")
    log("\n" + text + f"\nleaderboard: {out.with_suffix('.md')}", flush=True)
    return board

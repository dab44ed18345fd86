"""``egd robustness`` and ``egd transfer``: what is done with a finished tune's tuned configurations.

Both read the leaderboard a finished ``egd tune`` wrote (``STORE-leaderboard.json``): each row's ``values`` is the
configuration that row reports (with several studies, the median study's), ``method`` its label.  Neither searches
anything; both re-run those configurations, changed in one controlled way, through the sweep executor (resumable,
``--workers``, a run's id the hash of its config), with the tune's ``[set]`` and ``[report_set]`` (the reporting
cadence: per-step evaluation where the board has it).

* **Robustness** (issue #28, item 5): each method's tuned configuration with one field (the learning rate by
  default) multiplied by a lattice of factors, the other hyperparameters at their tuned values, over ≥ 5 seeds, into
  the tune's own store, so factor 1 *is* the board's reporting runs (the same run ids).  Per method and factor: the
  Kaplan–Meier median steps to the threshold with a bootstrap CI and the grokked count; per method the **window
  within 2× of the best** (:func:`window`).  Outputs ``STORE-robustness.md``/``.json``/``.png`` next to the
  leaderboard.
* **Transfer** (item 7): each method's tuned configuration on held-out variants of the task (another modulus, another
  operation, another train fraction: dotted overrides per variant), without retuning, into a store of its own.  A
  table variant × method of Kaplan–Meier medians with CIs, grokked counts and ranks, the source board's reading as
  the first column; across the variants a Dolan–Moré performance profile and AlgoPerf's score
  (:mod:`egalitarian.sweep.profiles`), the score saying whose tuning transfers best.  Outputs
  ``STORE-transfer.md``/``.json`` next to the leaderboard.

A spec is a small TOML file (docs/TUNING.md has every field)::

    tune = "mod-add-p97.toml"      # the tune spec, relative to this file

    [robustness]
    factors = [0.125, 0.25, 0.5, 1, 2, 4, 8]    # default: x sqrt(2) apart from 1/8 to 8 (13 points)
    field = "optimizer.lr"         # default
    seeds = [100, 101, 102, 103, 104]           # default: the tune's reporting seeds (>= 5 for a result)
    methods = ["egd", "muon"]      # default: every method of the board
    unreached = "skip"             # default: a method that reached the threshold on no tuning seed runs only x1

    # or, for egd transfer:
    [transfer]
    [variants.p59]
    "task.p" = 59
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import io as fio
from .config import load_toml, toml_table
from .errors import ConfigError, check
from .report import markdown_table
from .sweep import Store, Sweep, run_sweep
from .sweep.profiles import DEFAULT_TAUS, TAU_MAX, profile_markdown, profile_score
from .sweep.spec import PlannedRun
from .sweep.stats import METRICS, finite_json, km_cell, km_ci, km_median, outcome
from .tune import (
    CENSORED,
    Contender,
    TuneSpec,
    board_train,
    choice_text,
    last_round,
    load_tune,
    own_params,
    plan,
    point_of,
    pooled_study,
    trial_values,
    value_text,
)

FACTORS = tuple(2 ** (k / 2) for k in range(-6, 7))
"""The default lattice of robustness: ×√2 apart from 1/8 to 8, 13 points, 1 in the middle.  √2 resolves a 2×
window to within one step at each end; 1/8..8 (64×) spans the region where a tuned method's steps double on
either side (issue #28's hand check: AdamW's median doubled at 3× its tuned lr and was censored at 4.6×;
Muon stayed within 1.2× of its best over 3×, lrs 0.3-0.9)."""
WITHIN = 2.0
"""The window of a robustness curve: the factors whose median is within this factor of the best median."""
HAND_CHECK = 0.15
"""The hand check of a board (the project's standard): if some lr of the robustness lattice beats the tuned one's KM
median by more than this fraction on the same seeds, the search was underpowered for that method."""
MIN_SEEDS = 5
"""Fewer seeds than this make a smoke test, not a result (as the leaderboard's reporting seeds)."""
ROBUSTNESS_KEYS = ("name", "factors", "field", "seeds", "methods", "report_set", "winner", "unreached")
TRANSFER_KEYS = ("name", "seeds", "methods", "store", "report_set")
HANDCHECK_KEYS = ("name", "seeds", "methods", "report_set", "winner", "unreached")
OWN = "own values"
"""The hand check's last setting: the method's own configuration, the lr included (its recipe table's values or the
registry's defaults: what the search starts from, and what a user who does not tune runs, the published setting
where the recipe has one).  A search that cannot beat it by more than the hand check's margin is underpowered."""
WINNERS = {"board": "its leaderboard row: the median study's",
           "pooled": "the pooled search's: its study whose winner has the best tuning value"}
"""``winner``: which tuned configuration of each method a robustness or hand-check spec takes (the words its table
says it with): the leaderboard row's (``board``, the default) or the study a search of every study pooled picks
(``pooled``, :func:`egalitarian.tune.pooled_study`).  A transfer takes the row's: its first column is the board's
own reading of it."""


UNREACHED = ("skip", "run")
"""``unreached``: what a robustness or hand-check spec does with a method whose tuned configuration reached the
threshold on no tuning seed (its tuning value censored: the search could only place it by final accuracy, at chance
on a task the method never learned within the budget).  ``skip`` (the default): only its tuned configuration (×1)
runs and, in a hand check, its own values; no lattice and no neighbours around a point that is not a result (the
stage-1 grid already tried every lr of the range ×√10 apart).  ``run``: everything, as for the other methods."""
UNREACHED_NOTE = ("reached the threshold on no tuning seed (its tuned configuration was placed by final accuracy): "
                  "only ×1 runs")


def reached(row: dict[str, Any]) -> bool:
    """Whether a leaderboard row's tuned configuration reached the threshold on its tuning seeds (a row without a
    tuning value, from an older leaderboard, counts as reached)."""
    value = row.get("tuning_value")
    return value is None or value < CENSORED


def _skipped(spec: Robustness | HandCheck, row: dict[str, Any]) -> bool:
    return spec.unreached == "skip" and not reached(row)


def _out(tspec: TuneSpec, name: str) -> Path:
    """A follow-up's outputs' path without suffix: ``STORE-NAME`` beside the tune's store and leaderboard."""
    return tspec.store.with_name(f"{tspec.store.stem}-{name}")


class _FollowUp:
    """What the follow-up specs share: ``out``, where their table goes (``STORE-NAME``, beside the tune's store)."""

    tune: TuneSpec
    name: str

    @property
    def out(self) -> Path:
        return _out(self.tune, self.name)


@dataclass(frozen=True)
class Robustness(_FollowUp):
    """A loaded robustness spec: which field of which methods' tuned configurations is scaled by which factors."""

    tune: TuneSpec
    field: str
    factors: list[float]
    seeds: list[int]
    methods: list[str]
    name: str = "robustness"
    path: Path | None = None
    winner: str = "board"
    unreached: str = "skip"


@dataclass(frozen=True)
class Transfer(_FollowUp):
    """A loaded transfer spec: the variants (label -> dotted overrides) the tuned configurations are run on."""

    tune: TuneSpec
    variants: dict[str, dict[str, Any]]
    seeds: list[int]
    methods: list[str]
    store: Path
    name: str = "transfer"
    path: Path | None = None
    winner: str = "board"  # always: its first column is the board's own reading of the row


@dataclass(frozen=True)
class HandCheck(_FollowUp):
    """A loaded hand-check spec: each method's tuned configuration against its neighbours in every searched
    dimension but the first (the lr, which ``egd robustness`` checks), on held-out seeds."""

    tune: TuneSpec
    seeds: list[int]
    methods: list[str]
    name: str = "handcheck"
    path: Path | None = None
    winner: str = "board"
    unreached: str = "skip"


# --------------------------------------------------------------------------------------------------- specs


def _load(path: Path, table: str, keys: tuple[str, ...], top: tuple[str, ...]) -> tuple[
        TuneSpec, dict[str, Any], dict[str, Any], str]:
    """The parts both specs share: ``tune = FILE`` (relative to the spec) loaded, the ``[table]`` with only
    ``keys``, no top-level key but ``top``.  Returns (tune spec, the table, the document, where)."""
    doc = load_toml(path)
    where = f"{table} spec {str(path)!r}"
    for key in doc:
        check(key in top, f"{where}: {key}", doc[key], f"unknown key; allowed: {', '.join(top)}", ConfigError)
    tune_file = doc.get("tune")
    check(isinstance(tune_file, str) and tune_file != "", f"{where}: tune", tune_file,
          "must be the tune spec's file name, relative to this file", ConfigError)
    tspec = load_tune(path.parent / tune_file)
    check(tspec.metric in METRICS, f"{where}: tune", tune_file, f"its tune.metric is {tspec.metric!r}; {table} "
          f"needs a time to the accuracy threshold ({', '.join(METRICS)})", ConfigError)
    meta = toml_table(doc, table, where)
    for key in meta:
        check(key in keys, f"{where}: {table}.{key}", meta[key], f"unknown key; allowed: {', '.join(keys)}",
              ConfigError)
    name = meta.get("name", table)
    check(isinstance(name, str) and name != "" and "/" not in name, f"{where}: {table}.name", name,
          "must be a non-empty file-name part", ConfigError)
    winner = meta.get("winner", "board")
    check(winner in WINNERS, f"{where}: {table}.winner", winner, f"must be one of: {', '.join(WINNERS)}",
          ConfigError)
    if "unreached" in keys:
        check(meta.get("unreached", "skip") in UNREACHED, f"{where}: {table}.unreached", meta.get("unreached"),
              f"must be one of: {', '.join(UNREACHED)}", ConfigError)
    # report_set: dotted fields over the tune's [report_set] for these runs (a cheaper cadence, say); never a field
    # the tune searched (each method keeps its tuned value) nor the seed (the spec's seeds)
    over = meta.get("report_set", {})
    check(isinstance(over, dict), f"{where}: {table}.report_set", over,
          'must be a table of dotted fields, e.g. { "train.refine_grok" = true }', ConfigError)
    searched = {f for d in tspec.space for f in d.fields()}
    for key, value in over.items():
        check(key != "seed" and not key.endswith(".seed"), f"{where}: {table}.report_set.{key}", value,
              f"the seeds are {table}.seeds", ConfigError)
        check(key not in searched, f"{where}: {table}.report_set.{key}", value,
              "the tune searched this field: each method keeps its tuned value", ConfigError)
    if over:
        tspec = replace(tspec, report_fixed={**tspec.report_fixed, **over})
        try:
            (run,) = plan(tspec, tspec.contenders[0], {}, tspec.reporting_seeds[:1] or [0], reporting=True)
            from .build import build_run

            build_run(run.config)
        except ConfigError as e:
            raise ConfigError(f"{where}: {table}.report_set: {e}") from None
    return tspec, meta, doc, where


def _seeds(value: Any, tspec: TuneSpec, at: str) -> list[int]:
    """Distinct integers >= 0, disjoint from the tune's tuning seeds (a configuration chosen on a seed says
    nothing held-out about it)."""
    ok = isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                    for s in value) and len(set(value)) == len(value)
    check(bool(ok), at, value, "must be a non-empty list of distinct integers >= 0", ConfigError)
    both = sorted(set(value) & set(tspec.tuning_seeds))
    check(not both, at, value, f"must be disjoint from the tune's tuning_seeds (both have {both})", ConfigError)
    return list(value)


def _methods(value: Any, tspec: TuneSpec, at: str) -> list[str]:
    labels = [c.label for c in tspec.contenders]
    ok = isinstance(value, list) and value and all(isinstance(m, str) and m in labels for m in value)
    check(bool(ok) and len(set(value)) == len(value), at, value,
          f"must be a non-empty list of distinct method labels of the tune: {', '.join(labels)}", ConfigError)
    return list(value)


def load_robustness(path: str | Path) -> Robustness:
    """Read and check a robustness spec; any problem is one ConfigError naming the file, the field and the value."""
    path = Path(path)
    tspec, meta, _, where = _load(path, "robustness", ROBUSTNESS_KEYS, ("tune", "robustness"))
    fld = meta.get("field", "optimizer.lr")
    section, _, key = fld.partition(".") if isinstance(fld, str) else ("", "", "")
    check(section in ("optimizer", "loss", "train", "model", "task", "scheduler") and key != "" and "." not in key,
          f"{where}: robustness.field", fld, "must be SECTION.FIELD, e.g. optimizer.lr", ConfigError)
    factors = meta.get("factors", list(FACTORS))
    ok = isinstance(factors, list) and factors and all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f > 0 for f in factors)
    check(bool(ok) and len(set(factors)) == len(factors), f"{where}: robustness.factors", factors,
          "must be a non-empty list of distinct finite numbers > 0 (multipliers of the tuned value)", ConfigError)
    seeds = _seeds(meta.get("seeds", tspec.reporting_seeds), tspec, f"{where}: robustness.seeds")
    methods = _methods(meta.get("methods", [c.label for c in tspec.contenders]), tspec, f"{where}: robustness.methods")
    return Robustness(tspec, fld, sorted(float(f) for f in factors), seeds, methods, meta.get("name", "robustness"),
                      path, meta.get("winner", "board"), meta.get("unreached", "skip"))


def load_handcheck(path: str | Path) -> HandCheck:
    """Read and check a hand-check spec; any problem is one ConfigError naming the file, the field and the value."""
    path = Path(path)
    tspec, meta, _, where = _load(path, "handcheck", HANDCHECK_KEYS, ("tune", "handcheck"))
    seeds = _seeds(meta.get("seeds", tspec.reporting_seeds), tspec, f"{where}: handcheck.seeds")
    methods = _methods(meta.get("methods", [c.label for c in tspec.contenders]), tspec, f"{where}: handcheck.methods")
    return HandCheck(tspec, seeds, methods, meta.get("name", "handcheck"), path, meta.get("winner", "board"),
                     meta.get("unreached", "skip"))


def load_transfer(path: str | Path) -> Transfer:
    """Read and check a transfer spec, every variant included: each is built once (task, model, loss, optimizer of
    the first method) so that a bad field or value exits before anything runs, naming the variant."""
    from .build import build_run

    path = Path(path)
    tspec, meta, doc, where = _load(path, "transfer", TRANSFER_KEYS, ("tune", "transfer", "variants"))
    name = meta.get("name", "transfer")
    store = meta.get("store", str(tspec.store.with_name(f"{tspec.store.stem}-{name}.sqlite")))  # beside the tune's
    check(isinstance(store, str) and store != "", f"{where}: transfer.store", store, "must be a path", ConfigError)
    seeds = _seeds(meta.get("seeds", tspec.reporting_seeds), tspec, f"{where}: transfer.seeds")
    methods = _methods(meta.get("methods", [c.label for c in tspec.contenders]), tspec, f"{where}: transfer.methods")
    variants = toml_table(doc, "variants", where)
    check(bool(variants), f"{where}: variants", variants, "needs at least one [variants.LABEL] table of "
          'dotted overrides, e.g. "task.p" = 59', ConfigError)
    searched = {f for d in tspec.space for f in d.fields()}
    first = _contender(tspec, methods[0])
    for label, overrides in variants.items():
        at = f"{where}: variants.{label}"
        check(isinstance(overrides, dict) and bool(overrides), at, overrides,
              'must be a table of dotted overrides, e.g. "task.p" = 59', ConfigError)
        for key, value in overrides.items():
            check(key != "seed", f"{at}.seed", value, f"the seeds are [transfer].seeds ({seeds})", ConfigError)
            check(key not in searched, f"{at}.{key}", value, "the tune searched this field: a variant keeps each "
                  "method's tuned value", ConfigError)
        try:
            (run,) = plan(tspec, first, dict(overrides), seeds[:1], reporting=True)
            build_run(run.config)
        except ConfigError as e:
            raise ConfigError(f"{at}: {e}") from None
    return Transfer(tspec, {k: dict(v) for k, v in variants.items()}, seeds, methods, Path(store), name, path)


# ------------------------------------------------------------------------------------------ the board


def _contender(tspec: TuneSpec, label: str) -> Contender:
    return next(c for c in tspec.contenders if c.label == label)


def leaderboard_path(tspec: TuneSpec) -> Path:
    """Where ``egd tune`` writes a tune's leaderboard JSON."""
    return tspec.store.with_name(tspec.store.stem + "-leaderboard.json")


def read_board(tspec: TuneSpec, methods: list[str], winner: str = "board") -> dict[str, dict[str, Any]]:
    """The finished tune's leaderboard rows of ``methods``, by label (ConfigError when it has not finished, or a
    method is not on it); with ``winner = "pooled"`` each row as :func:`pooled_row`."""
    path = leaderboard_path(tspec)
    if not path.is_file():
        raise ConfigError(f"leaderboard {str(path)!r} does not exist: run `egd tune {tspec.path}` first")
    try:
        rows = {r["method"]: r for r in json.loads(path.read_text())}
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"leaderboard {str(path)!r} is not a leaderboard of `egd tune` ({e})") from None
    missing = [m for m in methods if m not in rows]
    check(not missing, f"leaderboard {str(path)!r}: methods", missing,
          f"not on the board; it has: {', '.join(rows)} (rerun `egd tune {tspec.path}`)", ConfigError)
    return {m: rows[m] if winner == "board" else pooled_row(tspec, rows[m]) for m in methods}


def pooled_row(tspec: TuneSpec, row: dict[str, Any]) -> dict[str, Any]:
    """A leaderboard row with the pooled search's winner in the place of the median study's: the study
    :func:`~egalitarian.tune.pooled_study` picks gives ``values``, ``study``, ``tuning_value`` and ``searched`` (its
    entry's, or :func:`~egalitarian.tune.point_of` its values for a leaderboard written before entries kept it).
    A row of one study is returned as it is."""
    per = row.get("per_study")
    if not per:
        return row
    s = next(p for p in per if p["study"] == pooled_study(per))
    searched = s.get("searched") or point_of(tspec, _contender(tspec, row["method"]), s["values"])
    return {**row, "values": s["values"], "study": s["study"], "tuning_value": s["tuning_value"],
            "searched": searched}


def _reading(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Runs' store rows -> the Kaplan–Meier median of ``metric`` with its CI, grokked/done/runs, and the
    (time, event) pairs (a censored run at its budget, a diverged one at infinity)."""
    done = [r["summary"] for r in rows if r["status"] == "done"]
    pairs = [outcome(s, metric) for s in done]
    t, e = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"median": km_median(t, e) if t else math.inf, "ci": list(km_ci(t, e)) if t else [math.nan, math.nan],
            "grokked": sum(e), "done": len(done), "runs": len(rows), "times": t, "events": e}


def _run_logged(spec: Robustness | HandCheck, planned: dict[Any, list[PlannedRun]], what: str, workers: int | None,
                backend: str, address: str | None, log: Any) -> dict[Any, list[dict[str, Any]]]:
    """Say what runs (``what`` x the seeds, how many distinct runs), then :func:`_execute` them into the tune's
    store."""
    n = len({r.id for rs in planned.values() for r in rs})
    log(f"{what} x {len(spec.seeds)} seeds ({n} runs, those already in the store kept) -> {spec.tune.store}",
        flush=True)
    return _execute(f"{spec.tune.name}-{spec.name}", spec.tune.store, planned, workers=workers, backend=backend,
                    address=address)


def _execute(name: str, store: Path, planned: dict[Any, list[PlannedRun]], *, workers: int | None, backend: str,
             address: str | None) -> dict[Any, list[dict[str, Any]]]:
    """Run what is not done yet of ``planned`` (runs shared between keys run once) into ``store``; each key's store
    rows."""
    unique = list({r.id: r for rs in planned.values() for r in rs}.values())
    counts = run_sweep(Sweep(name=name, store=store, baseline=None, runs=unique), workers=workers, backend=backend,
                       address=address)
    if counts.get("pending") or counts.get("running"):
        raise RuntimeError(f"{name}: runs left unfinished; rerun to continue")
    with Store(store, create=False) as st:
        rows = {r["id"]: r for r in st.runs([r.id for r in unique])}
    return {k: [rows[r.id] for r in rs] for k, rs in planned.items()}


def _cell(k: dict[str, Any]) -> str:
    """A reading as one cell: ``median [lo, hi] (grokked/runs)``."""
    return f"{km_cell(k).replace('inf', '∞')} ({k['grokked']}/{k['runs']})"


def _smoke(seeds: list[int]) -> str:
    return f" Fewer than {MIN_SEEDS} seeds: a smoke test, not a result." if len(seeds) < MIN_SEEDS else ""


def _setting(tspec: TuneSpec) -> str:
    """The threshold, cadence and budget of the reporting runs, as the leaderboard states them."""
    tc = board_train(tspec, reporting=True)
    refined = " (the threshold step found to 1 step by replay: train.refine_grok)" if tc.get("refine_grok") else ""
    return (f"threshold test accuracy >= {tc['grok_threshold']}; evaluation every {tc['eval_every']} "
            f"{tc['eval_unit']}(s){refined}; budget {tc['max_epochs'] or '-'} epochs / {tc['max_steps'] or '-'} "
            f"steps")


# ------------------------------------------------------------------------------------------- robustness


def _scaled(value: float, factor: float) -> float:
    """``value × factor`` to 6 significant digits (as the tune's values are); factor 1 leaves it exactly as it is,
    so that those runs are the board's own (the same config, the same run id)."""
    if factor == 1:
        return value
    v = value * factor
    return int(round(v)) if isinstance(value, int) else float(f"{v:.6g}")


def tuned_value(spec: Robustness, label: str, values: dict[str, Any]) -> float:
    """The value of ``spec.field`` in method ``label``'s tuned configuration: the leaderboard's value when the tune
    searched it, else the resolved config's (the registry's default for an unset optimizer field)."""
    from .methods import OPTIMIZERS

    value = values.get(spec.field)
    if value is None:
        (run,) = plan(spec.tune, _contender(spec.tune, label), values, spec.seeds[:1], reporting=True)
        section, _, key = spec.field.partition(".")
        value = run.config.get(section, {}).get(key)
        if value is None and section == "optimizer":
            value = OPTIMIZERS[run.config["optimizer"]["name"]].defaults.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    check(ok, f"robustness.field = {spec.field!r}: method {label!r}'s tuned value", value,
          "scaling it needs a number > 0", ConfigError)
    return value


def robustness_plan(spec: Robustness, board: dict[str, dict[str, Any]]) -> dict[tuple[str, float], list[PlannedRun]]:
    """The runs of each (method, factor): the method's tuned values with ``field`` × factor, over the seeds, with
    ``[report_set]`` (so factor 1's runs are the board's reporting runs, when the seeds are its reporting seeds);
    a method that reached the threshold on no tuning seed only factor 1, unless ``unreached = "run"``."""
    out = {}
    for label in spec.methods:
        values = board[label]["values"]
        value = tuned_value(spec, label, values)
        c = _contender(spec.tune, label)
        for f in [f for f in spec.factors if f == 1.0] if _skipped(spec, board[label]) else spec.factors:
            out[(label, f)] = plan(spec.tune, c, {**values, spec.field: _scaled(value, f)}, spec.seeds,
                                   reporting=True)
    return out


def window(factors: list[float], medians: list[float], within: float = WITHIN) -> dict[str, Any] | None:
    """The window of a robustness curve (``factors`` ascending, one median each; ``inf``: fewer than half the runs
    reached the threshold): the widest contiguous run of factors that contains a best point (the smallest median)
    and whose every median is ``<= within ×`` the best.  Returns the best median and its factor, the window's ends
    ``lo``/``hi`` and ``ratio = hi / lo``, ``open`` when it reaches an end of the grid (the window is then at least
    ``ratio``), and ``resolution``, the grid's largest spacing (each end is known to within it); None when no
    point reached the threshold."""
    finite = [m for m in medians if math.isfinite(m)]
    if not finite:
        return None
    best = min(finite)
    ok = [math.isfinite(m) and m <= within * best * (1 + 1e-12) for m in medians]
    runs, i, n = [], 0, len(factors)
    while i < n:
        if not ok[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and ok[j + 1]:
            j += 1
        if any(medians[k] == best for k in range(i, j + 1)):
            runs.append((i, j))
        i = j + 1
    lo, hi = max(runs, key=lambda r: factors[r[1]] / factors[r[0]])  # the first of equally wide ones
    at = next(k for k in range(lo, hi + 1) if medians[k] == best)
    spacing = max((b / a for a, b in zip(factors, factors[1:], strict=False)), default=1.0)
    return {"best": best, "best_factor": factors[at], "lo": factors[lo], "hi": factors[hi],
            "ratio": factors[hi] / factors[lo], "open": lo == 0 or hi == n - 1, "resolution": spacing}


def hand_check(points: list[dict[str, Any]], within: float = HAND_CHECK) -> dict[str, Any] | None:
    """The lr part of a board's hand check, from one method's robustness points (each with ``factor`` and KM
    ``median``; ``inf``: not reached): the tuned point (factor 1) against the best point of the lattice.  ``gain`` is
    ``1 - best / tuned`` (1.0 when the tuned point never reached the threshold but another did); ``beaten`` when
    it exceeds ``within``.  None without a factor-1 point or when no point reached the threshold."""
    tuned = next((p for p in points if p["factor"] == 1.0), None)
    reached = [p for p in points if math.isfinite(p["median"])]
    if tuned is None or not reached:
        return None
    best = min(reached, key=lambda p: (p["median"], abs(math.log(p["factor"]))))  # ties: the nearest to x1
    gain = 1.0 - best["median"] / tuned["median"] if math.isfinite(tuned["median"]) else 1.0
    return {"tuned": tuned["median"], "best": best["median"], "best_factor": best["factor"], "gain": gain,
            "beaten": gain > within}


def robustness_result(spec: Robustness, board: dict[str, dict[str, Any]],
                      rows: dict[tuple[str, float], list[dict[str, Any]]]) -> dict[str, Any]:
    """The robustness readings: per method its tuned value, per factor the Kaplan–Meier reading, and its window
    (a method whose lattice was skipped, ``skipped``: its ×1 point only, no window and no hand check)."""
    metric = spec.tune.metric
    methods = {}
    for label in spec.methods:
        value = tuned_value(spec, label, board[label]["values"])
        points = []
        for f in spec.factors:
            if (label, f) in rows:
                k = _reading(rows[(label, f)], metric)
                points.append({"factor": f, "value": _scaled(value, f), **k})
        skipped = _skipped(spec, board[label])
        methods[label] = {"tuned": value, "points": points, "skipped": skipped,
                          "window": None if skipped else window(spec.factors, [p["median"] for p in points]),
                          "hand_check": None if skipped else hand_check(points)}
    return {"tune": spec.tune.name, "field": spec.field, "metric": metric, "factors": spec.factors,
            "seeds": spec.seeds, "within": WITHIN, "hand_check_within": HAND_CHECK,
            "smoke": len(spec.seeds) < MIN_SEEDS, "methods": methods}


def _factor(f: float) -> str:
    return f"×{f:.3g}"


def _window_cell(w: dict[str, Any] | None, skipped: bool = False) -> str:
    if skipped:
        return "- (not run: reached on no tuning seed)"
    if w is None:
        return "- (never reached)"
    return f"{'≥ ' if w['open'] else ''}{w['ratio']:.3g} ({_factor(w['lo'])}..{_factor(w['hi'])})"


def _hand_cell(h: dict[str, Any] | None, skipped: bool = False) -> str:
    if skipped:
        return "- (its own values: `egd handcheck`)"
    if h is None:
        return "-"
    if h["best_factor"] == 1.0 or h["gain"] <= 0:
        return "not beaten"
    tuned = "> budget" if not math.isfinite(h["tuned"]) else f"{h['tuned']:g}"
    verdict = f"beaten by > {HAND_CHECK:.0%}: underpowered" if h["beaten"] else f"within {HAND_CHECK:.0%}"
    return f"{tuned} → {h['best']:g} at {_factor(h['best_factor'])} (−{h['gain']:.0%}, {verdict})"


def _at_one(m: dict[str, Any]) -> str:
    """A skipped method's best cell: its ×1 reading (all it ran)."""
    p = next((p for p in m["points"] if p["factor"] == 1.0), None)
    return "-" if p is None else "> budget" if not math.isfinite(p["median"]) else f"{p['median']:g} (×1)"


def robustness_markdown(spec: Robustness, result: dict[str, Any], figure: str | None = None) -> str:
    """The robustness table: a summary per method (window, best point), then every factor's reading."""
    unit, short = spec.tune.metric, spec.field.partition(".")[2]
    grid = spec.factors
    skipped = [label for label, m in result["methods"].items() if m.get("skipped")]
    spacing = max((b / a for a, b in zip(grid, grid[1:], strict=False)), default=1.0)
    lines = [
        f"Robustness of tune `{spec.tune.name}` to `{spec.field}`: each method's tuned configuration "
        f"({WINNERS[spec.winner]}) with `{spec.field}` × {len(grid)} factors from {grid[0]:.3g} to {grid[-1]:.3g}"
        f"{f' (×{spacing:.3g} apart at most)' if len(grid) > 1 else ''}, the other hyperparameters at their tuned "
        f"values; seeds {spec.seeds}; {_setting(spec.tune)}. Kaplan-Meier medians of {unit} to the threshold "
        f"(censored runs counted) with 95% bootstrap CIs." + _smoke(spec.seeds),
        "",
        markdown_table(
            ["method", f"tuned {short}", f"best factor ({short})", f"best KM median {unit}",
             f"{short} window within {WITHIN:g}× of the best", "hand check (×1 against the best factor)"],
            [[label, f"{m['tuned']:g}",
              "-" if m["window"] is None else
              f"{_factor(m['window']['best_factor'])} ({_scaled(m['tuned'], m['window']['best_factor']):g})",
              _at_one(m) if m.get("skipped") else "> budget" if m["window"] is None else f"{m['window']['best']:g}",
              _window_cell(m["window"], m.get("skipped", False)), _hand_cell(m["hand_check"], m.get("skipped", False))]
             for label, m in result["methods"].items()]),
        "",
        f"Window: the widest contiguous run of factors that contains the best point and whose every KM median is "
        f"<= {WITHIN:g}× the best; hi/lo of its ends, \"≥\" where it reaches an end of the grid; each end is known to "
        f"the grid's spacing (×{spacing:.3g}). Hand check: the tuned {short} (×1) against the lattice's best on "
        f"the same seeds; a gain of more than {HAND_CHECK:.0%} says the search was underpowered for that method "
        f"(this checks {short} only; the other tuned values are held)."
        + (f" Not scaled ({', '.join(skipped)}): {UNREACHED_NOTE}, since a lattice around a configuration the "
           f"search placed at chance measures nothing the search's own lr grid did not (`unreached = \"run\"` runs "
           f"it); the hand check runs their own values." if skipped else ""),
        "",
        f"KM median {unit} [95% CI] (grokked/runs) per factor of the tuned {short}:",
        "",
        markdown_table(["factor", *result["methods"]],
                       [[_factor(f), *(next((_cell(p) for p in m["points"] if p["factor"] == f), "not run")
                                       for m in result["methods"].values())]
                        for f in grid]),
    ]
    if figure:
        lines += ["", f"Figure: `{figure}` ({unit} against {short}, log-log; a censored median drawn at the budget)."]
    return "\n".join(lines) + "\n"


def robustness_figure(spec: Robustness, result: dict[str, Any]) -> bytes:
    """Steps (the board's unit) against the field's value, log-log, one line per method with its CIs; a median that
    did not reach the threshold is drawn as an open triangle at the budget (the largest censoring time)."""
    import io

    # a Figure on its own Agg canvas, not pyplot: the user's matplotlib backend stays as it was
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [p for m in result["methods"].values() for p in m["points"]]
    censored = [t for p in points for t, e in zip(p["times"], p["events"], strict=True) if not e and math.isfinite(t)]
    finite = [p["median"] for p in points if math.isfinite(p["median"])]
    budget = max(censored or finite or [1.0])
    fig = Figure(figsize=(7.5, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, (label, m) in enumerate(result["methods"].items()):
        colour = f"C{i % 10}"
        xs = [p["value"] for p in m["points"]]
        ys = [p["median"] if math.isfinite(p["median"]) else math.nan for p in m["points"]]
        ax.plot(xs, ys, "o-", color=colour, label=label, markersize=4)
        for x, p in zip(xs, m["points"], strict=True):
            lo, hi = p["ci"]
            if math.isfinite(p["median"]) and not math.isnan(lo):
                ax.plot([x, x], [lo, min(hi, budget)], color=colour, alpha=0.4, linewidth=1)
        cx = [x for x, y in zip(xs, ys, strict=True) if math.isnan(y)]
        ax.plot(cx, [budget] * len(cx), "^", color=colour, markerfacecolor="none", markersize=7)
        ax.axvline(m["tuned"], color=colour, alpha=0.25, linewidth=1, linestyle=":")
    ax.axhline(budget, color="grey", linewidth=0.8, linestyle="--", label="budget (open ^: censored)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{spec.field} (dotted: the tuned value)")
    ax.set_ylabel(f"KM median {spec.tune.metric} to the threshold")
    ax.set_title(f"{spec.tune.name}: robustness to {spec.field} ({len(spec.seeds)} seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def robustness(path: str | Path, *, workers: int | None = None, backend: str = "local", address: str | None = None,
               log: Any = print) -> dict[str, Any]:
    """``egd robustness SPEC``: run what is missing, then write ``STORE-robustness.md``/``.json``/``.png``."""
    spec = load_robustness(path)
    board = read_board(spec.tune, spec.methods, spec.winner)
    planned = robustness_plan(spec, board)
    rows = _run_logged(spec, planned, f"robustness of {spec.tune.name} to {spec.field}: {len(spec.methods)} methods "
                       f"x {len(spec.factors)} factors", workers, backend, address, log)
    result = robustness_result(spec, board, rows)
    png = spec.out.with_name(spec.out.name + ".png")
    fio.atomic_write(png, lambda f: f.write(robustness_figure(spec, result)))
    text = robustness_markdown(spec, result, png.name)
    _write(spec.out, text, result)
    log("\n" + text + f"\nrobustness: {spec.out.with_name(spec.out.name + '.md')}", flush=True)
    return result


def _write(out: Path, text: str, result: dict[str, Any]) -> None:
    """``OUT.md`` and ``OUT.json`` (strict JSON: inf and NaN as null), each written atomically."""
    fio.write_text(out.with_name(out.name + ".md"), text)
    fio.write_text(out.with_name(out.name + ".json"), json.dumps(finite_json(result), indent=2) + "\n")


# ------------------------------------------------------------------------------------------- hand check


def _g(x: float) -> str:
    return f"{x:.3g}"


def neighbours(tspec: TuneSpec, c: Contender, searched: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The settings a hand check tries around a winner (``searched``: its search-space point, completed with the
    method's own values where it left a dimension out), one dimension at a time, every dimension but the first:

    * a log range: the value ÷10 and ×10; a linear range: ± 10% of the range's width (inside ``limit_low``/
      ``limit_high``, which momentum's 0.999 keeps below 1);
    * with ``off``: off, if it is on; if it is off, the range's ends and middle (geometric for a log range); a
      linear winner in the outer tenth of the low side (which never widens: 0 is searched below it) also tries
      half the range's low end, the middle of the gap between 0 and the range (momentum 0.25 below 0.5..0.99);
    * a categorical: every other choice (named by ``_choice``).

    Returns (label, search-space point) pairs; the values outside the declared range are meant (a hand check is not
    bound by the search)."""
    point = {**own_params(tspec, c), **searched}
    out: list[tuple[str, dict[str, Any]]] = []
    for d in tspec.space[1:]:
        if d.field not in point:
            continue
        if d.choices is not None:
            out += [(f"{d.field} = {choice_text(d.choices[i])}", {**point, d.field: i}) for i in range(len(d.choices))
                    if i != point[d.field]]
            continue
        if d.off and point.get(d.off_param):
            mid = math.sqrt(d.low * d.high) if d.log else (d.low + d.high) / 2
            xs = [d.low, mid, d.high]
        else:
            if d.off:
                out.append((f"{d.field} off", {**point, d.off_param: True}))
            x = float(point[d.field])
            if d.log:
                xs = [x / 10, x * 10]
            else:
                step = 0.1 * (d.high - d.low)
                lo = -math.inf if d.limit_low is None else d.limit_low
                hi = math.inf if d.limit_high is None else d.limit_high
                xs = [v for v in (max(x - step, lo), min(x + step, hi)) if v != x]
                if d.off and d.position(x) < 0.1:
                    # the low side of an off dimension never widens (0 is searched below it), so a winner at
                    # that edge leaves the gap between 0 and the range unsearched: its middle too
                    xs.insert(0, d.low / 2)
        for x in xs:
            params = {**point, d.field: float(f"{x:.6g}")}
            if d.off:
                params[d.off_param] = False
            out.append((f"{d.field} = {_g(x)}", params))
    return out


def handcheck_plan(spec: HandCheck, board: dict[str, dict[str, Any]]) -> dict[tuple[str, str], list[PlannedRun]]:
    """The runs of each (method, setting): ``"tuned"`` (the leaderboard row's values), each neighbour
    (:func:`neighbours` of the row's ``searched`` point, on the ranges of the round the winners came from) and
    :data:`OWN` (the method's own configuration, the lr included), over the seeds, with the (possibly overridden)
    ``[report_set]``; no neighbours for a method that reached the threshold on no tuning seed, unless
    ``unreached = "run"``."""
    out = {}
    ranges = last_round(spec.tune, list(board.values()))  # the ranges the winners were judged on (widened)
    for label in spec.methods:
        c = _contender(spec.tune, label)
        row = board[label]
        out[(label, "tuned")] = plan(spec.tune, c, dict(row["values"]), spec.seeds, reporting=True)
        around = [] if _skipped(spec, row) else neighbours(ranges, c, dict(row.get("searched") or {}))
        for name, params in around:
            out[(label, name)] = plan(spec.tune, c, trial_values(spec.tune, c, params), spec.seeds, reporting=True)
        out[(label, OWN)] = plan(spec.tune, c, trial_values(spec.tune, c, own_params(spec.tune, c)), spec.seeds,
                                 reporting=True)
    return out


def handcheck_result(spec: HandCheck, rows: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, Any]:
    """Per method: every setting's Kaplan–Meier reading, and :func:`hand_check` of the tuned one against the best
    (the settings in the place of the factors)."""
    metric = spec.tune.metric
    methods: dict[str, Any] = {}
    for (label, name), rs in rows.items():
        methods.setdefault(label, {"settings": []})["settings"].append({"setting": name, **_reading(rs, metric)})
    for m in methods.values():
        points = [{"factor": 1.0 if p["setting"] == "tuned" else 2.0 + i, "median": p["median"]}
                  for i, p in enumerate(m["settings"])]
        h = hand_check(points)
        if h is not None:
            h["best_setting"] = m["settings"][[p["factor"] for p in points].index(h.pop("best_factor"))]["setting"]
        m["hand_check"] = h
    return {"tune": spec.tune.name, "metric": metric, "seeds": spec.seeds, "within": HAND_CHECK,
            "smoke": len(spec.seeds) < MIN_SEEDS, "methods": methods}


def handcheck_markdown(spec: HandCheck, result: dict[str, Any]) -> str:
    unit = spec.tune.metric
    dims = ", ".join(f"`{d.field}`" for d in spec.tune.space[1:]) or "none"
    summary = []
    for label, m in result["methods"].items():
        h = m["hand_check"]
        if h is None:
            cell = "- (no setting reached the threshold)"
        elif h["best_setting"] == "tuned" or h["gain"] <= 0:
            cell = "not beaten"
        else:
            tuned = "> budget" if not math.isfinite(h["tuned"]) else f"{h['tuned']:g}"
            verdict = f"beaten by > {HAND_CHECK:.0%}: underpowered" if h["beaten"] else f"within {HAND_CHECK:.0%}"
            cell = f"{tuned} → {h['best']:g} with {h['best_setting']} (−{h['gain']:.0%}, {verdict})"
        summary.append([label, len(m["settings"]) - 1, cell])
    skipped = result.get("unreached") or []
    lines = [
        f"Hand check of tune `{spec.tune.name}`: each method's tuned configuration ({WINNERS[spec.winner]}) against "
        f"its neighbours in {dims}, one at a time (a log range ÷10 and ×10, a linear one ±10% of its width, off or "
        f"on, every other choice; the lr is `egd robustness`'s), and against its own configuration, the lr included "
        f"(`{OWN}`: the recipe's table or the registry's defaults, where the search starts), on seeds "
        f"{spec.seeds}; {_setting(spec.tune)}. "
        f"A neighbour beating the tuned configuration's Kaplan-Meier median {unit} by more than {HAND_CHECK:.0%} "
        "says the search was underpowered for that method." + _smoke(spec.seeds)
        + (f" No neighbours for {', '.join(skipped)}: {UNREACHED_NOTE.replace('×1', 'the tuned configuration')} "
           "and its own values (`unreached = \"run\"` runs them)." if skipped else ""),
        "",
        markdown_table(["method", "other settings", "hand check (tuned against the best other setting)"], summary),
        "",
        f"KM median {unit} [95% CI] (grokked/runs) per setting:",
        "",
    ]
    for label, m in result["methods"].items():
        tuned = ", ".join(f"{k} = {value_text(v)}" for k, v in (m.get("tuned_values") or {}).items())
        lines += [f"**{label}**" + (f" (tuned: {tuned})" if tuned else ""), "",
                  markdown_table(["setting", f"KM median {unit}"],
                                                     [[p["setting"], _cell(p)] for p in m["settings"]]), ""]
    return "\n".join(lines)


def handcheck(path: str | Path, *, workers: int | None = None, backend: str = "local", address: str | None = None,
              log: Any = print) -> dict[str, Any]:
    """``egd handcheck SPEC``: run what is missing, then write ``STORE-handcheck.md``/``.json``."""
    spec = load_handcheck(path)
    board = read_board(spec.tune, spec.methods, spec.winner)
    planned = handcheck_plan(spec, board)
    rows = _run_logged(spec, planned, f"hand check of {spec.tune.name}: {len(spec.methods)} methods, "
                       f"{len(planned)} settings", workers, backend, address, log)
    result = handcheck_result(spec, rows)
    for label, m in result["methods"].items():  # what "tuned" is: the leaderboard row's configuration values
        m["tuned_values"] = dict(board[label]["values"])
    result["unreached"] = [label for label in spec.methods if _skipped(spec, board[label])]
    text = handcheck_markdown(spec, result)
    _write(spec.out, text, result)
    log("\n" + text + f"\nhand check: {spec.out.with_name(spec.out.name + '.md')}", flush=True)
    return result


# --------------------------------------------------------------------------------------------- transfer


def transfer_plan(spec: Transfer, board: dict[str, dict[str, Any]]) -> dict[tuple[str, str], list[PlannedRun]]:
    """The runs of each (variant, method): the method's tuned values plus the variant's overrides, over the seeds,
    with the tune's ``[set]`` and ``[report_set]``."""
    return {(v, label): plan(spec.tune, _contender(spec.tune, label), {**board[label]["values"], **overrides},
                             spec.seeds, reporting=True)
            for v, overrides in spec.variants.items() for label in spec.methods}


def _source(row: dict[str, Any], metric: str) -> dict[str, Any]:
    """The board's own reading of a method (its median study's, from the JSON: null median = never reached)."""
    k = row.get(metric) or {}
    median = math.inf if k.get("median") is None else k["median"]
    lo, hi = (k.get("ci") or [None, None])
    return {"median": median, "ci": [math.nan if lo is None else lo, math.inf if hi is None else hi],
            "grokked": row.get("grokked", 0), "done": row.get("done", 0), "runs": row.get("runs", 0)}


def ranks(medians: dict[str, float]) -> dict[str, int]:
    """Competition ranks, smallest median first: 1 + the number of strictly smaller medians (equal medians,
    infinite ones included, share a rank)."""
    return {m: 1 + sum(o < v for o in medians.values()) for m, v in medians.items()}


def transfer_result(spec: Transfer, board: dict[str, dict[str, Any]],
                    rows: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, Any]:
    """The transfer readings: per column (the source board, then each variant) and method, the Kaplan–Meier reading
    and its rank; across the variants the performance profile and AlgoPerf's score, and the best-scoring methods."""
    metric = spec.tune.metric
    columns = {"source": {m: _source(board[m], metric) for m in spec.methods}}
    for v in spec.variants:
        columns[v] = {m: _reading(rows[(v, m)], metric) for m in spec.methods}
    for col in columns.values():
        for m, r in ranks({m: k["median"] for m, k in col.items()}).items():
            col[m]["rank"] = r
    table = {v: {m: columns[v][m]["median"] for m in spec.methods} for v in spec.variants}
    score = profile_score(table)
    top = max((s for s in score.values() if not math.isnan(s)), default=math.nan)
    return {"tune": spec.tune.name, "metric": metric, "seeds": spec.seeds, "variants": spec.variants,
            "smoke": len(spec.seeds) < MIN_SEEDS, "columns": columns, "table": table, "score": score,
            "best": [m for m, s in score.items() if s == top]}


def transfer_markdown(spec: Transfer, result: dict[str, Any]) -> str:
    """The variant × method table (the source board first), the variants' overrides, the performance profile and
    score across the variants, and the line naming whose tuning transfers best."""
    unit = spec.tune.metric
    cols = result["columns"]
    header = ["method", f"source board ({spec.tune.name})", *spec.variants]
    body = [[m, *(f"{_cell(cols[c][m])} #{cols[c][m]['rank']}" for c in cols)] for m in spec.methods]
    score = result["score"]
    order = sorted(score, key=lambda m: -score[m] if not math.isnan(score[m]) else math.inf)
    ranked = ", ".join(f"{m} {score[m]:.3f}" for m in order)
    best = " and ".join(result["best"]) or "none (no variant was reached by any method)"
    lines = [
        f"Transfer of tune `{spec.tune.name}`'s tuned configurations (each method's: {WINNERS[spec.winner]}) to "
        f"{len(spec.variants)} held-out variants, without retuning; seeds {spec.seeds}; the tune's [set] and "
        f"[report_set]; {_setting(spec.tune)} (unless a variant changes it). Cells: Kaplan-Meier median {unit} "
        f"to the threshold [95% bootstrap CI] (grokked/runs) #rank in the column; the source board's column is its "
        f"own reporting runs." + _smoke(spec.seeds),
        "",
        markdown_table(header, body),
        "",
        "Variants:",
        "",
        *(f"- `{v}`: " + ", ".join(f"{k} = {json.dumps(x)}" for k, x in o.items()) for v, o in spec.variants.items()),
        "",
        f"Performance profile across the {len(spec.variants)} variants (Dolan-Moré: rho(tau), the fraction of "
        f"variants on which a method's KM median is within tau× of the best) and AlgoPerf's score (the area under "
        f"rho over tau in [1, {TAU_MAX:g}], normalised; the source board left out):",
        "",
        profile_markdown(result["table"], DEFAULT_TAUS),
        "",
        f"Whose tuning transfers best (the highest score across the variants): {best} (scores: {ranked}).",
    ]
    return "\n".join(lines) + "\n"


def transfer(path: str | Path, *, workers: int | None = None, backend: str = "local", address: str | None = None,
             log: Any = print) -> dict[str, Any]:
    """``egd transfer SPEC``: run what is missing, then write ``STORE-transfer.md``/``.json``."""
    spec = load_transfer(path)
    board = read_board(spec.tune, spec.methods, spec.winner)
    planned = transfer_plan(spec, board)
    log(f"transfer of {spec.tune.name}: {len(spec.variants)} variants x {len(spec.methods)} methods x "
        f"{len(spec.seeds)} seeds ({len(planned) * len(spec.seeds)} runs, those already in the store kept) -> "
        f"{spec.store}", flush=True)
    rows = _execute(f"{spec.tune.name}-{spec.name}", spec.store, planned, workers=workers, backend=backend,
                    address=address)
    result = transfer_result(spec, board, rows)
    text = transfer_markdown(spec, result)
    _write(spec.out, text, result)
    log("\n" + text + f"\ntransfer: {spec.out.with_name(spec.out.name + '.md')}", flush=True)
    return result

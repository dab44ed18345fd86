"""The one interface of ``egd reproduce``: an :class:`Artifact` is declared once (its name, what it reproduces, the
options it takes) and made in four steps by the module named in its declaration::

    plan(artifact, options) -> Plan         what will run (a sweep, or nothing to train), and its headline
    run(plan) -> outcome                    train the sweep (resumable), simulate, or read the stores it averages
    analyse(plan, outcome) -> numbers       every number of the artifact, as a dict
    write(plan, numbers) -> dict            the table (printed, and written with its figure and JSON), the paths

:func:`make` chains them and prints the headline before the run.  The artifacts that train a sweep share
:func:`run_sweep` (their ``run``), :func:`load_runs` (the finished runs as :class:`RunResult`) and
:func:`report_dir`.

This module is imported by the command line to list the artifacts, so it stays light: the sweep machinery is
imported where it is used.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError, check

if TYPE_CHECKING:
    from ..rundir import MetricRow
    from ..sweep import Sweep

SEEDS_ALLOWED = "a count N >= 1 (seeds 0..N-1), a range A-B with A <= B, or a list A,B,C of distinct seeds >= 0"


def parse_seeds(seeds: int | str | Sequence[int]) -> list[int]:
    """``--seeds``: a count (``5``: 0-4), an inclusive range (``"5-9"``) or a list (``"0,3,7"``, or a list of ints)."""
    value = seeds
    if isinstance(seeds, str):
        text = seeds.strip()
        if re.fullmatch(r"\d+", text):
            seeds = int(text)
        elif m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", text):
            first, last = int(m[1]), int(m[2])
            check(first <= last, "--seeds", value, SEEDS_ALLOWED, ConfigError)
            return list(range(first, last + 1))
        else:
            parts = [x.strip() for x in text.split(",")]
            check(len(parts) > 1 and all(re.fullmatch(r"\d+", x) for x in parts), "--seeds", value, SEEDS_ALLOWED,
                  ConfigError)
            seeds = [int(x) for x in parts]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        check(seeds >= 1, "--seeds", value, SEEDS_ALLOWED, ConfigError)
        return list(range(seeds))
    ok = isinstance(seeds, Sequence) and len(seeds) > 0 and len(set(seeds)) == len(seeds)
    check(ok and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds), "--seeds", value,
          SEEDS_ALLOWED, ConfigError)
    return list(seeds)


def describe_seeds(seeds: list[int]) -> str:
    """``5 seeds`` for 0..4; ``3 seeds: 0, 3, 7`` otherwise."""
    if seeds == list(range(len(seeds))):
        return f"{len(seeds)} seeds"
    return f"{len(seeds)} seeds: {', '.join(map(str, seeds))}"


# ------------------------------------------------------------------------------------------ the declaration


@dataclass(frozen=True)
class Options:
    """What ``egd reproduce NAME`` was given (``None``: not given, the artifact's default)."""

    quick: bool = False
    seeds: int | str | Sequence[int] | None = None
    workers: int | None = None
    out: str | Path = "reproduce"
    dataset: str | None = None


@dataclass(frozen=True)
class Artifact:
    """One artifact of the paper: its name, a line saying what it reproduces, the module (in this package) whose
    ``plan``, ``run``, ``analyse`` and ``write`` make it (:class:`Steps`), and the options it takes beyond
    ``--quick`` and ``--out``: a sweep (``seeds``: the default seed counts, full and ``--quick``) takes ``--seeds``
    and ``--workers``; ``datasets`` (the first is the default) are the choices of ``--dataset``."""

    name: str
    what: str
    module: str
    seeds: tuple[int, int] | None = None
    datasets: tuple[str, ...] = ()

    @property
    def options(self) -> tuple[str, ...]:
        """The options it takes, in the order of ``egd reproduce --help``."""
        return ("quick", *(("seeds", "workers") if self.seeds else ()), "out", *(("dataset",) if self.datasets else ()))

    def default_seeds(self, quick: bool) -> int:
        assert self.seeds is not None, f"{self.name} trains no sweep"
        return self.seeds[1] if quick else self.seeds[0]

    def steps(self) -> Steps:
        """The module that makes it (imported now: the command line lists artifacts without importing them)."""
        return importlib.import_module(f"{__package__}.{self.module}")  # type: ignore[return-value]


def check_options(artifact: Artifact, options: Options, registry: Mapping[str, Artifact]) -> Options:
    """``options`` with the artifact's default dataset filled in, or a ConfigError for the first option it does not
    take: ``--FLAG = VALUE: only A takes --FLAG`` when one artifact takes it, else ``--FLAG = VALUE: NAME takes only
    --quick and --out`` (what it does take)."""
    for flag in ("dataset", "seeds", "workers"):
        value = getattr(options, flag)
        if value is None or flag in artifact.options:
            continue
        takers = [a.name for a in registry.values() if flag in a.options]
        if len(takers) == 1:
            raise ConfigError(f"--{flag} = {value!r}: only {takers[0]} takes --{flag}")
        taken = [f"--{o}" for o in artifact.options]
        raise ConfigError(f"--{flag} = {value!r}: {artifact.name} takes only {', '.join(taken[:-1])} and {taken[-1]}")
    if artifact.datasets and options.dataset is None:
        return replace(options, dataset=artifact.datasets[0])
    return options


# ------------------------------------------------------------------------------------------------ the steps


@dataclass
class Plan:
    """What an artifact will do: its options, the headline printed before it runs, the sweep to train (None: nothing
    to train), and what its own later steps need (``detail``: e.g. which run is which setting)."""

    artifact: Artifact
    options: Options
    headline: str
    sweep: Sweep | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Steps(Protocol):
    """The four steps; each artifact's module defines them as module-level functions."""

    def plan(self, artifact: Artifact, options: Options) -> Plan: ...

    def run(self, plan: Plan) -> Any: ...

    def analyse(self, plan: Plan, outcome: Any) -> dict[str, Any]: ...

    def write(self, plan: Plan, numbers: dict[str, Any]) -> dict[str, Any]: ...


def make(artifact: Artifact, options: Options) -> dict[str, Any]:
    """Plan, print the headline, run, analyse, write; returns what ``write`` returns (the numbers and the paths)."""
    steps = artifact.steps()
    plan = steps.plan(artifact, options)
    print(plan.headline, flush=True)
    outcome = steps.run(plan)
    return steps.write(plan, steps.analyse(plan, outcome))


# ----------------------------------------------------------------------------------- the sweep artifacts


def chosen_seeds(artifact: Artifact, options: Options) -> list[int]:
    """``--seeds`` parsed (:func:`parse_seeds`), or the artifact's default count."""
    return parse_seeds(options.seeds if options.seeds is not None else artifact.default_seeds(options.quick))


def store_path(root: str | Path, name: str, quick: bool) -> Path:
    """``ROOT/NAME.sqlite``, ``ROOT/NAME-quick.sqlite`` with ``quick``."""
    return Path(root) / f"{name}{'-quick' if quick else ''}.sqlite"


def report_dir(sweep: Sweep) -> Path:
    """``STORE-report/`` (``reproduce/table8.sqlite`` -> ``reproduce/table8-report/``), created."""
    path = Path(f"{sweep.store.with_suffix('').as_posix()}-report")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_sweep(plan: Plan) -> dict[str, int]:
    """The ``run`` step of a sweep artifact: run (or continue) its sweep; the run counts by status."""
    from ..sweep import run_sweep as run

    return run(plan.sweep, workers=plan.options.workers)


@dataclass(frozen=True)
class RunResult:
    """One finished run of an artifact's sweep, read back from its store: its id, sweep parameters (``method``,
    ``seed``, and the artifact's own, e.g. ``shuffle_at``), summary, resolved config, run directory and metric
    rows (a NaN value reads as None)."""

    id: str
    params: dict[str, Any]
    summary: dict[str, Any]
    config: dict[str, Any] = field(repr=False)
    path: Path
    rows: list[MetricRow] = field(repr=False)

    @property
    def method(self) -> str:
        return str(self.params["method"])

    @property
    def seed(self) -> int:
        return int(self.params["seed"])

    @property
    def grokked(self) -> bool:
        return bool(self.summary.get("grokked") and self.summary.get("grok"))

    @property
    def grok_step(self) -> int | None:
        return self.summary["grok"]["step"] if self.grokked else None


def load_runs(sweep: Sweep, describe: Callable[[dict[str, Any]], str]) -> tuple[list[RunResult], list[str]]:
    """The finished runs of ``sweep`` in store order, and ``"DESCRIBE(params): status"`` for each one that is not
    finished; a ConfigError (naming ``egd sweep status``) when none is."""
    from ..sweep import Store
    from ..sweep.spec import run_root

    results, missing = [], []
    with Store(sweep.store, create=False) as store:
        for r in store.runs([x.id for x in sweep.runs]):
            if r["status"] != "done":
                missing.append(f"{describe(r['params'])}: {r['status']}")
                continue
            results.append(RunResult(r["id"], r["params"], r["summary"] or {}, r["config"], run_root(sweep.store) /
                                     r["id"], store.metrics(r["id"])))
    if not results:
        raise ConfigError(f"no run of {str(sweep.store)!r} finished ({'; '.join(missing)}): see "
                          f"`egd sweep status {sweep.store}`")
    return results, missing


def finish_sweep(plan: Plan, text: str, written: Mapping[str, Path], failed: int, notes: Sequence[str] = ()) -> None:
    """The end of a sweep artifact that writes a table: the store's standard report into the report directory,
    the table printed, then ``notes`` (warnings), the failed runs, the paths (``written``: ``figure``, ``table``)."""
    from ..report import write_report

    store = plan.sweep.store
    write_report(store, report_dir(plan.sweep))
    print()
    print(text)
    for note in notes:
        print(note)
    if failed:
        print(f"{failed} runs failed: see `egd sweep status {store}`")
    print("\n".join([f"store: {store}", *(f"{k}: {v}" for k, v in written.items())]))

"""Sweep files: a base config, fixed overrides, a grid and explicit runs, expanded deterministically.

A run's identity is the hash of its resolved config (:func:`run_id`), so the same settings always map to the
same row of the results store and the same run directory, whatever file or order they came from.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import SECTIONS, load_config, load_toml, parse_value, recipe_names, resolve, toml_table
from ..errors import ConfigError

# The fields a ``seed`` key sets: model init, data order and the task's data seed (split_seed or seed).
TRAIN_SEEDS = ("train.seed", "train.shuffle_seed")
TASK_SEEDS = ("split_seed", "seed")
SEED_FIELDS = frozenset({"seed", *TRAIN_SEEDS, *(f"task.{k}" for k in TASK_SEEDS)})
# Every sweep run is single-threaded and silent: N workers on N cores must not oversubscribe.
FORCED = {"train.threads": 1, "train.progress": "off"}
TOP_LEVEL = ("base", "sweep", "set", "grid", "runs")
SWEEP_KEYS = ("name", "store", "baseline")
FIELD_HELP = "seed, method, name, diagnostics, task.*, model.*, loss.*, optimizer.*, train.*, methods.NAME.*"


# ------------------------------------------------------------------------------------------------ hashing


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no whitespace, ASCII only, no NaN/inf: the same bytes on every platform."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def config_hash(obj: Any) -> str:
    """First 16 hex digits of the SHA-256 of :func:`canonical_json`."""
    try:
        text = canonical_json(obj)
    except ValueError as e:  # NaN or inf somewhere in the config
        raise ConfigError(f"config cannot be hashed: {e}") from None
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def run_id(resolved: dict[str, Any]) -> str:
    """The run id: :func:`config_hash` of a resolved config (see :func:`egalitarian.config.resolve`)."""
    return config_hash(resolved)


def _seedless(resolved: dict[str, Any]) -> dict[str, Any]:
    """A copy of a resolved config without its seed fields."""
    cfg = copy.deepcopy(resolved)
    for key in SEED_FIELDS - {"seed"}:
        section, name = key.split(".")
        cfg.get(section, {}).pop(name, None)
    return cfg


def group_id(resolved: dict[str, Any]) -> str:
    """The group id: the hash of the resolved config without its seed fields (runs that differ only by seed)."""
    return config_hash(_seedless(resolved))


def _flat(tree: dict[str, Any], at: str = "") -> dict[str, Any]:
    """A nested config as ``{"train.max_epochs": 300, ...}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{at}.{key}" if at else key
        out.update(_flat(value, path) if isinstance(value, dict) and value else {path: value})
    return out


def distinct_labels(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Each group's label by group id, from store rows (``group_key``, ``label``, ``config``), made distinct where
    groups of different configs share one (a sweep file whose ``[set]`` changed between runs into one store): the
    label, then the config fields those groups differ in, ``method=sgd (train.max_epochs=300)``."""
    first: dict[str, dict[str, Any]] = {}
    for r in rows:
        first.setdefault(r["group_key"], r)
    out = {key: r["label"] for key, r in first.items()}
    for label in set(out.values()):
        keys = [key for key, lab in out.items() if lab == label]
        if len(keys) < 2:
            continue
        flat = {key: _flat(_seedless(first[key]["config"])) for key in keys}
        fields = sorted({f for x in flat.values() for f in x
                         if len({canonical_json(y.get(f)) for y in flat.values()}) > 1})
        for key in keys:
            out[key] = f"{label} (" + " ".join(f"{f}={format_value(flat[key].get(f))}" for f in fields) + ")"
    return out


def format_value(value: Any) -> str:
    """A value as it is shown in group labels: strings bare, everything else as JSON (``true``, ``[1, 2]``)."""
    return value if isinstance(value, str) else json.dumps(value)


def group_label(params: dict[str, Any]) -> str:
    """``"method=egd optimizer.lr=0.5"``: the varying fields but the seeds; ``"(all)"`` when none vary."""
    items = [f"{k}={format_value(v)}" for k, v in sorted(params.items()) if k not in SEED_FIELDS]
    return " ".join(items) or "(all)"


def parse_spec(spec: str) -> dict[str, Any]:
    """``"method=sgd optimizer.lr=0.5"`` -> {"method": "sgd", "optimizer.lr": 0.5} (values read as TOML)."""
    out = {}
    for item in re.split(r"\s+(?=[\w.\-]+=)", spec.strip()):
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"baseline = {spec!r}: expected FIELD=VALUE pairs, e.g. method=sgd")
        out[key] = parse_value(text)
    return out


def matches(params: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether every field of ``spec`` has the same value in ``params``."""
    return all(k in params and params[k] == v for k, v in spec.items())


# ----------------------------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class PlannedRun:
    """One run a sweep plans: its id, the fields that vary (as written, ``seed`` unexpanded), group, config.

    (What a finished run looks like to the report is :class:`egalitarian.report.LoadedRun`.)"""

    id: str
    params: dict[str, Any]
    group: str  # group id (config hash without seeds)
    label: str  # group label, from params
    config: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep file: name, store path, baseline group spec, and its runs in expansion order."""

    name: str
    store: Path
    baseline: str | None
    runs: list[PlannedRun]
    path: Path | None = None

    @property
    def run_root(self) -> Path:
        return run_root(self.store)


def run_root(store: str | Path) -> Path:
    """Where a store's run directories live: ``sweeps/NAME.sqlite`` -> ``sweeps/NAME/RUN_ID/``."""
    store = Path(store)
    return store.parent / store.stem


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a sweep file; any problem is a ConfigError naming the file and the field."""
    path = Path(path)
    doc = load_toml(path)
    where = f"sweep file {str(path)!r}"
    for key in doc:
        if key not in TOP_LEVEL:
            raise ConfigError(f"{where}: {key} = {doc[key]!r}: unknown key; allowed: {', '.join(TOP_LEVEL)}")
    meta = toml_table(doc, "sweep", where)
    for key in meta:
        if key not in SWEEP_KEYS:
            raise ConfigError(f"{where}: sweep.{key}: unknown key; allowed: {', '.join(SWEEP_KEYS)}")
    name = meta.get("name", path.stem)
    for key in ("name", "store", "baseline"):
        if key in meta and not (isinstance(meta[key], str) and meta[key]):
            raise ConfigError(f"{where}: sweep.{key} = {meta[key]!r}: must be a non-empty string")
    store = Path(meta.get("store", f"sweeps/{name}.sqlite"))
    base = _load_base(doc, path, where)
    runs = expand(base, toml_table(doc, "grid", where), _runs(doc, where), toml_table(doc, "set", where), where=where)
    baseline = meta.get("baseline")
    if baseline and baseline != "(all)" and not any(matches(r.params, parse_spec(baseline)) for r in runs):
        labels = "; ".join(dict.fromkeys(r.label for r in runs))
        raise ConfigError(f"{where}: sweep.baseline = {baseline!r}: matches no run; groups: {labels}")
    return Sweep(name=name, store=store, baseline=baseline, runs=runs, path=path)


def _runs(doc: dict[str, Any], where: str) -> list[dict[str, Any]]:
    runs = doc.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise ConfigError(f"{where}: runs = {runs!r}: must be an array of tables ([[runs]])")
    return runs


def _load_base(doc: dict[str, Any], path: Path, where: str) -> dict[str, Any]:
    base = doc.get("base")
    if base is None:
        raise ConfigError(f"{where}: base is missing; set base = a recipe name or a TOML file, or a [base] table")
    if isinstance(base, dict):
        return base
    if not isinstance(base, str):
        raise ConfigError(f"{where}: base = {base!r}: must be a recipe name, a TOML file or a [base] table")
    if base in recipe_names():
        return load_config(base)
    local = path.parent / base  # relative paths are relative to the sweep file
    try:
        return load_config(str(local if local.is_file() else base))
    except ConfigError as e:
        raise ConfigError(f"{where}: base = {base!r}: {e}") from None


def expand(
    base: dict[str, Any],
    grid: dict[str, Any] | None = None,
    runs: list[dict[str, Any]] | None = None,
    fixed: dict[str, Any] | None = None,
    *,
    where: str = "sweep",
) -> list[PlannedRun]:
    """The runs of a sweep, in a deterministic order.

    Every run is ``base`` + ``fixed`` + one explicit run (``[[runs]]``, in file order) + one grid point. The
    grid is the cartesian product over its keys in sorted order, values in the given order, the last key
    varying fastest; explicit runs are crossed with the grid. A key may not be in both. Runs whose resolved
    configs are identical are kept once (the first).
    """
    grid, fixed = grid or {}, fixed or {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid.{key} = {values!r}: must be a non-empty list of values")
    keys = sorted(grid)
    points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]
    out: list[PlannedRun] = []
    seen: set[str] = set()
    for i, explicit in enumerate(runs or [{}]):
        both = sorted(set(explicit) & set(grid))
        if both:
            raise ConfigError(f"{where}: runs[{i}].{both[0]} is also a grid key; give it in one place only")
        for point in points:
            sources = [("set", fixed), (f"runs[{i}]", explicit), ("grid", point)]
            cfg = _build(base, sources, where)
            rid = run_id(cfg)
            if rid in seen:
                continue
            seen.add(rid)
            params = {**explicit, **point}
            out.append(PlannedRun(id=rid, params=params, group=group_id(cfg), label=group_label(params), config=cfg))
    return out


def _build(base: dict[str, Any], sources: list[tuple[str, dict[str, Any]]], where: str) -> dict[str, Any]:
    """Apply the overrides of each source to a copy of ``base``, resolve, and check every field."""
    cfg = copy.deepcopy(base)
    applied: list[tuple[str, str, Any]] = []
    seed: tuple[str, Any] | None = None
    for source, overrides in sources:
        for key, value in overrides.items():
            _check_name(key, f"{where}: {source}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{where}: {source}.{key} = {value!r}: must be a finite number")
            if key == "seed":
                seed = (source, value)
            else:
                _assign(cfg, key, value)
                applied.append((source, key, value))
    if seed is not None:  # last, so that it follows a task.name set anywhere
        for target in seed_fields(cfg.get("task", {}).get("name")):
            _assign(cfg, target, seed[1])
            applied.append((seed[0], target, seed[1]))
    for key, value in FORCED.items():  # a sweep's runs are always single-threaded and silent
        _assign(cfg, key, value)
    methods = base.get("methods") if isinstance(base.get("methods"), dict) else {}  # as written, not overridden
    from ..methods import OPTIMIZERS  # a method without a table in the base runs with the registry's defaults

    try:
        resolved = resolve(cfg, OPTIMIZERS)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    for source, key, value in applied:
        _check_field(key, value, resolved, methods, f"{where}: {source}")
    for section in ("task", "model", "optimizer", "loss"):
        for key, value in resolved[section].items():
            _check_field(f"{section}.{key}", value, resolved, methods, where)
    return resolved


def seed_fields(task_name: Any) -> list[str]:
    """The fields a ``seed`` key sets: train.seed, train.shuffle_seed and the task's split_seed (or seed)."""
    params = _task_params(task_name)
    return [*TRAIN_SEEDS, *[f"task.{k}" for k in TASK_SEEDS if k in params][:1]]


def _check_name(key: Any, where: str) -> None:
    if not isinstance(key, str) or not key or not all(key.split(".")):
        raise ConfigError(f"{where}: {key!r}: not a field name; allowed: {FIELD_HELP}")
    head = key.split(".")[0]
    if key != "seed" and head not in ("method", "name", "diagnostics", "methods") + SECTIONS:
        raise ConfigError(f"{where}: {key}: unknown field; allowed: {FIELD_HELP}")


def _assign(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    node = cfg
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted} = {value!r}: {part!r} is not a section")
    node[parts[-1]] = copy.deepcopy(value)


def _task_params(name: Any) -> list[str]:
    from ..build import accepted_fields
    from ..tasks import TASKS

    return accepted_fields("task", name)[1:] if name in TASKS else []


def _check_field(key: str, value: Any, resolved: dict[str, Any], methods: dict[str, Any], where: str) -> None:
    """Raise a ConfigError naming ``key`` when the resolved config's builders do not accept it."""
    parts = key.split(".")
    if key in ("method", "name", "diagnostics") or isinstance(value, dict):
        return  # a whole table: its fields are checked with the resolved config
    if parts[0] == "methods":
        if len(parts) != 3 or parts[1] not in methods:
            raise ConfigError(
                f"{where}: {key} = {value!r}: no such method table; the base has: {', '.join(methods) or 'none'}"
            )
        section, name = "optimizer", methods[parts[1]].get("name")
    else:
        section = parts[0]
        name = resolved.get(section, {}).get("name")
    if len(parts) != (3 if parts[0] == "methods" else 2):
        raise ConfigError(f"{where}: {key} = {value!r}: unknown field; allowed: {FIELD_HELP}")
    from ..build import check_fields

    try:
        check_fields(section, name, {parts[-1]: value}, ".".join(parts[:-1]))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None

"""Sweeps: many seeds and settings, run resumably into a SQLite results store, with statistics per group.

A sweep file (TOML)::

    base = "mod-add-p97"              # a recipe name, or a TOML config (relative to this file), or a [base] table

    [sweep]
    name = "egd-vs-sgd"               # default: the file name without .toml
    store = "sweeps/egd-vs-sgd.sqlite"   # default: sweeps/NAME.sqlite; run directories go to sweeps/NAME/RUN_ID/
    baseline = "method=sgd"           # the group that speed-ups are measured against

    [set]                             # overrides for every run (dotted fields, TOML values)
    "train.max_epochs" = 2000

    [grid]                            # the cartesian product of these lists
    method = ["egd", "sgd"]
    "optimizer.lr" = [0.5, 0.7]
    seed = [0, 1, 2]

    [[runs]]                          # optional explicit runs, each crossed with the grid
    method = "egd_rsvd64"

* Order: explicit runs in file order (one empty run without ``[[runs]]``), then grid points with the grid's
  keys in sorted order and the last key varying fastest. Overrides apply as base, [set], the run, the grid.
* ``seed = N`` sets ``train.seed``, ``train.shuffle_seed`` and the task's data seed (``task.split_seed``, or
  ``task.seed`` for tasks that have no split seed, e.g. parity) together: one seed, one independent replicate.
* Every run gets ``train.threads = 1`` and ``train.progress = "off"``.
* A run's id is the first 16 hex digits of the SHA-256 of its resolved config as canonical JSON
  (:func:`~egalitarian.sweep.spec.run_id`): editing the file keeps the ids of unchanged runs, so their
  results are reused. A group is the runs whose configs differ only in seed fields.

``egd sweep FILE`` (see :func:`run_sweep`) may be killed at any moment and rerun: finished runs are kept,
interrupted ones resume from their checkpoints. ``egd sweep status`` and ``egd results`` print the group
statistics (:mod:`egalitarian.sweep.stats`).

Ensembles (training several seeds in one process with ``torch.func.vmap``) are not implemented: on the
2-core development CPU a vmapped EGD step over 8 models cost the same as 8 single steps (batched LAPACK
loops), while separate processes scale with the cores. It should pay on GPUs; add it with a benchmark there.
"""

from .execute import execute_run, run_sweep
from .profiles import (
    cadence,
    first_at_or_above,
    is_tie,
    performance_profile,
    profile_markdown,
    profile_score,
    ratios,
    relative_resolution,
)
from .spec import PlannedRun, Sweep, canonical_json, config_hash, expand, group_id, load_sweep, run_id
from .stats import bootstrap_ci, group_stats, quartiles, ratio_ci, stats_table, write_csv, write_json
from .store import Store

__all__ = [
    "PlannedRun",
    "Store",
    "Sweep",
    "bootstrap_ci",
    "cadence",
    "canonical_json",
    "config_hash",
    "execute_run",
    "expand",
    "first_at_or_above",
    "group_id",
    "group_stats",
    "is_tie",
    "load_sweep",
    "performance_profile",
    "profile_markdown",
    "profile_score",
    "quartiles",
    "ratio_ci",
    "ratios",
    "relative_resolution",
    "run_id",
    "run_sweep",
    "stats_table",
    "write_csv",
    "write_json",
]

"""A run directory's files, read and written in one place (every write atomic, see :mod:`egalitarian.io`).

    config.json      {"config": the resolved config, "environment": package versions, platform, git commit}
    metrics.csv      long format, one :class:`MetricRow` a line: step, epoch, split, metric, value
    summary.json     the run's :class:`~egalitarian.grokking.Summary`
    checkpoint.pt    model, optimizer, RNG states, loop state and metric rows (written by the trainer)
    .egd-run.lock    held by the ``egd run`` training in the directory (:func:`lock`); .egd-run.lock.owner
                     names it (pid and host)

A leaf: the report layer reads runs through this module without importing the trainer.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from . import io as fio
from .errors import ConfigError

CONFIG = "config.json"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
RUN_FILES = (CONFIG, METRICS, SUMMARY, CHECKPOINT)
LOCK = ".egd-run.lock"
LOCK_OWNER = ".egd-run.lock.owner"

_HEADER = "step,epoch,split,metric,value"


class MetricRow(NamedTuple):
    """One measurement: ``split`` is train/test/val/diag, ``metric`` e.g. ``acc``, ``loss``, ``cond.W``."""

    step: int
    epoch: int
    split: str
    metric: str
    value: float


def write_metrics(path: str | Path, rows: Iterable[MetricRow]) -> None:
    lines = [_HEADER] + [f"{r.step},{r.epoch},{r.split},{r.metric},{r.value!r}" for r in rows]
    fio.write_text(path, "\n".join(lines) + "\n")


def read_metrics(path: str | Path) -> list[MetricRow]:
    """The rows of a ``metrics.csv`` (a run directory's, or the file itself), in training order."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    out = []
    with open(path) as f:
        next(f)
        for line in f:
            s, e, sp, m, v = line.rstrip("\n").split(",")
            out.append(MetricRow(int(s), int(e), sp, m, float(v)))
    return out


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> None:
    fio.write_json(Path(run_dir) / SUMMARY, summary)


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The run's summary, or ``{}`` when it has none yet."""
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text()) if path.exists() else {}


def write_config(run_dir: str | Path, cfg: dict[str, Any]) -> None:
    fio.write_json(Path(run_dir) / CONFIG, {"config": cfg, "environment": environment()})


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's resolved config, or ``{}`` when it has none."""
    path = Path(run_dir) / CONFIG
    return json.loads(path.read_text())["config"] if path.exists() else {}


def environment() -> dict[str, Any]:
    """Versions, platform and git commit: what a reader needs to rerun the run."""
    import numpy as np
    import torch

    from . import __version__

    commit = None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        commit = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "egalitarian": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
    }


# ------------------------------------------------------------------------------------------ the directory


def holds_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run that got anywhere: a summary (finished, stopped, interrupted) or a
    checkpoint (killed before it could write a summary)."""
    return (Path(run_dir) / SUMMARY).exists() or (Path(run_dir) / CHECKPOINT).exists()


def remove_run(run_dir: str | Path) -> None:
    """Delete the run's files (:data:`RUN_FILES` and temporary files left by interrupted atomic writes); other
    files in the directory, and the directory, stay."""
    run_dir = Path(run_dir)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
        for tmp in run_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


@contextmanager
def lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``run_dir`` (created if missing) while a run trains there.

    A second holder gets a ConfigError naming the process that holds it (``.egd-run.lock.owner``).  The lock
    is a ``filelock`` on ``.egd-run.lock``, released by the OS when the holder dies, even by kill -9."""
    run_dir = fio.make_dir(run_dir, "output directory")

    def refuse(who: str) -> ConfigError:
        return ConfigError(f"run directory {str(run_dir)!r} is in use by another egd run ({who}); wait for it to "
                           "finish or stop it, or use --out for another directory")

    with fio.exclusive(run_dir / LOCK, refuse):
        yield run_dir

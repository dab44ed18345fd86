"""TensorBoard event files: a run's metrics as scalars, written during training or exported from a store.

One scalar per :class:`~egalitarian.rundir.MetricRow`: tag ``split/metric`` (``test/acc``, ``train/loss``,
``diag/cond.layers.0.weight``), global step = the row's optimizer step.  TensorBoard is an optional extra
(``pip install 'egalitarian[tensorboard]'``); without it, asking for a writer is a ConfigError that says so.

:class:`TensorBoardLog` mirrors a run's metric rows: it opens its directory with ``purge_step=0`` (TensorBoard
then hides every event written there before) and writes the rows so far, so after a resume the event files show
exactly the run's ``metrics.csv``, however far the interrupted process had logged past its last checkpoint.
Event files are read back with ``tensorboard.backend.event_processing.event_accumulator.EventAccumulator``.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .io import make_dir
from .rundir import MetricRow

INSTALL = "pip install 'egalitarian[tensorboard]'"


def writer_class(who: str) -> Any:
    """``torch.utils.tensorboard.SummaryWriter``; without the ``tensorboard`` package a ConfigError
    ``<who>: needs the tensorboard package: pip install 'egalitarian[tensorboard]'``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises it when the tensorboard package is missing
        raise ConfigError(f"{who}: needs the tensorboard package: {INSTALL}") from None
    return SummaryWriter


def summary_writer(logdir: str | Path, who: str | None = None, **kwargs: Any) -> Any:
    """``SummaryWriter(logdir, **kwargs)``; a missing package or a directory that cannot be made is a ConfigError
    that starts with ``who`` (default ``train.tensorboard = 'LOGDIR'``)."""
    who = who or f"train.tensorboard = {str(logdir)!r}"
    cls = writer_class(who)
    make_dir(logdir, f"{who}: directory")
    return cls(str(logdir), **kwargs)


def tag(row: MetricRow) -> str:
    """``split/metric``: TensorBoard groups the tags of a split in one section."""
    return f"{row.split}/{row.metric}"


def write_rows(writer: Any, rows: Iterable[MetricRow]) -> int:
    """One scalar per row (a value of None, a NaN read back from a store, is written as NaN); returns how many."""
    n = 0
    for r in rows:
        writer.add_scalar(tag(r), float("nan") if r.value is None else float(r.value), global_step=int(r.step))
        n += 1
    return n


class TensorBoardLog(AbstractContextManager["TensorBoardLog"]):
    """A run's TensorBoard directory: opened with the rows recorded so far, then extended evaluation by
    evaluation (:meth:`write`); a context manager that closes (and so flushes) the writer."""

    def __init__(self, logdir: str | Path, rows: Iterable[MetricRow] = ()):
        self.writer = summary_writer(logdir, purge_step=0)
        write_rows(self.writer, rows)

    def write(self, rows: Iterable[MetricRow]) -> None:
        write_rows(self.writer, rows)

    def close(self) -> None:
        self.writer.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["INSTALL", "TensorBoardLog", "summary_writer", "tag", "writer_class", "write_rows"]

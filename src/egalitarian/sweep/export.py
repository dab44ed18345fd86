"""A store's finished runs exported for other tools: long-format curves (CSV) and TensorBoard runs.

    egd results FILE|STORE --curves FILE.csv    write_curves: every metric row of every finished run, one line
                                                each, with the run's id, label, group and parameters
    egd export tensorboard FILE|STORE DIR       export_tensorboard: one TensorBoard run per finished run,
                                                DIR/<label>/seed=<seed>

A finished run is one the store holds as ``done`` (with its summary and all of its metric rows).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from .. import io as fio
from .. import tracking
from .spec import format_value
from .store import Store

CURVE_COLUMNS = ("run_id", "label", "group")
"""The first columns of a curves file; then one column per parameter, then the metric row's columns."""
ROW_COLUMNS = ("step", "epoch", "split", "metric", "value")


def finished(store: Store, ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The ``done`` runs of ``store`` (or of ``ids``), in sweep order."""
    return [r for r in store.runs(ids) if r["status"] == "done"]


def parameter_names(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Every parameter of these runs, in the order of first appearance (the sweep's order of its fields)."""
    return list(dict.fromkeys(k for r in runs for k in r["params"]))


def write_curves(path: str | Path, store: Store, ids: Sequence[str] | None = None) -> tuple[int, int]:
    """The long-format curves of every finished run, atomically (:mod:`egalitarian.io`): columns
    ``run_id, label, group`` (the group id: the config hash without seeds), one per parameter (as in group labels:
    strings bare, other values as JSON; empty when a run does not set it), then ``step, epoch, split, metric,
    value`` (``value`` as in metrics.csv; NaN, which a store reads back as NULL, as ``nan``).  Rows are in sweep
    order, each run's rows in training order.  Returns (runs, rows) written."""
    runs = finished(store, ids)
    names = parameter_names(runs)
    count = 0

    def write(f: IO[bytes]) -> None:
        nonlocal count
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        out = csv.writer(text, lineterminator="\n")
        out.writerow([*CURVE_COLUMNS, *names, *ROW_COLUMNS])
        for r in runs:
            head = [r["id"], r["label"], r["group_key"],
                    *(format_value(r["params"][k]) if k in r["params"] else "" for k in names)]
            for m in store.metrics(r["id"]):
                value = "nan" if m.value is None else repr(float(m.value))
                out.writerow([*head, m.step, m.epoch, m.split, m.metric, value])
                count += 1
        text.flush()
        text.detach()  # atomic_write flushes, fsyncs and closes the file itself

    fio.atomic_write(path, write)
    return len(runs), count


_UNSAFE = re.compile(r'[\x00-\x1f<>:"/\\|?*]')


def run_dir_name(label: str, seed: Any) -> str:
    """``<label>/seed=<seed>``, the label's spaces as commas and characters no file system takes as ``_``:
    TensorBoard lists a run by its path, so the runs of a group sit together."""
    safe = _UNSAFE.sub("_", ",".join(label.split())).strip(". ") or "run"
    return f"{safe}/seed={format_value(seed)}"


def _seed(run: dict[str, Any]) -> Any:
    if "seed" in run["params"]:
        return run["params"]["seed"]
    return (run.get("config") or {}).get("train", {}).get("seed", 0)


def export_tensorboard(store: Store, out: str | Path, ids: Sequence[str] | None = None) -> tuple[int, int]:
    """Every finished run as its own TensorBoard run under ``out`` (:func:`run_dir_name`; a second run with the
    same label and seed gets ``-<first 8 characters of its id>``), tags ``split/metric``, step = optimizer step.

    Incremental: a run whose directory exists is left as it is (written by an earlier export), so exporting again
    while a sweep goes on adds the runs finished since.  Each run is written to a temporary directory and renamed
    into place, so a directory that exists is complete.  Returns (written, already there)."""
    who = "egd export tensorboard"
    tracking.writer_class(who)  # a missing package is an error before anything is made
    out = fio.make_dir(out, f"{who} DIR")
    written = kept = 0
    used: set[str] = set()
    for r in finished(store, ids):
        name = run_dir_name(r["label"], _seed(r))
        if name in used:
            name = f"{name}-{r['id'][:8]}"
        used.add(name)
        target = out / name
        if target.exists():
            kept += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
        try:
            writer = tracking.summary_writer(tmp, who)
            try:
                tracking.write_rows(writer, store.metrics(r["id"]))
            finally:
                writer.close()
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        written += 1
    return written, kept


__all__ = ["CURVE_COLUMNS", "ROW_COLUMNS", "export_tensorboard", "finished", "parameter_names", "run_dir_name",
           "write_curves"]

"""Reports: plots, tables and a self-contained HTML page for a run directory, a folder of runs or a sweep store.

    egd report PATH [--out DIR]

PATH is one run directory (``metrics.csv`` + ``summary.json``), a folder whose subfolders are run directories,
or a sweep store (``*.sqlite``).  Runs are grouped by their label (the run's name, or the sweep group), so
seeds of one setting become one curve with a band (the min–max over seeds around the median).

Outputs in DIR: ``accuracy.png``, ``loss.png``, ``diagnostics.png`` (when runs logged diagnostics),
``summary.md``, ``summary.csv`` and ``report.html`` with every image embedded as base64 (it opens from disk).
"""

from __future__ import annotations

from .core import Run, load_runs, write_report

__all__ = ["Run", "load_runs", "write_report"]

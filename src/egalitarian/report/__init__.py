"""Reports: plots, tables and a self-contained HTML page for a run directory, a folder of runs or a sweep store.

    egd report PATH [--out DIR]

PATH is one run directory (``metrics.csv`` + ``summary.json``), a folder whose subfolders are run directories,
or a sweep store (``*.sqlite``).  Runs are grouped by their label (the run's name, or the sweep group), so
seeds of one setting become one curve with a band (the min–max over seeds around the median); runs of one label
made on different devices or thread counts are separate groups (``LABEL (cpu, 2 threads)``: seconds are never
pooled across them), and store groups of different configs that share a label are told apart by the fields
they differ in.  When the runs
carry a ``setting`` parameter (``egd reproduce`` tables: p = 79/97/127, k = 2/3/4), each figure has one panel per
setting and one colour per method.

Outputs in DIR: ``accuracy.png``, ``loss.png``, ``diag_*.png`` (up to six diagnostics, when runs logged them),
``summary.md``, ``summary.csv`` and ``report.html`` with every image embedded as base64 (it opens from disk).
"""

from __future__ import annotations

from .core import LoadedRun, load_runs, markdown_table, write_report

__all__ = ["LoadedRun", "load_runs", "markdown_table", "write_report"]

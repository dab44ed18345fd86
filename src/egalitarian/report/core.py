"""Loading runs, plotting them and writing the report files (see the package docstring)."""

from __future__ import annotations

import base64
import csv
import html
import io
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import io as fio
from ..errors import ConfigError
from ..rundir import METRICS, MetricRow, read_config, read_metrics, read_summary


@dataclass
class LoadedRun:
    """A finished run as the report sees it (read from a run directory or a store), grouped by ``label``."""

    label: str
    seed: int | None
    summary: dict[str, Any]
    rows: list[MetricRow] = field(repr=False)
    params: dict[str, Any] = field(default_factory=dict)  # a sweep run's grid point (empty for run dirs)

    def series(self, split: str, metric: str) -> dict[int, float]:
        return {r.step: r.value for r in self.rows if r.split == split and r.metric == metric}


def _run_from_dir(d: Path, label: str | None = None) -> LoadedRun:
    summary = read_summary(d)
    seed = read_config(d).get("train", {}).get("seed")
    return LoadedRun(label or summary.get("name") or d.name, seed, summary, read_metrics(d))


def load_runs(path: str | Path) -> list[LoadedRun]:
    """Runs from a run directory, a folder of run directories, or a sweep store (``.sqlite``)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"report path {str(path)!r} does not exist")
    if path.is_file():
        return _runs_from_store(path)
    if (path / METRICS).exists():
        return [_run_from_dir(path)]
    runs = [_run_from_dir(d) for d in sorted(path.iterdir()) if (d / METRICS).exists()]
    if not runs:
        raise ConfigError(f"report path {str(path)!r} holds no run (no metrics.csv in it or its subfolders)")
    return runs


def _runs_from_store(path: Path) -> list[LoadedRun]:
    from ..sweep.spec import distinct_labels  # the report layer reads the sweep layer's store, never the reverse
    from ..sweep.store import Store

    with Store(path, create=False) as store:
        rows = store.runs()
        labels = distinct_labels(rows)  # groups of different configs never merge under one label
        runs = [
            LoadedRun(labels[r["group_key"]], r["config"].get("train", {}).get("seed"), r["summary"] or {},
                      store.metrics(r["id"]), r["params"] or {})
            for r in rows
            if r["status"] == "done"
        ]
    if not runs:
        raise ConfigError(f"sweep store {str(path)!r} has no finished run yet")
    return runs


def group_runs(runs: list[LoadedRun]) -> dict[str, list[LoadedRun]]:
    """The runs by label; a label whose runs ran on different devices or thread counts is one group per device and
    thread count (``LABEL (cpu, 2 threads)``), so that no seconds figure pools them."""
    from ..sweep.stats import machine

    groups: dict[str, list[LoadedRun]] = defaultdict(list)
    for r in runs:
        groups[r.label].append(r)
    out = {}
    for label, rs in groups.items():
        kinds = list(dict.fromkeys(machine(r.summary) for r in rs))
        for kind in kinds:
            out[label if len(kinds) == 1 else f"{label} ({kind})"] = [r for r in rs if machine(r.summary) == kind]
    return out


def band(runs: list[LoadedRun], split: str, metric: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps and the median, min and max over the runs that logged each step."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        for step, v in r.series(split, metric).items():
            by_step[step].append(v)
    steps = sorted(by_step)
    return (
        steps,
        [statistics.median(by_step[s]) for s in steps],
        [min(by_step[s]) for s in steps],
        [max(by_step[s]) for s in steps],
    )


def facets(groups: dict[str, list[LoadedRun]]) -> dict[str, dict[str, list[LoadedRun]]]:
    """One panel per ``setting`` (``egd reproduce`` tables: p, k, …), each group labelled without it.

    Runs without a ``setting`` parameter (run directories, plain sweeps), or with only one, give a single
    panel ``""`` holding every group.
    """
    settings = {r.params.get("setting") for runs in groups.values() for r in runs}
    if len(settings) < 2 or None in settings:
        return {"": groups}
    panels: dict[str, dict[str, list[LoadedRun]]] = defaultdict(dict)
    for label, runs in groups.items():
        setting = str(runs[0].params["setting"])
        short = " ".join(label.replace(f"setting={setting}", "").split()) or label
        panels[setting][short] = runs
    return dict(panels)


def _figure(groups: dict[str, list[LoadedRun]], panels: list[tuple[str, str, str]], ylabel: str, title: str) -> bytes:
    # a Figure on its own Agg canvas, not pyplot: the user's matplotlib backend stays as it was
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_facet = facets(groups)
    # one colour per group label (per method, across the panels of a table)
    colours = {label: f"C{i % 10}" for i, label in enumerate(dict.fromkeys(k for g in by_facet.values() for k in g))}
    n = len(by_facet)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(7.5 if n == 1 else 4.2 * cols, 4.2 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, (facet, facet_groups) in zip(axes.flat, by_facet.items(), strict=False):
        for label, runs in facet_groups.items():
            for split, metric, style in panels:
                steps, med, lo, hi = band(runs, split, metric)
                if not steps:
                    continue
                x = [s + 1 for s in steps]
                ax.plot(x, med, style, color=colours[label], label=f"{label} {split} (n={len(runs)})")
                if len(runs) > 1:
                    ax.fill_between(x, lo, hi, color=colours[label], alpha=0.15, linewidth=0)
        ax.set_xscale("log")
        ax.set_xlabel("step + 1")
        ax.set_title(f"{title}: {facet}" if facet else title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _diagnostic_metrics(runs: list[LoadedRun]) -> list[str]:
    names = sorted({r.metric for run in runs for r in run.rows if r.split == "diag"})
    return names[:6]  # the first few, one figure each would be too many


def summary_table(groups: dict[str, list[LoadedRun]]) -> list[dict[str, Any]]:
    """Per group: n, success rate, median (min–max) steps/epochs/seconds to grok, median final test accuracy;
    and which data ran when the runs say so (image tasks: ``summary["data"]``, e.g. genuine MNIST or the stand-in)."""
    out = []
    with_data = any(r.summary.get("data") for runs in groups.values() for r in runs)
    for label, runs in groups.items():
        grok = [r.summary["grok"] for r in runs if r.summary.get("grok")]

        def med(key: str, grok: list[dict] = grok) -> str:
            vals = [g[key] for g in grok]
            if not vals:
                return "-"
            fmt = (lambda v: f"{v:.1f}") if key == "seconds" else (lambda v: f"{v:g}")
            return f"{fmt(statistics.median(vals))} [{fmt(min(vals))}, {fmt(max(vals))}]"

        finals = [r.summary["final_test_acc"] for r in runs if "final_test_acc" in r.summary]
        out.append({
            "group": label,
            "n": len(runs),
            "grokked": f"{len(grok)}/{len(runs)}",
            "steps to grok": med("step"),
            "epochs to grok": med("epoch"),
            "seconds to grok": med("seconds"),
            "final test acc": f"{statistics.median(finals):.4f}" if finals else "-",
        })
        if with_data:
            out[-1]["data"] = "; ".join(sorted({str(r.summary.get("data") or "-") for r in runs}))
    return out


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (no trailing newline): ``| a | b |``, ``|---|---|``, then one line per row;
    cells as ``str(cell)``, written as given (no escaping of ``|``)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def write_report(path: str | Path, out_dir: str | Path) -> Path:
    """Write the plots, tables and ``report.html`` for the runs at ``path``; returns the HTML path."""
    runs = load_runs(path)
    groups = group_runs(runs)
    out_dir = fio.make_dir(out_dir, "report output directory")
    images = {
        "accuracy.png": _figure(groups, [("train", "acc", "--"), ("test", "acc", "-")], "accuracy", "Accuracy"),
        "loss.png": _figure(groups, [("train", "loss", "--"), ("test", "loss", "-")], "loss", "Loss"),
    }
    for name in _diagnostic_metrics(runs):
        safe = "".join(c if c.isalnum() else "_" for c in name)
        images[f"diag_{safe}.png"] = _figure(groups, [("diag", name, "-")], name, f"Diagnostic: {name}")
    for name, data in images.items():
        fio.atomic_write(out_dir / name, lambda f, data=data: f.write(data))

    table = summary_table(groups)
    cols = list(table[0])
    fio.write_text(out_dir / "summary.md", markdown_table(cols, ([row[c] for c in cols] for row in table)) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    writer.writerows(table)
    fio.write_text(out_dir / "summary.csv", buf.getvalue())

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row[c]))}</td>" for c in cols) + "</tr>" for row in table
    )
    figs = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, data in images.items()
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>egalitarian report</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em}img{max-width:100%}</style></head><body>"
        f"<h1>egalitarian report</h1><p>Source: {html.escape(str(path))}; {len(runs)} runs in "
        f"{len(groups)} groups (a group's runs share a device and thread count, so its seconds are comparable). "
        "Lines: the median over the runs that logged each step; bands: their min–max. "
        "Runs stop once they grok, so late steps show only the slower runs.</p>"
        f"<table><tr>{head}</tr>{body}</table>{figs}</body></html>\n"
    )
    fio.write_text(out_dir / "report.html", page)
    return out_dir / "report.html"

"""What the diagnostics cost (default set overhead, each diagnostic alone), and the SGD-vs-EGD diagnostics figure.

    OMP_NUM_THREADS=1 python bench/diagnostics.py overhead [--epochs 60] [--repeats 3] [--recipes mod-add-p97 ...]
    python bench/diagnostics.py figure SGD_RUN EGD_RUN [--out docs/figures/diagnostics_p97.png]

``overhead``: the recipe with EGD (paper hyperparameters) for a fixed number of epochs, no early stop,
evaluation every epoch, once without diagnostics and once with ``diagnostics = ["default"]``, interleaved
``--repeats`` times in this process.  The trainer's loop seconds (steps + evaluation + logging) are compared;
the overhead is the ratio of the medians minus 1.  The issue asks for ≤ 10%.

``per diagnostic``: milliseconds per evaluation of each diagnostic alone (``Diagnostics.compute`` after a
training step of the same recipe), median of ``--calls`` calls, next to the milliseconds of one training
epoch without diagnostics.

``figure``: from two run directories of the same recipe logged with ``spectrum`` and ``lar`` (e.g.
``egd run --config mod-add-p97 --method sgd --set 'diagnostics=["default"]'``): the condition number of W1's
raw gradient (and its median-κ), the unembedding LAR, and train/test accuracy over epochs (log x), SGD vs EGD.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import sys
import tempfile
import time

import torch

from egalitarian.build import build_run
from egalitarian.config import load_config, resolve
from egalitarian.diagnostics import DEFAULT, NAMES, Diagnostics
from egalitarian.losses import l2_penalty
from egalitarian.rundir import read_metrics
from egalitarian.train import train


def header() -> None:
    print(f"# OMP_NUM_THREADS=1 python bench/diagnostics.py {' '.join(sys.argv[1:])}")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    print(f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cpu}, {platform.machine()}; "
          f"torch {torch.__version__}; {torch.get_num_threads()} thread(s)")


def recipe_cfg(recipe: str, epochs: int, threads: int, diagnostics: list[str]) -> dict:
    cfg = dict(load_config(recipe), method="egd", diagnostics=diagnostics)
    cfg["train"] = {**cfg["train"], "max_epochs": epochs, "stop_after_grok": False, "threads": threads,
                    "progress": "off", "checkpoint_seconds": 1e9}
    return cfg


def overhead(args: argparse.Namespace) -> None:
    print(f"\nDefault set = {', '.join(DEFAULT)}; EGD, {args.epochs} epochs, evaluation every epoch, "
          f"{args.repeats} interleaved repeats, median loop seconds")
    print("\n| recipe | diagnostics | loop seconds (median) | per epoch ms | overhead |")
    print("|---|---|---|---|---|")
    for recipe in args.recipes:
        times: dict[str, list[float]] = {"none": [], "default": []}
        for _ in range(args.repeats):
            for label, diags in (("none", []), ("default", ["default"])):
                with tempfile.TemporaryDirectory() as d:
                    s = train(recipe_cfg(recipe, args.epochs, args.threads, diags), d)
                times[label].append(s["seconds"])
        base = statistics.median(times["none"])
        for label in ("none", "default"):
            t = statistics.median(times[label])
            over = "-" if label == "none" else f"{100 * (t / base - 1):+.1f}%"
            print(f"| {recipe} | {label} | {t:.2f} | {1e3 * t / args.epochs:.1f} | {over} |")


def per_diagnostic(args: argparse.Namespace) -> None:
    print(f"\nEach diagnostic alone: ms per evaluation (median of {args.calls} calls), after one EGD step")
    print("\n| recipe | epoch without diagnostics, ms | " + " | ".join(NAMES) + " | default |")
    print("|---|---|" + "---|" * (len(NAMES) + 1))
    for recipe in args.recipes:
        run = build_run(resolve(recipe_cfg(recipe, 1, args.threads, [])))
        data, model, loss_fn, opt = run.data, run.model, run.loss_fn, run.optimizer
        xb, yb = data.x_train[:512], data.y_train[:512]
        opt.zero_grad()
        (loss_fn(model(xb), yb) + l2_penalty(run.decayed, run.l2)).backward()
        opt.step()
        with tempfile.TemporaryDirectory() as d:
            epoch_ms = 1e3 * train(recipe_cfg(recipe, 10, args.threads, []), d)["seconds"] / 10
        cells = []
        for names in [[n] for n in NAMES] + [["default"]]:
            diag = Diagnostics(names, model, data, loss_fn)
            diag.compute(opt)
            ts = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                diag.compute(opt)
                ts.append(time.perf_counter() - t0)
            cells.append(f"{1e3 * statistics.median(ts):.2f}")
        print(f"| {recipe} | {epoch_ms:.1f} | " + " | ".join(cells) + " |")


def _load(run: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in read_metrics(run):
        out.setdefault(f"{r.split}_{r.metric}", []).append((r.epoch, r.value))
    return out


def _rolling_median(ys: list[float], k: int = 9) -> list[float]:
    h = k // 2
    return [statistics.median(ys[max(0, i - h) : i + h + 1]) for i in range(len(ys))]


def figure(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer = args.layer
    runs = [("SGD", args.sgd_run, "tab:red"), ("EGD", args.egd_run, "tab:blue")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    if args.no_wd_run:  # reference: the same SGD run without the L2 term, panel (a) only
        pts = [(e, v) for e, v in _load(args.no_wd_run).get(f"diag_cond.{args.layer}", []) if e > 0]
        xs, ys = zip(*pts, strict=True)
        axes[0].plot(xs, _rolling_median(list(ys)), color="grey", lw=1.2, label="SGD without weight decay: κ")
    for label, run, color in runs:
        m = _load(run)
        grok = next((e for e, v in m.get("test_acc", []) if v >= 0.95), None)
        for key, style, name in ((f"diag_cond.{layer}", "-", "κ = s_max/s_min"),
                                 (f"diag_cond_med.{layer}", "--", "median-κ = s_1/s_⌈r/2⌉")):
            pts = [(e, v) for e, v in m.get(key, []) if e > 0 and math.isfinite(v)]
            if pts:
                xs, ys = zip(*pts, strict=True)
                if style == "-":
                    axes[0].plot(xs, ys, color=color, alpha=0.25, lw=0.6)
                axes[0].plot(xs, _rolling_median(list(ys)), style, color=color, lw=1.6, label=f"{label}: {name}")
        pts = [(e, v) for e, v in m.get("diag_lar", []) if e > 0]
        if pts:
            xs, ys = zip(*pts, strict=True)
            axes[1].plot(xs, ys, color=color, lw=1.6, label=f"{label}: LAR (unembedding)")
        for key, style, name in (("train_acc", "--", "train"), ("test_acc", "-", "test")):
            pts = [(e, v) for e, v in m.get(key, []) if e > 0]
            if pts:
                xs, ys = zip(*pts, strict=True)
                axes[2].plot(xs, ys, style, color=color, lw=1.6, label=f"{label} {name}")
        for ax in axes:
            if grok is not None:
                ax.axvline(grok, color=color, ls=":", lw=1)
    axes[0].set(yscale="log", ylim=(2, 3e4), ylabel="condition number of W1's raw gradient",
                title="(a) raw-gradient conditioning of W1 (last batch)")
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[1].set(ylabel="LAR = log_n(‖XWᵀ‖_rms / ‖W‖_rms‖X‖_rms)", title="(b) unembedding log-alignment ratio")
    axes[2].set(ylabel="accuracy", title="(c) accuracy (dotted: 95% test reached)")
    for ax in axes:
        ax.set(xscale="log", xlabel="epoch")
        ax.grid(alpha=0.3, which="both", lw=0.4)
    axes[0].legend(fontsize=7, ncol=2, loc="upper left")
    axes[1].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.suptitle(args.title, fontsize=11)
    fig.tight_layout()
    fig.savefig(args.out, dpi=130)
    print(f"wrote {args.out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    fig = sub.add_parser("figure", help="SGD vs EGD: gradient condition number, LAR, accuracy over epochs")
    fig.add_argument("sgd_run")
    fig.add_argument("egd_run")
    fig.add_argument("--layer", default="layers.0.weight")
    fig.add_argument("--no-wd-run", help="optional SGD run without weight decay, drawn in panel (a) for reference")
    fig.add_argument("--out", default="docs/figures/diagnostics_p97.png")
    fig.add_argument("--title", default="mod-add p=97, the paper's MLP (194-512-97), SGD vs EGD, lr 0.7, batch 512")
    ov = sub.add_parser("overhead", help="default-set overhead and per-diagnostic cost")
    ov.add_argument("--recipes", nargs="+", default=["mod-add-p97", "mod-add-p127"])
    ov.add_argument("--epochs", type=int, default=60)
    ov.add_argument("--repeats", type=int, default=3)
    ov.add_argument("--calls", type=int, default=15)
    ov.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.what == "figure":
        figure(args)
        return 0
    torch.set_num_threads(args.threads)
    header()
    overhead(args)
    per_diagnostic(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

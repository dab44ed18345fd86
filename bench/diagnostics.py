"""What the diagnostics cost: the default set's overhead on a training loop, and each diagnostic alone.

    OMP_NUM_THREADS=1 python bench/diagnostics.py [--epochs 60] [--repeats 3] [--recipes mod-add-p97 ...]

Overhead: the recipe with EGD (paper hyperparameters) for a fixed number of epochs, no early stop,
evaluation every epoch, once without diagnostics and once with ``diagnostics = ["default"]``, interleaved
``--repeats`` times in this process.  The trainer's loop seconds (steps + evaluation + logging) are compared;
the overhead is the ratio of the medians minus 1.  The issue asks for ≤ 10%.

Per diagnostic: milliseconds per evaluation of each diagnostic alone (``Diagnostics.compute`` after a
training step of the same recipe), median of ``--calls`` calls, next to the milliseconds of one training
epoch without diagnostics.
"""

from __future__ import annotations

import argparse
import datetime
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["mod-add-p97", "mod-add-p127"])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header()
    overhead(args)
    per_diagnostic(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

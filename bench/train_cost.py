"""What a training run costs: evaluation overhead, and wall-clock seconds to grok.

    python bench/train_cost.py overhead [--epochs 60] [--threads 1]
    python bench/train_cost.py grok [--seeds 3] [--threads 2] [--recipe mod-add-p127] [--encoding onehot|index]

``overhead``: the paper's MLP recipe (mod-add p=127, EGD) for a fixed number of epochs, no early stop.  The
trainer times the bare steps (forward + backward + optimizer) and the whole loop (steps + evaluation +
logging) in the same run; their ratio is the overhead of the default evaluation cadence (every epoch,
test accuracy on the full test split, train accuracy from the epoch's batches), and of ``train_eval="full"``.

``grok``: seconds from the start of training until test accuracy first reaches 95% (EGD, paper
hyperparameters), per seed, and the median.  Run it alone on the machine: it uses ``--threads`` cores.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile

import torch

from egalitarian.config import load_config
from egalitarian.train import train


def header() -> None:
    print(f"# bench/train_cost.py {' '.join(sys.argv[1:])}")
    print(f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}; "
          f"torch {torch.__version__}")


def overhead(args: argparse.Namespace) -> None:
    print("\n| train_eval | epochs | steps | step seconds | loop seconds | loop / steps |")
    print("|---|---|---|---|---|---|")
    for mode in ("running", "full"):
        cfg = dict(load_config(args.recipe), method="egd")
        cfg["train"] = {**cfg["train"], "max_epochs": args.epochs, "stop_after_grok": False, "train_eval": mode,
                        "threads": args.threads, "progress": "off"}
        with tempfile.TemporaryDirectory() as d:
            s = train(cfg, d)
        steps_s = s["seconds_per_step"] * s["steps"]
        print(f"| {mode} | {s['epochs']} | {s['steps']} | {steps_s:.2f} | {s['seconds']:.2f} | "
              f"{s['seconds'] / steps_s:.3f}x |")


def grok(args: argparse.Namespace) -> None:
    print(f"\n{args.recipe}, method egd, {args.threads} threads, encoding {args.encoding or 'as in the recipe'}")
    print("\n| seed | epochs to 95% | steps | seconds to 95% | ms/step |")
    print("|---|---|---|---|---|")
    secs = []
    for seed in range(args.seeds):
        cfg = dict(load_config(args.recipe), method="egd")
        cfg["task"] = {**cfg["task"], "split_seed": seed}
        if args.encoding:
            cfg["task"]["encoding"] = args.encoding
        cfg["train"] = {**cfg["train"], "seed": seed, "shuffle_seed": seed, "threads": args.threads,
                        "progress": "off"}
        with tempfile.TemporaryDirectory() as d:
            s = train(cfg, d)
        g = s["grok"]
        if g is None:
            print(f"| {seed} | not within budget | | | |")
            continue
        secs.append(g["seconds"])
        print(f"| {seed} | {g['epoch']} | {g['step']} | {g['seconds']:.2f} | {1e3 * s['seconds_per_step']:.2f} |")
    if secs:
        print(f"\nmedian seconds to 95%: {statistics.median(secs):.2f} (paper, T4 GPU: 11.4 s for mod-add p=127)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["overhead", "grok"])
    ap.add_argument("--recipe", default="mod-add-p127")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--encoding", choices=["onehot", "index"], help="override the recipe's task.encoding")
    args = ap.parse_args()
    header()
    overhead(args) if args.what == "overhead" else grok(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training-loss spikes and held-out accuracy falls per run of a table's store (the "extremely unstable" check).

    python experiments/17-table7-warmup/loss_spikes.py reproduce/table7

For every finished or interrupted run directory under the folder: the steps it ran, its status, the number of
evaluations whose (running) training loss was at least 2× the lowest training loss so far (after step 100) and
the largest such ratio, the largest fall of held-out accuracy between two consecutive evaluations, and the final
held-out accuracy.  Reads ``summary.json``, ``config.json`` and ``metrics.csv`` only.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from egalitarian.rundir import read_config, read_metrics, read_summary


def measure(run: Path) -> dict | None:
    summary = read_summary(run)
    if not summary:
        return None
    cfg = read_config(run)
    rows = read_metrics(run)
    loss = [(r.step, r.value) for r in rows if r.split == "train" and r.metric == "loss"]
    acc = [r.value for r in rows if r.split == "test" and r.metric == "acc"]
    spikes, worst, low = 0, 1.0, float("inf")
    for step, value in loss:
        if step > 100 and value > 2 * low:
            spikes, worst = spikes + 1, max(worst, value / low)
        low = min(low, value)
    return {
        "method": summary["name"], "seed": cfg["train"]["seed"], "steps": summary["steps"],
        "status": summary["status"], "spikes": spikes, "worst": worst,
        "fall": max((a - b for a, b in zip(acc, acc[1:], strict=False)), default=0.0),
        "final": acc[-1] if acc else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="a store's run folder, e.g. reproduce/table7")
    args = ap.parse_args()
    by_method = collections.defaultdict(list)
    for run in sorted(Path(args.folder).iterdir()):
        if run.is_dir() and (m := measure(run)):
            by_method[m["method"]].append(m)
    print("| method | seed | steps | status | loss-spike evaluations (largest ratio) | largest accuracy fall "
          "| final acc |")
    print("|---|---|---|---|---|---|---|")
    for method, ms in by_method.items():
        for m in sorted(ms, key=lambda m: m["seed"]):
            print(f"| {method} | {m['seed']} | {m['steps']} | {m['status']} | {m['spikes']} (×{m['worst']:.3g}) "
                  f"| {m['fall']:.3f} | {m['final']:.3f} |")


if __name__ == "__main__":
    main()

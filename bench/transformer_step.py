"""One training step of the two transformer recipes, every position computed vs the last block at the last only.

    python bench/transformer_step.py [--repeats 30] [--threads 1]

``model.last_only`` computes the last block's attention output, MLP and head at the answer position only: the
same function and gradients (tests/test_models.py), fewer operations.  For each recipe (``nanda-add-p113``, full
batch of 3830 equations, AdamW; ``transformer-modmult-p97``, batch 512, EGD + Adam) this builds the recipe's
model, data and optimizer with ``last_only`` off and on (the same init), and times the trainer's own
``train_step`` (forward, loss, backward, optimizer step) on the same batch: the median over ``--repeats``
steps after 3 warm-up steps, the two variants interleaved.  Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import torch

from egalitarian.build import build_run
from egalitarian.config import load_config, resolve
from egalitarian.methods import OPTIMIZERS
from egalitarian.train import train_step

RECIPES = {"nanda-add-p113": ("adamw", 0), "transformer-modmult-p97": ("egd_adam", 512)}


def stepper(recipe: str, method: str, batch: int, last_only: bool):
    cfg = load_config(recipe)
    cfg["model"]["last_only"] = last_only
    torch.manual_seed(0)
    run = build_run(resolve(dict(cfg, method=method), OPTIMIZERS))
    x, y = run.data.x_train, run.data.y_train
    if batch:
        x, y = x[:batch], y[:batch]

    def step() -> float:
        t0 = time.perf_counter()
        train_step(run, x, y)
        return time.perf_counter() - t0

    return step, len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# python bench/transformer_step.py --repeats {args.repeats} --threads {args.threads}")
    cpu = platform.processor() or platform.machine()
    print(f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cpu}; torch {torch.__version__}; "
          f"{torch.get_num_threads()} thread(s)")
    print("\n| recipe (method, batch) | every position, ms | last_only, ms | speed-up |\n|---|---|---|---|")
    for recipe, (method, batch) in RECIPES.items():
        steps = {flag: stepper(recipe, method, batch, flag) for flag in (False, True)}
        times: dict[bool, list[float]] = {False: [], True: []}
        for i in range(3 + args.repeats):
            for flag, (step, _) in steps.items():
                t = step()
                if i >= 3:
                    times[flag].append(t)
        full, fast = (statistics.median(times[flag]) for flag in (False, True))
        print(f"| {recipe} ({method}, {steps[False][1]}) | {1e3 * full:.1f} | {1e3 * fast:.1f} | "
              f"{full / fast:.2f}x |")


if __name__ == "__main__":
    main()

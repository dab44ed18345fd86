"""One training step of the byte-level GPT (recipe ``stdlib-gpt``): AdamW, Muon and EGD + AdamW per backend.

    OMP_NUM_THREADS=1 python bench/gpt_step.py [--repeats 50] [--backends auto,polar-express] [--threads 1]

For each method this builds the recipe's model (the same init), data and optimizer (``adamw``; ``muon``, torch's
Muon with its Newton-Schulz in fp32 on the block matrices; ``egd``, EGD on the block matrices and AdamW on the rest,
once per ``--backends`` entry) and times one step on the same batch of 16 windows: forward, loss and backward, then
the optimizer step, the methods interleaved; the median over ``--repeats`` steps after 10 warm-up steps.  Timings
only: the comparison of the methods' losses is experiments/16-beyond-grokking.  Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable

import torch

from egalitarian.build import build_run
from egalitarian.config import load_config, resolve
from egalitarian.methods import OPTIMIZERS

Step = Callable[[], tuple[float, float]]


def stepper(method: str, backend: str | None = None) -> Step:
    """One step of the recipe's GPT under ``method`` (a table of the recipe): (step seconds, optimizer seconds)."""
    cfg = load_config("stdlib-gpt")
    cfg["method"] = method
    if backend is not None:
        cfg["methods"][method]["backend"] = backend
    torch.manual_seed(0)
    run = build_run(resolve(cfg, OPTIMIZERS))
    idx = torch.randint(0, run.data.n_train, (16,), generator=torch.Generator().manual_seed(0))
    x, y = run.data.x_train[idx], run.data.y_train[idx]

    def step() -> tuple[float, float]:
        t0 = time.perf_counter()
        loss = run.loss_fn(run.model(x), y)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        run.optimizer.step()
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--backends", default="auto", help="EGD backends, comma-separated (e.g. auto,polar-express)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steppers = {"AdamW": stepper("adamw"), "Muon (fp32 NS5)": stepper("muon")}
    for b in args.backends.split(","):
        steppers[f"EGD + AdamW (`{b}`)"] = stepper("egd", b)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steppers}
    for i in range(10 + args.repeats):
        for name, step in steppers.items():
            t = step()
            if i >= 10:
                times[name].append(t)
    cpu = platform.processor() or platform.machine()
    print(f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cpu}; torch {torch.__version__}; "
          f"{torch.get_num_threads()} thread(s); median of {args.repeats} steps\n")
    base = statistics.median(t for t, _ in times["AdamW"])
    print("| method | step ms | of which the optimizer | × AdamW's step |\n|---|---|---|---|")
    for name, ts in times.items():
        total, opt = statistics.median(t for t, _ in ts), statistics.median(o for _, o in ts)
        print(f"| {name} | {1000 * total:.1f} | {1000 * opt:.1f} | {total / base:.2f} |")


if __name__ == "__main__":
    main()

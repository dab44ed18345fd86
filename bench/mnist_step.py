"""One optimizer step of the MNIST-1k MLP (784-200-200-10, batch 200): EGD+AdamW (three whitened matrices) vs AdamW.

    OMP_NUM_THREADS=1 python bench/mnist_step.py [--repeats 200] [--threads 1]

Forward, MSE loss, backward and the optimizer step, on random inputs shaped like the recipe's batches; median
milliseconds over ``--repeats`` steps after 20 warm-up steps, the methods interleaved.  The EGD paper reports
34.7 ms (EGD) vs 15.3 ms (AdamW) on a T4 GPU.  Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import torch

from egalitarian.config import load_config, resolve, section_kwargs
from egalitarian.losses import LOSSES
from egalitarian.methods import build_optimizer
from egalitarian.models import MLP


def stepper(method: str):
    """The recipe's model and method ``method`` (its [methods] table), built without loading MNIST."""
    cfg = resolve(dict(load_config("mnist-1k-mlp"), method=method))
    torch.manual_seed(0)
    model = MLP(784, [200, 200], 10, activation="relu", init="torch", init_scale=8.0)
    opt = build_optimizer(list(model.named_parameters()), cfg["optimizer"]["name"],
                          **section_kwargs(cfg, "optimizer"))
    loss_fn = LOSSES[cfg["loss"]["name"]]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(200, 784, generator=gen)
    y = torch.randint(0, 10, (200,), generator=gen)

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# python bench/mnist_step.py --repeats {args.repeats} --threads {args.threads}")
    cpu = platform.processor() or platform.machine()
    print(f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cpu}; torch {torch.__version__}; "
          f"{torch.get_num_threads()} thread(s)")
    steps = {m: stepper(m) for m in ("adamw", "egd_adamw", "egd_rsvd16")}
    times: dict[str, list[float]] = {m: [] for m in steps}
    for _ in range(20):
        for s in steps.values():
            s()
    for _ in range(args.repeats):
        for m, s in steps.items():
            times[m].append(s())
    base = statistics.median(times["adamw"])
    print("\n| step (784-200-200-10, batch 200) | ms (median) | vs AdamW |\n|---|---|---|")
    for m, ts in times.items():
        t = statistics.median(ts)
        print(f"| {m} | {1e3 * t:.2f} | {t / base:.2f}x |")


if __name__ == "__main__":
    main()

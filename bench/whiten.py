"""Whitening backends: time and accuracy, and the cost of an EGD step relative to an SGD step.

    OMP_NUM_THREADS=1 python bench/whiten.py [--repeats 15] [--threads 1]

Part 1: backend × shape (254×512, 512×127, 512×512, 128×512, 50×100; single and batch of 16): median
wall-clock ms over ``--repeats`` calls, and the relative Frobenius error against the fp64 SVD polar factor
(cutoff max(m, n)·ε32·s_max) on a real-like matrix: Gaussian with a decaying spectrum σ_i = 0.97^i and
rank deficiency (the last 2 directions zero), in fp32.

Part 2: one training step of the EGD paper's MLP 254 → 512 ReLU → 127 (batch 512, cross-entropy), medians of
interleaved repeats, as ratios to the SGD step measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

from egalitarian import EGD
from egalitarian.linalg import polar
from egalitarian.models import MLP

SHAPES = [(254, 512), (512, 127), (512, 512), (128, 512), (50, 100)]
BACKENDS = {
    "svd (fp64)": dict(backend="svd"),
    "svd fp32": dict(backend="svd", dtype=torch.float32),
    "gram-eigh (fp64)": dict(backend="gram-eigh"),
    "gram-eigh fp32": dict(backend="gram-eigh", dtype=torch.float32),
    "newton-schulz polar": dict(backend="newton-schulz"),
    "NS5 muon bf16": dict(backend="newton-schulz", ns_coefficients="muon"),
    "rsvd r=64": dict(backend="rsvd", rank=64),
}


def test_matrix(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    *batch, m, n = shape
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U = torch.linalg.qr(torch.randn(*batch, m, k, dtype=torch.float64, generator=g)).Q
    V = torch.linalg.qr(torch.randn(*batch, n, k, dtype=torch.float64, generator=g)).Q
    s = 0.97 ** torch.arange(k, dtype=torch.float64)
    s[-2:] = 0
    return ((U * s) @ V.mT).float()


def reference(G: torch.Tensor) -> torch.Tensor:
    U, s, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    keep = (s > max(G.shape[-2:]) * torch.finfo(torch.float32).eps * s[..., :1]).double()
    return (U * keep.unsqueeze(-2)) @ Vh


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (torch.linalg.matrix_norm(a.double() - b) / torch.linalg.matrix_norm(b)).max().item()


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def part1(repeats: int) -> None:
    print("\n## Whitening backends: median ms per call (relative error vs fp64 SVD)\n")
    cols = [f"{m}x{n}" + (" x16" if b else "") for m, n in SHAPES for b in (False, True)]
    print("| backend | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    mats = {(m, n, b): test_matrix((16, m, n) if b else (m, n)) for m, n in SHAPES for b in (False, True)}
    refs = {k: reference(v) for k, v in mats.items()}
    for name, kw in BACKENDS.items():
        cells = []
        for m, n in SHAPES:
            for b in (False, True):
                G = mats[(m, n, b)]
                gen = torch.Generator().manual_seed(0)
                kwargs = dict(kw, generator=gen) if kw["backend"] == "rsvd" else kw
                ms = median_ms(
                    lambda G=G, kwargs=kwargs: polar(G, **kwargs), repeats if not b else max(3, repeats // 3)
                )
                err = rel_err(polar(G, **kwargs), refs[(m, n, b)])
                cells.append(f"{ms:.2f} ({err:.0e})")
        print(f"| {name} | " + " | ".join(cells) + " |")


def part2(repeats: int) -> None:
    torch.manual_seed(0)
    p = 127
    idx = torch.randint(0, p, (512, 2)) + torch.tensor([0, p])  # [a, p + b]: the recipes' "index" encoding
    x = torch.zeros(512, 2 * p).scatter_(1, idx, 1.0)  # the same batch as dense one-hot rows
    y = torch.randint(0, p, (512,))

    def make():
        torch.manual_seed(0)
        return MLP(2 * p, 512, p, out_bias=False)

    def stepper(opt_fn, inputs):
        model = make()
        opt = opt_fn(model)

        def step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(inputs), y).backward()
            opt.step()

        return step

    def egd_w1(backend):
        def fn(m):
            first, last = m.layers
            return EGD(
                [{"params": [first.weight]}, {"params": [first.bias, last.weight], "whiten": False}],
                lr=0.1,
                backend=backend,
            )

        return fn

    def sgd(m):
        return torch.optim.SGD(m.parameters(), lr=0.1)

    variants = {
        "SGD": stepper(sgd, x),
        "EGD auto (gram-eigh fp64), W1 only (paper)": stepper(egd_w1("auto"), x),
        "EGD auto (gram-eigh fp64), W1 and W2": stepper(lambda m: EGD(m.parameters(), lr=0.1), x),
        "EGD svd (fp64), W1 only": stepper(egd_w1("svd"), x),
        "EGD rsvd r=64, W1 only": stepper(egd_w1("rsvd"), x),
        "EGD newton-schulz polar, W1 only": stepper(egd_w1("newton-schulz"), x),
        "SGD, index input": stepper(sgd, idx),
        "EGD auto, W1 only, index input": stepper(egd_w1("auto"), idx),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for f in variants.values():
        f()
    for _ in range(repeats):  # interleaved, so slow drifts of the shared machine hit every variant alike
        for k, f in variants.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["SGD"])
    base_index = statistics.median(times["SGD, index input"])
    print(f"\n## One training step, MLP 254 -> 512 ReLU -> 127, batch 512 (median of {repeats}, interleaved)\n")
    print("Dense rows: float one-hot input. Index rows: the same batch as [a, p + b] indices (the recipes' input).\n")
    print("| step | median ms | ratio to SGD (same input) |")
    print("|---|---|---|")
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"| {k} | {1e3 * med:.2f} | {med / (base_index if 'index' in k else base):.2f}x |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--part", choices=["1", "2", "all"], default="all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# bench/whiten.py  {' '.join(sys.argv[1:])}")
    print(
        f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; torch {torch.__version__}; threads {torch.get_num_threads()}"
    )
    if args.part in ("1", "all"):
        part1(args.repeats)
    if args.part in ("2", "all"):
        part2(args.repeats * 4)
    return 0


if __name__ == "__main__":
    sys.exit(main())

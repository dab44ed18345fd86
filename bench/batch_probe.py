"""The batched whitening on CPU: what a batch buys, how far it is from one call per matrix, and why no rule can
promise bits (issue #26; experiments/23-cpu-portability; the decision is ``egalitarian.transforms.batched``).

    OMP_NUM_THREADS=1 python bench/batch_probe.py [--repeats 9] [--part speed|rounding|probe|all]
    MKL_CBWR=AVX2 OMP_NUM_THREADS=1 python bench/batch_probe.py --part rounding     # another MKL code path

Part ``speed``: median wall ms of one batched ``polar`` call vs one call per matrix (1 thread, fp32, interleaved):
where batching pays on CPU.
Part ``rounding``: the largest |batched − one by one| per dtype and backend on well-conditioned matrices (Gaussian,
and low rank with a clear gap), 1 and 2 threads: what the tests' tolerance must cover.
Part ``step``: one ``EGD.step()`` (momentum 0.9, ``auto``) on the whitened matrices of two models, with today's rule
(batch on CPU where the smaller side ≤ 64) and with the batch always, interleaved: the byte-level GPT of
experiments/16-beyond-grokking (8 of 128 × 128, 2 of 512 × 128, 2 of 128 × 512) and a 4-layer transformer of width 32
(per layer four 32 × 32, one 128 × 32, one 32 × 128).
Part ``probe``: the design that was rejected, measured: for each key (backend × dtype × shape × count × threads),
a probe compares one batched and the single calls bit for bit on seeded matrices (one rank-deficient); then four
kinds of other matrices (Gaussian, low rank, nearly equal rows at 1e-6 scale, a graded spectrum) are checked.
A misprediction (the probe said bitwise, another matrix differs) means bitwise equality depends on the values.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch

from egalitarian import EGD
from egalitarian import transforms as T
from egalitarian.linalg import polar

BACKENDS = ["svd", "gram-eigh", "newton-schulz", "polar-express"]
DTYPES = [torch.float32, torch.float64]
SHAPES = [(3, 5), (7, 7), (8, 8), (10, 10), (16, 24), (24, 16), (3, 4, 12), (32, 64), (64, 64), (97, 97),
          (97, 128), (128, 97), (113, 113), (128, 128), (128, 512), (254, 512)]


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _median_ms(f, repeats: int) -> float:
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def speed(repeats: int) -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    print("| shape | count | backend | one by one (ms) | batched (ms) | speed-up |")
    print("|---|---|---|---|---|---|")
    for shape, count in [((16, 16), 8), ((16, 64), 4), ((64, 64), 8), ((64, 256), 4), ((97, 128), 2),
                         ((128, 128), 8), ((384, 384), 8), ((512, 512), 4)]:
        for backend in ("gram-eigh", "polar-express"):
            G = torch.randn(count, *shape, generator=gen)
            loop = _median_ms(lambda G=G, b=backend: [polar(G[i], b) for i in range(G.shape[0])], repeats)
            batch = _median_ms(lambda G=G, b=backend: polar(G, b), repeats)
            print(f"| {shape[0]} × {shape[1]} | {count} | {backend} | {loop:.2f} | {batch:.2f} | {loop / batch:.2f}× |")


def _data(count: int, shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator):
    *lead, m, n = shape
    f64 = torch.float64
    yield torch.randn(count, *shape, generator=gen, dtype=f64).to(dtype)
    r = max(1, min(m, n) // 3)
    yield (torch.randn(count, *lead, m, r, generator=gen, dtype=f64)
           @ torch.randn(count, *lead, r, n, generator=gen, dtype=f64)).to(dtype)
    x = 1e-6 * torch.randn(count, *shape, generator=gen, dtype=f64)
    x[..., 0, :] = x[..., 1, :]
    yield x.to(dtype)
    yield (torch.randn(count, *shape, generator=gen, dtype=f64) * torch.logspace(0, -8, n, dtype=f64)).to(dtype)


def _bitwise_probe(shape: tuple[int, ...], dtype: torch.dtype, count: int, backend: str) -> bool:
    """The rejected design: one batched vs ``count`` single calls on seeded matrices (one rank-deficient)."""
    gen = torch.Generator().manual_seed(0)
    *lead, m, n = shape
    G = torch.randn((count, *shape), generator=gen, dtype=torch.float64)
    r = max(1, min(m, n) // 2)
    G[1] = torch.randn((*lead, m, r), generator=gen, dtype=torch.float64) @ torch.randn(
        (*lead, r, n), generator=gen, dtype=torch.float64)
    G = G.to(dtype)
    out = polar(G, backend)
    return all(torch.equal(out[i], polar(G[i].clone(), backend)) for i in range(count))


def _keys(seed: int):
    """(threads, backend, dtype, shape, generator) over 1 and 2 threads and every backend, dtype and shape; one
    seeded generator per thread count, drawn in this order."""
    for threads in (1, 2):
        torch.set_num_threads(threads)
        gen = torch.Generator().manual_seed(seed)
        for backend in BACKENDS:
            for dtype in DTYPES:
                for shape in SHAPES:
                    yield threads, backend, dtype, shape, gen
    torch.set_num_threads(1)


def _gaps(G: torch.Tensor, backend: str) -> list[float]:
    """max |batched − one by one| for each matrix of the batch ``G``."""
    out = polar(G, backend)
    return [(out[i] - polar(G[i].clone(), backend)).abs().max().item() for i in range(G.shape[0])]


def probe() -> None:
    checks, claims, keys, wrong = 0, 0, 0, []
    for threads, backend, dtype, shape, gen in _keys(123):
        for count in (2, 3, 5):
            exact = _bitwise_probe(shape, dtype, count, backend)
            keys += 1
            claims += exact
            for G in _data(count, shape, dtype, gen):
                gaps = _gaps(G, backend)
                checks += len(gaps)
                if exact and max(gaps) > 0:
                    wrong.append((threads, backend, _name(dtype), shape, count))
    print(f"probe: {keys} keys, {claims} probed bitwise; {checks} other matrices checked; "
          f"mispredictions (probed bitwise, another matrix differs): {len(set(wrong))} keys")
    for w in sorted(set(wrong)):
        print(f"    threads={w[0]} {w[1]} {w[2]} {w[3]} count={w[4]}")


def rounding() -> None:
    largest: dict[tuple[str, str, str], float] = {}
    for _, backend, dtype, shape, gen in _keys(1):
        for kind, G in zip(("Gaussian", "low rank"), list(_data(3, shape, dtype, gen))[:2], strict=True):
            key = (backend, _name(dtype), kind)
            largest[key] = max(largest.get(key, 0.0), *_gaps(G, backend))
    print("largest |batched − one by one|, 1 and 2 threads (low rank: rank min(m, n)/3, so in fp32 the null")
    print("directions sit at fp32 rounding, inside the soft cutoff of newton-schulz and polar-express):")
    print("| backend | fp32 Gaussian | fp32 low rank | fp64 Gaussian | fp64 low rank |\n|---|---|---|---|---|")
    for backend in BACKENDS:
        cells = [f"{largest[(backend, d, k)]:.1e}" for d in ("float32", "float64") for k in ("Gaussian", "low rank")]
        print(f"| {backend} | " + " | ".join(cells) + " |")


def step(repeats: int) -> None:
    torch.set_num_threads(1)
    models = {"byte GPT (§15)": [(128, 128)] * 8 + [(512, 128)] * 2 + [(128, 512)] * 2,
              "transformer d = 32": ([(32, 32)] * 4 + [(128, 32), (32, 128)]) * 4}
    rules = {"batch where side ≤ 64 (today)": T.CPU_BATCH_MAX_SIDE, "batch always": 1 << 30}
    print("| matrices | rule | EGD.step() ms (median) |\n|---|---|---|")
    for model, shapes in models.items():
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt = EGD(params, lr=1e-3, momentum=0.9)
        times: dict[str, list[float]] = {r: [] for r in rules}
        saved = T.CPU_BATCH_MAX_SIDE
        try:
            for i in range(3 + repeats):
                for rule, side in rules.items():
                    T.CPU_BATCH_MAX_SIDE = side
                    t = time.perf_counter()
                    opt.step()
                    if i >= 3:
                        times[rule].append(time.perf_counter() - t)
        finally:
            T.CPU_BATCH_MAX_SIDE = saved
        for rule, ts in times.items():
            print(f"| {model} | {rule} | {1e3 * statistics.median(ts):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--part", choices=["speed", "step", "rounding", "probe", "all"], default="all")
    args = ap.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cpu}, {os.cpu_count()} cores; "
          f"torch {torch.__version__}; MKL_CBWR={os.environ.get('MKL_CBWR', '(unset)')}\n")
    if args.part in ("speed", "all"):
        speed(args.repeats)
    if args.part in ("step", "all"):
        step(args.repeats)
    if args.part in ("rounding", "all"):
        rounding()
    if args.part in ("probe", "all"):
        probe()


if __name__ == "__main__":
    main()

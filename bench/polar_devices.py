"""Polar-factor backends per device: time and accuracy, for choosing ``backend="auto"`` (issue #17, item 4).

    OMP_NUM_THREADS=1 python bench/polar_devices.py --device cpu|cuda [--quick] [--repeats 7] [--threads 1]

One table: backend (compute dtype) × shape × batch.  Each cell is the median wall-clock ms per ``polar()`` call
over ``--repeats`` calls after one warm-up (on CUDA the clock is read after ``torch.cuda.synchronize()``), and in
parentheses the relative Frobenius error against the fp64 SVD polar factor of the same fp32 input (computed on
the CPU, cutoff at the default ``rtol = max(m, n)·ε32``; worst matrix of the batch).

Inputs: fp32 matrices with random singular vectors and a log-spaced spectrum from 1 to 1e-3 (κ = 1e3, the range
the polar-express tests cover), a different matrix per batch element.  Shapes 128×128, 512×128, 512×254 and
1024×1024 (``--quick`` skips 1024×1024 and uses 3 repeats); batch 1 and 8.  The ``auto`` row shows what
``backend="auto"`` picks on this device.  Torch runs on ``--threads`` threads (default 1, as the trainer does).
Run it on an otherwise idle machine.
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

from egalitarian.linalg import PE_TOL, default_rtol, pe_default_lower, polar, polar_express_schedule, resolve_backend

SHAPES = [(128, 128), (512, 128), (512, 254), (1024, 1024)]
BATCHES = [1, 8]
BACKENDS = {
    "auto": dict(backend="auto"),
    "gram-eigh (fp64)": dict(backend="gram-eigh"),
    "svd fp32": dict(backend="svd", dtype=torch.float32),
    "svd (fp64)": dict(backend="svd"),
    "polar-express (fp32)": dict(backend="polar-express"),
    "polar-express fp64": dict(backend="polar-express", dtype=torch.float64),
    "newton-schulz polar (fp32)": dict(backend="newton-schulz"),
}
KAPPA = 1e3


def test_matrix(batch: int, m: int, n: int, seed: int = 0) -> torch.Tensor:
    """``(batch, m, n)`` fp32 on the CPU: U diag(σ) Vᵀ, σ log-spaced from 1 to 1/KAPPA, random U and V."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U = torch.linalg.qr(torch.randn(batch, m, k, dtype=torch.float64, generator=g)).Q
    V = torch.linalg.qr(torch.randn(batch, n, k, dtype=torch.float64, generator=g)).Q
    s = torch.logspace(0, -torch.log10(torch.tensor(KAPPA)).item(), k, dtype=torch.float64)
    return ((U * s) @ V.mT).float()


def reference(G: torch.Tensor) -> torch.Tensor:
    """fp64 SVD polar factor of the (fp32) ``G``, on the kept subspace ``s > rtol · s_max``."""
    rtol = default_rtol(G.shape, G.dtype)
    U, s, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    keep = (s > rtol * s[..., :1]).double()
    return (U * keep.unsqueeze(-2)) @ Vh


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.detach().to("cpu", torch.float64)
    return (torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b)).max().item()


def median_ms(fn, repeats: int, sync) -> float:
    fn()  # warm-up (and, on CUDA, kernel selection and allocator growth)
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def header(args: argparse.Namespace, device: torch.device) -> None:
    print(f"# bench/polar_devices.py  {' '.join(sys.argv[1:])}")
    where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if device.type == "cuda":
        where += f"; GPU {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    print(
        f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {where}; torch {torch.__version__}; "
        f"threads {torch.get_num_threads()}; repeats {args.repeats}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--quick", action="store_true", help="skip 1024x1024 and use 3 repeats")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per cell (default 7, --quick 3)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device visible to torch", file=sys.stderr)
        return 2
    args.repeats = args.repeats or (3 if args.quick else 7)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    shapes = SHAPES[:-1] if args.quick else SHAPES
    header(args, device)

    cells = [(m, n, b) for m, n in shapes for b in BATCHES]
    inputs = {c: test_matrix(c[2], c[0], c[1]) for c in cells}
    refs = {c: reference(G) for c, G in inputs.items()}
    inputs = {c: G.to(device) for c, G in inputs.items()}

    auto = resolve_backend("auto", inputs[cells[0]])
    print(f"\n## polar(): median ms per call (relative error vs fp64 SVD), fp32 input, κ = {KAPPA:g}, {device}\n")
    print(f"`auto` resolves to `{auto}` here.  Polar Express steps (default l = max(rtol·k^(-1/8), 1e-7)):")
    for m, n in shapes:
        l32 = pe_default_lower((m, n), default_rtol((m, n), torch.float32))
        steps32 = len(polar_express_schedule(l32, PE_TOL[torch.float32]))
        steps64 = len(polar_express_schedule(l32, PE_TOL[torch.float64]))
        print(f"- {m}x{n}: l = {l32:.1e}, {steps32} steps fp32, {steps64} steps fp64")
    print()
    cols = [f"{m}x{n}" + (f" x{b}" if b > 1 else "") for m, n, b in cells]
    print("| backend | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, kw in BACKENDS.items():
        row = []
        for c in cells:
            G = inputs[c]
            ms = median_ms(lambda G=G, kw=kw: polar(G, **kw), args.repeats, sync)
            err = rel_err(polar(G, **kw), refs[c])
            row.append(f"{ms:.2f} ({err:.0e})")
        print(f"| {name} | " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

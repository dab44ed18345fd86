"""The local sweep executor: wall-clock of the same sweep with 1 worker and with 2 workers.

    python bench/sweep.py [--epochs 100] [--seeds 4] [--repeats 1]

The sweep: the paper's MLP on (a + b) mod 97 (recipe ``mod-add-p97``), methods EGD and SGD x ``--seeds``
seeds (8 runs by default), a fixed budget of ``--epochs`` epochs each (no early stop). Each measurement is
a fresh store and a complete ``egd sweep FILE --workers N`` command in a subprocess: process start-up, worker
start-up (torch import), training and the store writes all count. With ``--repeats`` > 1 the worker counts
alternate (1, 2, 2, 1, ...) so that a slow drift of the shared machine hits both alike; the table shows
medians. Run it on an otherwise idle machine: 2 workers need 2 free cores. The last column is the CPU that
other processes used meanwhile (machine-wide busy time from /proc/stat minus this benchmark's), in cores:
a measurement is clean when it is near 0.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SWEEP = """
base = "mod-add-p97"
[sweep]
name = "bench"
[set]
"train.max_epochs" = {epochs}
"train.stop_after_grok" = false
[grid]
method = ["egd", "sgd"]
seed = {seeds}
"""


def busy_seconds() -> float:
    """CPU-seconds spent by the whole machine so far (Linux /proc/stat: user + nice + system + irq + steal)."""
    try:
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    except OSError:
        return math.nan
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(workers: int, epochs: int, seeds: int) -> tuple[float, float, int, float]:
    """(wall seconds of `egd sweep`, summed training seconds of its runs, runs done, cores used by other
    processes meanwhile) on a fresh store."""
    with tempfile.TemporaryDirectory() as d:
        Path(d, "bench.toml").write_text(SWEEP.format(epochs=epochs, seeds=list(range(seeds))))
        cmd = [sys.executable, "-m", "egalitarian.cli", "sweep", "bench.toml", "--workers", str(workers)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        busy0, mine0, t0 = busy_seconds(), children_cpu(), time.perf_counter()
        subprocess.run(cmd, cwd=d, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        others = (busy_seconds() - busy0 - (children_cpu() - mine0)) / wall
        con = sqlite3.connect(Path(d, "sweeps", "bench.sqlite"))
        rows = con.execute("SELECT json_extract(summary, '$.seconds') FROM runs WHERE status='done'").fetchall()
        con.close()
    print(f"  {workers} worker(s): {wall:.1f} s, other processes used {others:.2f} cores", file=sys.stderr, flush=True)
    return wall, sum(r[0] for r in rows), len(rows), others


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100, help="epochs per run (default: 100)")
    ap.add_argument("--seeds", type=int, default=4, help="seeds per method (default: 4, i.e. 8 runs)")
    ap.add_argument("--repeats", type=int, default=1, help="measurements per worker count (default: 1)")
    args = ap.parse_args()

    print(f"# python bench/sweep.py {' '.join(sys.argv[1:])}")
    print(
        f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; torch {torch.__version__}; load average at start "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    results: dict[int, list[tuple[float, float, int, float]]] = {1: [], 2: []}
    order = [1, 2, 2, 1] * ((args.repeats + 1) // 2)
    for workers in order:
        if len(results[workers]) < args.repeats:
            results[workers].append(measure(workers, args.epochs, args.seeds))
    base = statistics.median(r[0] for r in results[1])
    print(f"\nmod-add-p97 (paper MLP), EGD and SGD x {args.seeds} seeds, {args.epochs} epochs per run\n")
    print("| workers | runs | wall-clock s | training s (sum over runs) | speed-up | other processes (cores) |")
    print("|---|---|---|---|---|---|")
    for workers, rs in results.items():
        wall, train_s, others = (statistics.median(r[i] for r in rs) for i in (0, 1, 3))
        print(f"| {workers} | {rs[0][2]} | {wall:.1f} | {train_s:.1f} | {base / wall:.2f}x | {others:.2f} |")
    print(f"\nload average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

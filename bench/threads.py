"""Threads per run with one busy process beside it: torch's default thread count vs one thread (issue #14).

    .venv/bin/python bench/threads.py [--repeats 3] [--demo-epochs 400] [--run-epochs 30]

A busy process (a Python loop spinning on one core) runs beside each measurement, as when a sweep, a test
suite or a browser shares the machine.  Each case is a fresh ``egd`` process, so the wall-clock seconds include
start-up, as a user sees them:

* ``egd demo``: the demo (SGD then EGD on mod-add p=97, ``--demo-epochs`` each; EGD stops once it groks);
* ``egd run``: mod-add-p97 with EGD for ``--run-epochs`` epochs, no early stop; its ms per step are the
  trainer's own step timing (``summary.json`` ``seconds_per_step``).

The old default is torch's own thread count in a fresh process (``torch.get_num_threads()`` without
``OMP_NUM_THREADS``: the number of cores here), passed as ``--threads``; the new default is 1 thread
(``train.threads = 0``).  Cases alternate old/new within each repeat; the table shows the median of
``--repeats`` runs.  Run it on an otherwise idle machine: the busy process is the only intended load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS", "EGD_THREADS")
ENV = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}  # torch picks its own default


def egd(*args: str) -> list[str]:
    return [sys.executable, "-m", "egalitarian.cli", *args]


def torch_default_threads() -> int:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=ENV,
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--demo-epochs", type=int, default=400, help="egd demo --epochs (default: the demo's 400)")
    ap.add_argument("--run-epochs", type=int, default=30, help="epochs of the egd run case")
    args = ap.parse_args()

    old = torch_default_threads()
    print(f"# bench/threads.py {' '.join(sys.argv[1:])}")
    print(f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}; "
          f"{os.cpu_count()} cores; torch's default threads: {old}; one busy process beside each run")
    if old == 1:
        print("torch's default is already 1 thread here: old and new are the same setting")
    settings = [("torch's default", old), ("new default", 1)]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = {
            "egd demo": lambda t: egd("demo", "--epochs", str(args.demo_epochs), "--out", str(root / "demo"),
                                      "--threads", str(t)),
            "egd run": lambda t: egd("run", "--config", "mod-add-p97", "--method", "egd",
                                     "--set", f"train.max_epochs={args.run_epochs}",
                                     "--set", "train.stop_after_grok=false", "--out", str(root / "run"),
                                     "--overwrite", "--threads", str(t)),
        }
        wall: dict[tuple[str, int], list[float]] = {}
        step_ms: dict[int, list[float]] = {}
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            for _ in range(args.repeats):
                for case, argv in cases.items():
                    for _, threads in settings:
                        wall.setdefault((case, threads), []).append(timed(argv(threads)))
                        if case == "egd run":
                            summary = json.loads((root / "run" / "summary.json").read_text())
                            step_ms.setdefault(threads, []).append(summary["seconds_per_step"] * 1e3)
        finally:
            busy.terminate()
            busy.wait()

    print("\n| case | threads | median wall s | median ms/step | runs (s) |")
    print("|---|---|---|---|---|")
    for case in cases:
        for label, threads in settings:
            runs = wall[(case, threads)]
            ms = f"{statistics.median(step_ms[threads]):.1f}" if case == "egd run" else "-"
            print(f"| {case} | {threads} ({label}) | {statistics.median(runs):.1f} | {ms} | "
                  f"{', '.join(f'{r:.1f}' for r in runs)} |")
    for case in cases:
        ratio = statistics.median(wall[(case, old)]) / statistics.median(wall[(case, 1)])
        print(f"{case}: torch's default / 1 thread = {ratio:.2f}x wall-clock")


if __name__ == "__main__":
    main()

"""Muon's Newton–Schulz in bfloat16 (torch's, the finished boards') against float32: steps and seconds.

    python experiments/24-fair-boards/ns_dtype.py experiments/24-fair-boards/mod-add-p97.toml

Takes a finished board's pooled Muon winner from its exported leaderboard (``<spec stem>/leaderboard.json``),
re-runs it on the board's held-out seeds as the board's reporting runs do (``[report_set]``: every step on the
modular boards), once with ``optimizer.ns_dtype = "bfloat16"`` and once with ``"float32"``, one thread, one run
at a time, and writes ``<spec stem>/ns-dtype.md`` and ``.json``: each seed's threshold step and seconds under both,
beside the board's own held-out steps for that winner (``heldout.csv``, measured on the machine that ran the board),
and one Newton–Schulz iteration's milliseconds in both dtypes on the boards' matrix shapes.
Why: torch's Muon casts to bfloat16, whose matmuls are emulated on a CPU without bf16 units (AVX2 only: 20-90x
slower than float32 there), and the later boards run Muon's NS in float32; this measures what that changes.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import torch

from egalitarian import io as fio
from egalitarian.train import RunStopped, train
from egalitarian.tune import load_tune, plan
from egalitarian.tuned import _contender, read_board

DTYPES = ("bfloat16", "float32")


def cpu() -> str:
    """The CPU's model and whether it has bf16 units (from /proc/cpuinfo where there is one)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    first = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in info.split("\n\n")[0].splitlines()
                                               if ":" in line)}
    flags = set(first.get("flags", "").split())
    name = first.get("model name", first.get("vendor_id", "?")).strip()
    family, model = first.get("cpu family", "?").strip(), first.get("model", "?").strip()
    units = "avx512_bf16" if "avx512_bf16" in flags else ("avx512f" if "avx512f" in flags else "no AVX-512")
    return f"{name} (family {family}, model {model}, {units})"


def ns_ms(shape: tuple[int, int], dtype: torch.dtype, reps: int = 5) -> float:
    """Median milliseconds of one quintic Newton–Schulz iteration (torch's Muon's three matmuls) on a random matrix."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    x = x.T if x.shape[0] > x.shape[1] else x
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a = x @ x.T
        b = torch.addmm(a, a, a, beta=-4.775, alpha=2.0315)
        torch.addmm(x, b, x, beta=3.4445)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", help="a finished board's tune spec, e.g. experiments/24-fair-boards/mod-add-p97.toml")
    ap.add_argument("--method", default="muon", help="the board's Muon row (default: muon)")
    args = ap.parse_args(argv)
    spec = Path(args.spec)
    folder = spec.with_suffix("")
    exported = folder / "leaderboard.json"
    if not exported.is_file():
        print(f"ns_dtype: {exported} does not exist: export the board first (export_board.py)", file=sys.stderr)
        return 2
    tspec = load_tune(spec)
    with tempfile.TemporaryDirectory() as scratch:  # read_board reads STORE-leaderboard.json: the exported one
        tspec = replace(tspec, store=Path(scratch) / tspec.store.name)
        shutil.copyfile(exported, Path(scratch) / (tspec.store.stem + "-leaderboard.json"))
        board = read_board(tspec, [args.method], "pooled")
    row = board[args.method]
    runs = plan(tspec, _contender(tspec, args.method), row["values"], tspec.reporting_seeds, reporting=True)
    board_steps: dict[int, float] = {}
    with open(folder / "heldout.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["method"] == args.method and json.loads(r["values"]) == row["values"]:
                board_steps[int(r["seed"])] = float(r["steps"])
    torch.set_num_threads(1)
    result: dict[str, dict[int, dict[str, float]]] = {d: {} for d in DTYPES}
    for dtype in DTYPES:
        for run in runs:
            cfg = copy.deepcopy(run.config)
            cfg["optimizer"]["ns_dtype"] = dtype
            t = time.perf_counter()
            try:
                s = train(cfg)
            except RunStopped as e:
                s = e.summary
            grok = s.get("grok") or {}
            seed = int(cfg["train"]["seed"])
            result[dtype][seed] = {"steps": grok.get("step", s["steps"]), "reached": bool(s.get("grokked")),
                                   "seconds": round(time.perf_counter() - t, 2)}
            print(dtype, seed, result[dtype][seed], flush=True)
    seeds = sorted(result[DTYPES[0]])
    lines = [f"# Muon's Newton–Schulz: bfloat16 against float32 ({tspec.name})", "",
             f"`python experiments/24-fair-boards/ns_dtype.py {spec}`; {datetime.now(UTC):%Y-%m-%d %H:%M} "
             f"UTC; {cpu()}; torch {torch.__version__}; one thread, one run at a time.", "",
             f"The pooled winner of `{args.method}`: {json.dumps(row['values'])}; held-out seeds as the board's "
             "reporting runs. Board: the board's own held-out steps (bfloat16, on the machine that ran it).", "",
             "| seed | board (bf16) | bf16 here | fp32 here | bf16 seconds | fp32 seconds |",
             "|---|---|---|---|---|---|"]
    for seed in seeds:
        b, f32 = result["bfloat16"][seed], result["float32"][seed]
        lines.append(f"| {seed} | {board_steps.get(seed, float('nan')):g} | {b['steps']:g} | {f32['steps']:g} | "
                     f"{b['seconds']:.1f} | {f32['seconds']:.1f} |")
    med = {d: statistics.median(result[d][s]["steps"] for s in seeds) for d in DTYPES}
    sec = {d: statistics.median(result[d][s]["seconds"] for s in seeds) for d in DTYPES}
    board_med = statistics.median(board_steps[s] for s in seeds) if all(s in board_steps for s in seeds) else "-"
    lines += ["", f"Median steps: board {board_med}, bf16 here {med['bfloat16']:g}, fp32 here {med['float32']:g}; "
              f"median seconds per run: bf16 {sec['bfloat16']:.1f}, fp32 {sec['float32']:.1f} "
              f"({sec['bfloat16'] / sec['float32']:.1f}x). Every run reached the threshold: "
              f"{all(result[d][s]['reached'] for d in DTYPES for s in seeds)}."]
    shapes = [(100, 100), (200, 200), (200, 784)]  # parity's W1; MNIST-1k's W2 and W1
    ms = {f"{m}x{n}": {d: round(ns_ms((m, n), getattr(torch, d)), 3) for d in DTYPES} for m, n in shapes}
    lines += ["", "One Newton–Schulz iteration (3 matmuls), median of 5, milliseconds:", "",
              "| matrix | bf16 | fp32 | bf16 / fp32 |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['bfloat16']:.2f} | {v['float32']:.2f} | {v['bfloat16'] / v['float32']:.0f}x |"
              for k, v in ms.items()]
    out = {"ns_iteration_ms": ms, "spec": str(spec), "method": args.method, "values": row["values"], "cpu": cpu(),
           "torch": torch.__version__, "board": board_steps, "runs": result}
    fio.atomic_write(folder / "ns-dtype.md", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    fio.atomic_write(folder / "ns-dtype.json", lambda f: f.write((json.dumps(out, indent=1) + "\n").encode()))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

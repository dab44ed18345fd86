"""What a board costs before it runs: each method's seconds per step on this machine, and a round's CPU-hours.

    python experiments/24-fair-boards/step_cost.py SPEC [--steps N] [--out DIR]

For every method of the tune spec SPEC this trains its tuning configuration (the spec's ``[set]`` and the method's
own ``set``, seed 0, no early stop, no replay) for ``--steps`` steps in a temporary folder, one thread, and reads the
trainer's own clocks: seconds per training step, and seconds per step of the whole loop (steps and the evaluations
at the spec's cadence).  A censored run, one that never reaches the threshold, goes the whole budget
(``train.max_steps``), so the loop's seconds per step times the budget is what it costs; a run that groks stops
earlier.  From these, for one round of the search (stage 1's grid and stage 2's trials on the tuning seeds, then
the held-out runs): the **upper bound** (every run censored), and an **estimate** that takes the fractions of
censored runs of the two finished modular boards (stage 1: 83%, stage 2: 40%; ``trials.csv``) and counts a run
that groks as half a censored one.  Each widening round reruns stage 2.

The header records the machine (CPU model and family, its load average): the same spec costs 3-4x more on a CPU
without bf16 units, or beside a running board.  With ``--out DIR`` (the board's folder) the table is also written
to ``DIR/step-cost.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

from egalitarian import io as fio
from egalitarian.errors import ConfigError
from egalitarian.methods import OPTIMIZERS
from egalitarian.train import RunStopped, train
from egalitarian.tune import _resolved, coarse_grid, load_tune

CENSORED = {"stage 1": 0.83, "stage 2": 0.40}  # trials.csv: mod-add 0.83, 0.37; mod-mult 0.83, 0.41
GROKKED = 0.5  # a run that reaches the threshold, as a fraction of a censored run's cost (an assumption)


def cpu() -> str:
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    model = info.get("model name", platform.processor() or platform.machine())
    return f"{model} (family {info.get('cpu family', '?')})"


def measure(spec, c, steps: int) -> dict:
    cfg = _resolved(spec, c, f"step_cost: methods.{c.label}")
    cfg["train"] = {**cfg["train"], "max_steps": steps, "max_epochs": 0, "seed": 0, "stop_after_grok": False,
                    "refine_grok": False, "threads": 1, "progress": "off"}
    opt = cfg["optimizer"]
    cfg["optimizer"] = {**opt, "lr": opt.get("lr", OPTIMIZERS[opt["name"]].defaults["lr"])}
    for _ in range(6):  # the method's own lr may diverge on this task: a step's cost does not depend on the lr
        try:
            with tempfile.TemporaryDirectory() as d:
                s = train(cfg, d)
            break
        except RunStopped:
            cfg["optimizer"] = {**cfg["optimizer"], "lr": cfg["optimizer"]["lr"] / 10}
    else:
        raise SystemExit(f"step_cost: {c.label} diverges at every lr tried, down to {cfg['optimizer']['lr']:g}")
    return {"steps": s["steps"], "step_s": s["seconds_per_step"], "loop_s": s["seconds"] / s["steps"],
            "lr": cfg["optimizer"]["lr"]}


def round_hours(seconds: list[float], runs: dict[str, int], held: int, metric: str) -> tuple[float, float, float]:
    """One round's CPU-hours from each method's whole-budget run (``seconds``), the runs per method of each stage
    (``runs``, stage 1's and stage 2's) and its held-out runs (``held``): at most (every run the whole budget),
    estimated (a fraction ``CENSORED`` of each stage's runs go the whole budget, the others and the held-out runs
    ``GROKKED`` of it), and a widening round's estimate (stage 2 again).  For a loss target every run goes the whole
    budget: the estimate is the upper bound."""
    total = sum(seconds) / 3600
    upper = total * (runs["stage 1"] + runs["stage 2"] + held)
    if metric != "steps":
        return upper, upper, total * runs["stage 2"]
    part = {k: CENSORED[k] + (1 - CENSORED[k]) * GROKKED for k in runs}
    est = total * (sum(n * part[k] for k, n in runs.items()) + GROKKED * held)
    return upper, est, total * runs["stage 2"] * part["stage 2"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--steps", type=int, default=100, help="steps per method (default 100)")
    ap.add_argument("--out", help="also write DIR/step-cost.md and .json (the board's folder)")
    args = ap.parse_args()
    if args.steps < 1:
        print(f"step_cost: --steps {args.steps}: must be at least 1", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    try:
        spec = load_tune(args.spec)
    except ConfigError as e:
        print(f"step_cost: {e}", file=sys.stderr)
        return 2
    budget = int(_resolved(spec, spec.contenders[0], "step_cost")["train"].get("max_steps", 0))
    if budget < 1:
        print(f"step_cost: {args.spec}: train.max_steps = {budget}: a step budget is needed (set it in [set])",
              file=sys.stderr)
        return 2
    lr = next(d for d in spec.space if d.field == "optimizer.lr")
    grid = len(coarse_grid(lr)) if spec.stages == "coarse-refine" else 0
    seeds, held = len(spec.tuning_seeds), len(spec.reporting_seeds)
    when = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    load = os.getloadavg()[0]
    rows = []
    for c in spec.contenders:
        m = measure(spec, c, args.steps)
        rows.append({"method": c.label, **m, "censored_run_s": m["loop_s"] * budget})
        print(f"{c.label}: {1e3 * m['loop_s']:.1f} ms per step", file=sys.stderr, flush=True)
    runs = {"stage 1": grid * seeds, "stage 2": spec.studies * spec.trials * seeds}  # per method
    held_runs = spec.studies * held
    upper, est, widen = round_hours([r["censored_run_s"] for r in rows], runs, held_runs, spec.metric)
    name = Path(args.spec).stem
    cmd = f"python experiments/24-fair-boards/step_cost.py {args.spec} --steps {args.steps}" + (
        f" --out {args.out}" if args.out else "")
    if spec.metric == "steps":
        what = "A censored run goes the whole budget"
        total = (f"One round: at most **{upper:.1f} CPU-hours** (every run censored); estimated **{est:.1f}** "
                 f"(censored fractions {CENSORED['stage 1']:.0%} in stage 1 and {CENSORED['stage 2']:.0%} in stage 2 "
                 f"as on the modular boards, a run that groks at {GROKKED:.0%} of a censored one's cost, held-out "
                 f"runs at {GROKKED:.0%}); each widening round about **{widen:.1f}** more.")
    else:
        what = f"The objective is the final {spec.metric}: every run goes the whole budget"
        total = f"One round: **{upper:.1f} CPU-hours**; each widening round about **{widen:.1f}** more."
    lines = [f"# What {name} costs per round, measured before it runs", "",
             f"`{cmd}`, started {when}; {cpu()}; load average {load:.2f} on {os.cpu_count()} cores; "
             f"torch {torch.__version__}; one thread.", "",
             f"{what}, {budget} steps. Per method and round: {runs['stage 1']} stage-1 runs, {runs['stage 2']} "
             f"stage-2 runs, {held_runs} held-out runs.", "",
             "| method | ms per training step | ms per step with evaluations | seconds per whole-budget run |",
             "|---|---|---|---|"]
    lines += [f"| {r['method']} | {1e3 * r['step_s']:.1f} | {1e3 * r['loop_s']:.1f} | {r['censored_run_s']:.0f} |"
              for r in rows]
    lines += ["", total, ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        fio.write_text(out / "step-cost.md", text)
        fio.write_json(out / "step-cost.json", {
            "spec": args.spec, "date": when, "cpu": cpu(), "load": load, "steps": args.steps, "budget": budget,
            "runs_per_method": {**runs, "held-out": held_runs}, "methods": rows,
            "round_cpu_hours": {"upper": upper, "estimate": est, "widening_round": widen},
            "assumptions": {"censored": CENSORED, "grokked_fraction_of_censored": GROKKED}})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One training step of the byte-level GPT (recipe ``stdlib-gpt``): AdamW, Muon and EGD + AdamW, and EGD's step as
today's code takes it against an earlier revision's, in the same process.

    OMP_NUM_THREADS=1 python bench/gpt_step.py [--repeats 50] [--backends auto,polar-express] [--threads 1]
                                               [--before 8f8a1af] [--profile] [--out DIR]

For each method this builds the recipe's model (the same init), data and optimizer (``adamw``; ``muon``, torch's
Muon with its Newton-Schulz in fp32 on the block matrices; ``egd`` (``--methods``), EGD on the block matrices and
AdamW on the rest, once per ``--backends`` entry) and times one step on the same batch of 16 windows: forward, loss
and backward, then the optimizer step.  ``--before REV`` adds EGD as the package at git revision REV takes it
(``bench/before.py``; default ``8f8a1af``, the code before issue #29's cheaper step), so "before" and "after" are
measured in one run.  The methods run interleaved, in a rotating order (A B C, B C A, …), 10 warm-up rounds, then
the median over ``--repeats`` rounds of wall-clock and of CPU time (``time.process_time``, which a busy machine
inflates less), and the ratios of those medians.

Two more rows time what EGD's exact step cannot avoid, on the EGD optimizer's own gradients, in the same rounds: the
eigendecompositions of its fp64 Gram matrices (one batched ``eigh``) and its fp64 products (each Gram, each factor
``Q diag(w/s) Qᵀ``, each product with the gradient).  ``--profile`` adds, per optimizer, the fractions of its step
that cProfile attributes to each function (``tottime``; a ``@`` counts in the function that calls it).

Prints Markdown; ``--out DIR`` also writes ``DIR/gpt_step.md`` and ``DIR/gpt_step.json``.  Run it on an otherwise
idle machine: the numbers are wall-clock.  The comparison of the methods' losses is experiments/16-beyond-grokking.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import importlib
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import before as before_rev  # noqa: E402

import egalitarian  # noqa: E402
from egalitarian.io import write_json, write_text  # noqa: E402

Step = Callable[[], tuple[float, float, float, float]]
DEFAULT_BEFORE = "8f8a1af"


class Stepper:
    """One method of the recipe's GPT on ``device``, built by ``pkg`` (today's package or an earlier revision's)."""

    def __init__(self, pkg: ModuleType, method: str, backend: str | None = None, device: str = "cpu") -> None:
        build, config, methods = (importlib.import_module(f"{pkg.__name__}.{n}")
                                  for n in ("build", "config", "methods"))
        cfg = config.load_config("stdlib-gpt")
        cfg["method"] = method
        if backend is not None:
            cfg["methods"][method]["backend"] = backend
        torch.manual_seed(0)
        self.run = build.build_run(config.resolve(cfg, methods.OPTIMIZERS), device)
        self.sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
        idx = torch.randint(0, self.run.data.n_train, (16,), generator=torch.Generator().manual_seed(0))
        self.x, self.y = self.run.data.x_train[idx], self.run.data.y_train[idx]
        self.optimizer = self.run.optimizer

    def __call__(self) -> tuple[float, float, float, float]:
        """One step: (step seconds, optimizer seconds, step CPU seconds, optimizer CPU seconds)."""
        run = self.run
        self.sync()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = run.loss_fn(run.model(self.x), self.y)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.sync()
        t1, c1 = time.perf_counter(), time.process_time()
        run.optimizer.step()
        self.sync()
        t2, c2 = time.perf_counter(), time.process_time()
        return t2 - t0, t2 - t1, c2 - c0, c2 - c1

    def whitened_grads(self) -> list[torch.Tensor]:
        """The gradients EGD whitens (those of the ``use_egd`` groups), after one forward and backward."""
        run = self.run
        run.optimizer.zero_grad(set_to_none=True)
        run.loss_fn(run.model(self.x), self.y).backward()
        return [p.grad for g in run.optimizer.param_groups if g.get("use_egd") for p in g["params"]]


def floor_probes(grads: list[torch.Tensor]) -> dict[str, Callable[[], Any]]:
    """Two timed calls: the batched fp64 ``eigh`` of the gradients' Grams (the smaller side), and every fp64 product
    of the exact route (Gram, ``Q diag(w/s) Qᵀ``, factor × gradient)."""
    X = [g.double() for g in grads]
    grams = torch.stack([x @ x.mT if x.shape[0] <= x.shape[1] else x.mT @ x for x in X])
    lam, Q = torch.linalg.eigh(grams)
    inv = lam.clamp_min(1e-300).rsqrt()

    def products() -> None:
        A = [x @ x.mT if x.shape[0] <= x.shape[1] else x.mT @ x for x in X]
        P = (Q * inv.unsqueeze(-2)) @ Q.mT
        for x, p in zip(X, P.unbind(0), strict=True):
            _ = p @ x if x.shape[0] <= x.shape[1] else x @ p
        del A

    return {f"floor: fp64 eigh of the {len(X)} Grams": lambda: torch.linalg.eigh(grams),
            "floor: fp64 products (Gram, factor, factor × G)": products}


def profile(stepper: Stepper, steps: int = 20, top: int = 8) -> list[tuple[str, float]]:
    """cProfile of ``steps`` optimizer steps on one gradient: the ``top`` functions by own time, as fractions."""
    stepper.whitened_grads()  # a gradient for every parameter
    opt = stepper.optimizer
    opt.step()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        opt.step()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    rows = sorted(((v[2], f"{Path(k[0]).name}:{k[2]}" if k[0] != "~" else k[2]) for k, v in stats.items()),
                  reverse=True)
    return [(name, t / total) for t, name in rows[:top]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--backends", default="auto", help="EGD backends, comma-separated (e.g. auto,polar-express)")
    ap.add_argument("--methods", default="egd", help="EGD tables of the recipe, comma-separated (e.g. "
                    "egd,egd_before_rms)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--before", default=DEFAULT_BEFORE, help="git revision whose EGD step to time beside today's "
                    "('' for none)")
    ap.add_argument("--profile", action="store_true", help="cProfile fractions of each optimizer's step")
    ap.add_argument("--out", type=Path, default=None, help="also write gpt_step.md and gpt_step.json here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    old = before_rev.load(args.before) if args.before else None
    steppers: dict[str, Stepper] = {"AdamW": Stepper(egalitarian, "adamw"),
                                    "Muon (fp32 NS5)": Stepper(egalitarian, "muon")}
    for m in args.methods.split(","):
        for b in args.backends.split(","):
            steppers[f"EGD + AdamW (`{m}`, `{b}`)"] = Stepper(egalitarian, m, b)
            if old is not None:
                steppers[f"EGD + AdamW (`{m}`, `{b}`) at {args.before}"] = Stepper(old, m, b)
    egd_key = f"EGD + AdamW (`{args.methods.split(',')[0]}`, `{args.backends.split(',')[0]}`)"
    probes = floor_probes(steppers[egd_key].whitened_grads())
    times: dict[str, list[tuple[float, ...]]] = {name: [] for name in [*steppers, *probes]}
    calls: list[tuple[str, Callable[[], tuple[float, ...]]]] = [*steppers.items()]
    for name, fn in probes.items():
        calls.append((name, lambda fn=fn: _timed(fn)))
    for i in range(10 + args.repeats):
        k = i % len(calls)
        for name, fn in calls[k:] + calls[:k]:  # a rotating order: no method always runs after the same one
            t = fn()
            if i >= 10:
                times[name].append(t)

    med = {name: [statistics.median(col) for col in zip(*ts, strict=True)] for name, ts in times.items()}
    cpu = platform.processor() or platform.machine()
    lines = [f"# bench/gpt_step.py {' '.join(sys.argv[1:])}", "",
             f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cpu}; torch {torch.__version__}; "
             f"{torch.get_num_threads()} thread(s); median of {args.repeats} interleaved rounds", ""]
    base, base_cpu = med["AdamW"][0], med["AdamW"][2]
    lines += ["| method | step ms | of which the optimizer | × AdamW's step | CPU ms: step / optimizer | × AdamW "
              "(CPU) |", "|---|---|---|---|---|---|"]
    rows = []
    for name in steppers:
        step, opt, step_cpu, opt_cpu = med[name]
        rows.append({"method": name, "step_ms": 1e3 * step, "optimizer_ms": 1e3 * opt, "x_adamw": step / base,
                     "step_cpu_ms": 1e3 * step_cpu, "optimizer_cpu_ms": 1e3 * opt_cpu,
                     "x_adamw_cpu": step_cpu / base_cpu})
        lines.append(f"| {name} | {1e3 * step:.1f} | {1e3 * opt:.1f} | {step / base:.2f} | {1e3 * step_cpu:.1f} / "
                     f"{1e3 * opt_cpu:.1f} | {step_cpu / base_cpu:.2f} |")
    for name in probes:
        wall, cpu_t = med[name]
        rows.append({"method": name, "optimizer_ms": 1e3 * wall, "optimizer_cpu_ms": 1e3 * cpu_t})
        lines.append(f"| {name} | | {1e3 * wall:.1f} | | / {1e3 * cpu_t:.1f} | |")
    ratios: dict[str, float] = {}
    muon = med["Muon (fp32 NS5)"]
    for name in steppers:
        if name.startswith("EGD") and not name.endswith(f"at {args.before}"):
            ratios[f"{name}: optimizer / Muon's"] = med[name][1] / muon[1]
            ratios[f"{name}: step / Muon's step"] = med[name][0] / muon[0]
            was = f"{name} at {args.before}"
            if was in med:
                ratios[f"{name}: optimizer / before"] = med[name][1] / med[was][1]
                ratios[f"{name}: step / before"] = med[name][0] / med[was][0]
                ratios[f"{name}: × AdamW's step, before"] = med[was][0] / base
                ratios[f"{name}: × AdamW's step, after"] = med[name][0] / base
    ratios["floor (fp64 eigh + products) / Muon's optimizer"] = sum(med[k][0] for k in probes) / muon[1]
    ratios["floor (fp64 eigh + products) / Muon's optimizer, CPU time"] = sum(med[k][1] for k in probes) / muon[3]
    lines += ["", "| ratio of medians (wall-clock unless CPU) | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in ratios.items()]
    profiles: dict[str, list[tuple[str, float]]] = {}
    if args.profile:
        for name, stepper in steppers.items():
            if name != "AdamW":
                profiles[name] = profile(stepper)
                lines += ["", f"cProfile of the optimizer step, {name}: fraction of its time (own time)", "",
                          "| function | fraction |", "|---|---|"]
                lines += [f"| `{fn}` | {frac:.2f} |" for fn, frac in profiles[name]]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text(args.out / "gpt_step.md", text + "\n")
        record = {"argv": sys.argv[1:], "date": datetime.datetime.now(datetime.UTC).isoformat(), "cpu": cpu,
                  "torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": args.repeats,
                  "before": args.before, "rows": rows, "ratios": ratios, "profiles": profiles}
        write_json(args.out / "gpt_step.json", record)


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


if __name__ == "__main__":
    main()

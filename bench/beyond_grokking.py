"""EGD beyond grokking: a character-level GPT and a small CNN, AdamW vs Muon vs EGD variants, equal tuning budgets.

    OMP_NUM_THREADS=1 python bench/beyond_grokking.py run --task gpt|cnn [--out bench-out/beyond] [--steps N]
    OMP_NUM_THREADS=1 python bench/beyond_grokking.py report [--out bench-out/beyond]
    OMP_NUM_THREADS=1 python bench/beyond_grokking.py step-time [--repeats 50]

Protocol (the same for every method of a task):

* **Tuning**: the learning rate of the whitened (or Muon, or all AdamW) parameters on a 5-point grid, factors
  1/9, 1/3, 1, 3, 9 times the method's centre (one shape of search space for every method), on tuning seed 0;
  the best grid point is the lowest final validation loss.  When the best point is at an end of the grid, the
  grid grows by one point (×3) beyond it, at most ``EXTEND`` = 2 times (the same rule for every method); a best
  point still at an end is flagged ``edge``.  The auxiliary AdamW of the hybrid methods (embeddings, head,
  biases, norms) uses the learning rate tuned for plain AdamW on the same task.
* **Reporting**: the best lr of each method re-run on seeds 1, 2, 3 (disjoint from the tuning seed): validation
  loss at fixed steps and the first evaluation step at which the validation loss reaches the target (the median
  final validation loss of tuned AdamW: "steps to AdamW's final loss"); a run that never reaches it is censored.
* Same steps, batch, data order (per seed), schedule (linear warm-up then cosine decay to 10%), no weight decay.

Data, offline and without downloads:

* ``gpt``: a character (byte) level language model on the Python standard library's own source code (the
  ``.py`` files at the top level of ``sysconfig.get_paths()["stdlib"]``, sorted, first 2 MB; licence: the Python
  Software Foundation License, which allows this use), 90/10 train/validation split.
* ``cnn``: Fashion-MNIST from ``egd data fashion-mnist`` (``$EGD_DATA``), 10,000 training images and 2,000 test
  images; without it the scikit-learn digits (bundled with scikit-learn) as a stand-in, labelled as such.

Results are appended, one JSON line per finished run, to ``OUT/runs.jsonl``; a rerun skips every finished run
(resumable), so Ctrl-C loses at most the run in flight.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from egalitarian.baselines import MuonWithAdamW

GRID = (1 / 9, 1 / 3, 1.0, 3.0, 9.0)
TUNING_SEED = 0
REPORT_SEEDS = (1, 2, 3)
WARMUP = 50
EXTEND = 2  # grid points a search may add beyond an edge where its best point lies


# ----------------------------------------------------------------------------------------------------- tasks


def stdlib_corpus(limit: int = 2_000_000) -> tuple[bytes, str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    text = b"".join(p.read_bytes() for p in sorted(root.glob("*.py")))[:limit]
    return text, hashlib.sha256(text).hexdigest()[:12]


class GPT(nn.Module):
    """nanoGPT's shape, small: pre-LayerNorm blocks, separate q/k/v projections, GELU MLP 4x, untied head."""

    def __init__(self, vocab: int = 256, block: int = 64, dim: int = 128, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(block, dim)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "ln1": nn.LayerNorm(dim), "q": nn.Linear(dim, dim), "k": nn.Linear(dim, dim), "v": nn.Linear(dim, dim),
            "o": nn.Linear(dim, dim), "ln2": nn.LayerNorm(dim), "up": nn.Linear(dim, 4 * dim),
            "down": nn.Linear(4 * dim, dim)}) for _ in range(depth))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        for b in self.blocks:
            h = b["ln1"](x)
            q, k, v = (b[n](h).view(B, T, self.heads, -1).transpose(1, 2) for n in "qkv")
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)
            x = x + b["o"](a)
            x = x + b["down"](F.gelu(b["up"](b["ln2"](x))))
        return self.head(self.ln(x))


class Task:
    name: str
    steps: int
    eval_every: int
    centre_adamw: float

    def model(self) -> nn.Module: ...
    def batch(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...
    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...
    def val_loss(self, model: nn.Module) -> float: ...


class CharGPT(Task):
    name, steps, eval_every, centre_adamw = "gpt", 400, 50, 3e-3
    block, batch_size = 64, 16

    def __init__(self, steps: int | None = None) -> None:
        text, self.digest = stdlib_corpus()
        data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
        n = int(0.9 * len(data))
        self.train, self.val = data[:n], data[n:]
        self.steps = steps or self.steps
        self.data_note = (f"stdlib .py corpus, {len(text)} bytes, sha256 {self.digest}, "
                          f"Python {platform.python_version()}")
        gen = torch.Generator().manual_seed(1234)
        starts = torch.randint(0, len(self.val) - self.block - 1, (16 * self.batch_size,), generator=gen)
        self.val_x = torch.stack([self.val[s:s + self.block] for s in starts])
        self.val_y = torch.stack([self.val[s + 1:s + 1 + self.block] for s in starts])

    def model(self) -> nn.Module:
        return GPT(block=self.block)

    def batch(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(self.train) - self.block - 1, (self.batch_size,), generator=gen)
        x = torch.stack([self.train[s:s + self.block] for s in starts])
        y = torch.stack([self.train[s + 1:s + 1 + self.block] for s in starts])
        return x, y

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    @torch.no_grad()
    def val_loss(self, model: nn.Module) -> float:
        model.eval()
        out = statistics.fmean(float(self.loss(model, self.val_x[i:i + 64], self.val_y[i:i + 64]))
                               for i in range(0, len(self.val_x), 64))
        model.train()
        return out


class ImageCNN(Task):
    name, steps, eval_every, centre_adamw = "cnn", 300, 50, 1e-3
    batch_size = 64

    def __init__(self, steps: int | None = None) -> None:
        from egalitarian.data import dataset_dir
        from egalitarian.tasks.mnist import load_digits_arrays, load_idx

        self.steps = steps or self.steps
        directory = dataset_dir("fashion-mnist")
        try:
            xtr, ytr, xte, yte = load_idx(directory)
            xtr, ytr, xte, yte = xtr[:10000], ytr[:10000], xte[:2000], yte[:2000]
            scale, self.shape = 255.0, (1, 28, 28)
            self.data_note = f"Fashion-MNIST ({directory}): 10000 train / 2000 test images"
        except Exception:  # the stand-in: scikit-learn's bundled 8x8 digits
            x, y = load_digits_arrays()
            xtr, ytr, xte, yte = x[:1400], y[:1400], x[1400:], y[1400:]
            scale, self.shape = 1.0, (1, 8, 8)
            self.data_note = "STAND-IN: scikit-learn digits 8x8 (1400 train / 397 test), not Fashion-MNIST"
        to = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32) / scale).view(-1, *self.shape)  # noqa: E731
        self.xtr, self.xte = to(xtr), to(xte)
        self.ytr, self.yte = torch.as_tensor(np.asarray(ytr)).long(), torch.as_tensor(np.asarray(yte)).long()
        mean, std = self.xtr.mean(), self.xtr.std()
        self.xtr, self.xte = (self.xtr - mean) / std, (self.xte - mean) / std

    def model(self) -> nn.Module:
        from egalitarian.models import CNN

        return CNN(*self.shape, 10, channels=(16, 32, 32), fc=128)

    def batch(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.randint(0, len(self.xtr), (self.batch_size,), generator=gen)
        return self.xtr[i], self.ytr[i]

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def val_loss(self, model: nn.Module) -> float:
        model.eval()
        out = float(self.loss(model, self.xte, self.yte))
        model.train()
        return out


TASKS = {"gpt": CharGPT, "cnn": ImageCNN}


# --------------------------------------------------------------------------------------------------- methods
# Each: (centre of the lr grid relative to the task's AdamW centre, or absolute; builder(model, lr, aux_lr)).


def _split(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The whitened / auxiliary parameters as egalitarian.route decides them."""
    from egalitarian import route

    r = route(model)
    return [p for _, p, *_ in r.whitened], [p for _, p, *_ in r.aux]


def _adamw(model, lr, aux_lr):
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)


def _muon(model, lr, aux_lr):
    hidden, aux = _split(model)
    flat = [p for p in hidden if p.ndim == 2]  # torch's Muon takes 2-D matrices only: conv kernels go to AdamW
    aux = aux + [p for p in hidden if p.ndim != 2]
    return MuonWithAdamW(flat, aux, lr=lr, momentum=0.95, nesterov=True, weight_decay=0.0, adamw_lr=aux_lr,
                         adamw_betas=(0.9, 0.95), ns_dtype="float32")


def _egd(**kw):
    def build(model, lr, aux_lr):
        from egalitarian import egd_for

        return egd_for(model, lr=lr, aux_lr=aux_lr, aux_betas=(0.9, 0.95), **kw)

    return build


METHODS = {
    # name: (lr-grid centre as a multiple of the task's AdamW centre, builder)
    "adamw": (1.0, _adamw),
    "muon": (20 / 3, _muon),  # Muon's default 0.02 against AdamW's 3e-3
    "egd": (5.0, _egd()),  # the paper: no momentum, every kept singular value 1
    "egd_after_rms": (1 / 6, _egd(momentum=0.95, nesterov=True, momentum_position="after", scale="rms")),
    "egd_before_rms": (1.0, _egd(momentum=0.95, nesterov=True, momentum_position="before", scale="rms")),
    "egd_before_muon": (20 / 3, _egd(momentum=0.95, nesterov=True, momentum_position="before", scale="muon")),
}


# ------------------------------------------------------------------------------------------------------ runs


def lr_factor(step: int, steps: int) -> float:
    if step < WARMUP:
        return (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


def train_one(task: Task, method: str, lr: float, aux_lr: float, seed: int) -> dict:
    torch.manual_seed(seed)
    model = task.model()
    opt = METHODS[method][1](model, lr, aux_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, task.steps))
    gen = torch.Generator().manual_seed(10_000 + seed)
    curve, times = [], []
    for step in range(task.steps):
        x, y = task.batch(gen)
        t0 = time.perf_counter()
        loss = task.loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        times.append(time.perf_counter() - t0)
        if not math.isfinite(loss.item()):
            curve.append((step + 1, float("nan")))
            break
        if (step + 1) % task.eval_every == 0 or step + 1 == task.steps:
            curve.append((step + 1, task.val_loss(model)))
    return {"curve": curve, "final": curve[-1][1], "ms_per_step": 1000 * statistics.median(times)}


class Store:
    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "runs.jsonl"
        self.rows = [json.loads(x) for x in self.path.read_text().splitlines()] if self.path.exists() else []

    def get(self, **key) -> dict | None:
        for r in self.rows:
            if all(r.get(k) == v for k, v in key.items()):
                return r
        return None

    def add(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)


def run_or_load(store: Store, task: Task, method: str, lr: float, aux_lr: float, seed: int) -> dict:
    key = dict(task=task.name, method=method, lr=round(lr, 12), aux_lr=round(aux_lr, 12), seed=seed, steps=task.steps)
    row = store.get(**key)
    if row is None:
        t0 = time.time()
        row = {**key, **train_one(task, method, lr, aux_lr, seed), "seconds": time.time() - t0}
        store.add(row)
        print(f"  {method:16s} lr {lr:.3g} seed {seed}: final val loss {row['final']:.4f} "
              f"({row['ms_per_step']:.1f} ms/step)", flush=True)
    return row


def _score(row: dict) -> float:
    return row["final"] if math.isfinite(row["final"]) else math.inf


def tune_and_report(task: Task, store: Store, methods: list[str]) -> None:
    print(f"{task.name}: {task.data_note}; {task.steps} steps", flush=True)
    order = ["adamw", *[m for m in methods if m != "adamw"]]
    aux_lr = None
    for method in order:
        centre = METHODS[method][0] * task.centre_adamw
        grid = [centre * f for f in GRID]
        rows = [run_or_load(store, task, method, lr, aux_lr or task.centre_adamw, TUNING_SEED) for lr in grid]
        best = min(range(len(grid)), key=lambda i: _score(rows[i]))
        for _ in range(EXTEND):  # a best point at an edge: one more point beyond it (the same rule for every method)
            if best not in (0, len(grid) - 1):
                break
            lr = grid[0] / 3 if best == 0 else grid[-1] * 3
            row = run_or_load(store, task, method, lr, aux_lr or task.centre_adamw, TUNING_SEED)
            grid, rows = ([lr, *grid], [row, *rows]) if best == 0 else ([*grid, lr], [*rows, row])
            best = min(range(len(grid)), key=lambda i: _score(rows[i]))
        if method == "adamw":
            aux_lr = grid[best]
        for seed in REPORT_SEEDS:
            run_or_load(store, task, method, grid[best], aux_lr, seed)


# ---------------------------------------------------------------------------------------------------- report


def km_median(times: list[float], censored: list[bool]) -> float:
    """Kaplan-Meier median of event times with right-censoring (inf if survival never drops to 0.5)."""
    at_risk, surv = len(times), 1.0
    for t, c in sorted(zip(times, censored, strict=True)):
        if not c:
            surv *= 1 - 1 / at_risk
            if surv <= 0.5:
                return t
        at_risk -= 1
    return math.inf


def report(store: Store, methods: list[str]) -> None:
    for name in dict.fromkeys(r["task"] for r in store.rows):
        rows = [r for r in store.rows if r["task"] == name]
        steps = rows[0]["steps"]
        print(f"\n### {name} ({steps} steps; lr grid ×(1/9, 1/3, 1, 3, 9) around each method's centre, tuning seed "
              f"{TUNING_SEED}, reporting seeds {', '.join(map(str, REPORT_SEEDS))})\n")
        best = {}
        for m in methods:
            tuning = [r for r in rows if r["method"] == m and r["seed"] == TUNING_SEED]
            if not tuning:
                continue
            lrs = sorted({r["lr"] for r in tuning})
            b = min(tuning, key=_score)
            best[m] = (b["lr"], lrs.index(b["lr"]) in (0, len(lrs) - 1))
        adamw = [r for r in rows
                 if r["method"] == "adamw" and r["seed"] in REPORT_SEEDS and r["lr"] == best["adamw"][0]]
        target = statistics.median(r["final"] for r in adamw) if adamw else math.nan
        print(f"target = tuned AdamW's median final validation loss = {target:.4f}\n")
        print("| method | best lr | val loss @ 1/3 | @ 2/3 | final (median [min, max]) | steps to target (KM median; "
              "reached) | ms/step |\n|---|---|---|---|---|---|---|")
        for m, (lr, edge) in best.items():
            rep = [r for r in rows if r["method"] == m and r["seed"] in REPORT_SEEDS and r["lr"] == lr]
            if not rep:
                continue

            def at(r, frac, steps=steps):
                want = round(steps * frac / r["curve"][0][0]) * r["curve"][0][0]
                return next((v for s, v in r["curve"] if s >= want), math.nan)

            hit = [next((s for s, v in r["curve"] if v <= target), None) for r in rep]
            km = km_median([h if h is not None else steps for h in hit], [h is None for h in hit])
            finals = [r["final"] for r in rep]
            print(f"| {m} | {lr:.3g}{' (edge)' if edge else ''} | {statistics.median(at(r, 1 / 3) for r in rep):.4f} "
                  f"| {statistics.median(at(r, 2 / 3) for r in rep):.4f} | {statistics.median(finals):.4f} "
                  f"[{min(finals):.4f}, {max(finals):.4f}] | {'> ' + str(steps) if math.isinf(km) else km} "
                  f"({sum(h is not None for h in hit)}/{len(rep)}) | "
                  f"{statistics.median(r['ms_per_step'] for r in rep):.1f} |")


# ------------------------------------------------------------------------------------------------- step time


def step_time(repeats: int, backends: list[str]) -> None:
    """Median ms of one training step (forward, backward, optimizer) of the char GPT, methods interleaved."""
    from egalitarian import egd_for

    task = CharGPT(steps=1)
    builders = {"adamw": lambda m: _adamw(m, 1e-3, 1e-3), "muon (fp32 NS5)": lambda m: _muon(m, 0.02, 1e-3)}
    for b in backends:
        builders[f"egd ({b})"] = lambda m, b=b: egd_for(m, lr=1e-3, aux_lr=1e-3, backend=b)
    steppers = {}
    for name, build in builders.items():
        torch.manual_seed(0)
        model = task.model()
        opt = build(model)
        gen = torch.Generator().manual_seed(0)
        x, y = task.batch(gen)

        def step(model=model, opt=opt, x=x, y=y) -> tuple[float, float]:
            t0 = time.perf_counter()
            loss = task.loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            return t2 - t0, t2 - t1

        steppers[name] = step
    times = {n: [] for n in steppers}
    for i in range(10 + repeats):
        for n, s in steppers.items():
            t = s()
            if i >= 10:
                times[n].append(t)
    base = statistics.median(t for t, _ in times["adamw"])
    print("| method | step ms (median) | of which optimizer ms | × AdamW's step |\n|---|---|---|---|")
    for n, ts in times.items():
        total, opt = statistics.median(t for t, _ in ts), statistics.median(o for _, o in ts)
        print(f"| {n} | {1000 * total:.1f} | {1000 * opt:.1f} | {total / base:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["run", "report", "step-time"])
    ap.add_argument("--task", choices=list(TASKS), default="gpt")
    ap.add_argument("--out", default="bench-out/beyond")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--backends", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"beyond_grokking: error: --methods = {unknown[0]!r}: allowed: {', '.join(METHODS)}", file=sys.stderr)
        sys.exit(2)
    print(f"# python bench/beyond_grokking.py {' '.join(sys.argv[1:])}")
    cpu = platform.processor() or platform.machine()
    print(f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cpu}; "
          f"torch {torch.__version__}; {torch.get_num_threads()} thread(s)", flush=True)
    if args.command == "run":
        tune_and_report(TASKS[args.task](args.steps), Store(Path(args.out)), methods)
        report(Store(Path(args.out)), methods)
    elif args.command == "report":
        report(Store(Path(args.out)), methods)
    else:
        step_time(args.repeats, args.backends.split(","))


if __name__ == "__main__":
    main()

"""EGD's optimizer step and the bytes it communicates, against world size: one process, and W processes of one gloo
group on this CPU (DDP, FSDP2), for the 8 × ``Linear(384, 384)`` model of issue #29 and the byte-level GPT.

    OMP_NUM_THREADS=1 python bench/dist_step.py [--worlds 1,2] [--models linear8,gpt] [--modes ddp,fsdp2]
                                                [--repeats 20] [--rounds 3] [--out DIR]

Models (each built with seed 0, every rank the same initial weights):

* ``linear8``: an embedding (256 tokens × 384), 8 × (``Linear(384, 384)``, GELU), a head ``Linear(384, 256)``;
  ``egd_for`` sends the embedding and the head to AdamW and whitens the 8 matrices (momentum 0.95 before the
  whitening, Nesterov, ``scale="rms"``);
* ``gpt``: recipe ``stdlib-gpt``'s model and its ``egd`` method (EGD on the 12 block matrices, 128 × 128 to
  512 × 128; AdamW on the rest).

World size 1 is one process **without** a process group (the single-process step, the reference); W > 1 runs W
processes (``torch.multiprocessing``, gloo on loopback, one thread each), either under
``DistributedDataParallel`` (``ddp``: every rank holds the averaged gradient; the whitening is split among the ranks
and all-gathered) or FSDP2 (``fsdp2``: ``fully_shard`` on each layer and the root; each rank holds its rows).  Each
rank takes a forward and backward on its part of a fixed batch, then a timed ``opt.step()`` (all ranks start it
together, after a barrier); ``--repeats`` steps after 3 warm-up steps, the median per rank, and the slowest rank's
median is the step's time.  The bytes are ``egalitarian.distributed.comm_log()``'s (what the split sends and
receives per rank and step, headers and padding included; DDP's own gradient all-reduce and FSDP2's
all-gathers are not the optimizer's and not counted).  ``--rounds`` alternates the world sizes (1, 2, 1, 2, …) and
reports the median over rounds, so a change in the machine's load hits both alike.

Prints Markdown (``--out DIR`` also writes ``dist_step.md`` and ``dist_step.json``): per model, mode and world size
the step in ms, its ratio to one process, the bytes per rank and the collectives; issue #29's target is the 2-rank
``ddp`` step at most 0.70× the one-process step on ``linear8``.  Run it on an otherwise idle machine: W processes
need W free cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

TARGET = 0.70
BATCH, CONTEXT, VOCAB = 8, 64, 256


class Linear8(nn.Module):
    """An embedding, 8 × (Linear(384, 384), GELU), a head: issue #29's data-parallel measurement."""

    def __init__(self, d: int = 384, depth: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.layers = nn.ModuleList(nn.Linear(d, d) for _ in range(depth))
        self.head = nn.Linear(d, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        for layer in self.layers:
            h = nn.functional.gelu(layer(h))
        return self.head(h)


def build(name: str) -> tuple[nn.Module, Any, torch.Tensor, torch.Tensor, list[nn.Module]]:
    """``(model, make_optimizer, x, y, layers)``: the model (seed 0), a function of the (wrapped) model giving its
    optimizer, a fixed batch, and the modules FSDP2 shards one by one."""
    from egalitarian import egd_for

    torch.manual_seed(0)
    if name == "linear8":
        model = Linear8()
        g = torch.Generator().manual_seed(1)
        x = torch.randint(0, VOCAB, (BATCH, CONTEXT), generator=g)
        y = torch.randint(0, VOCAB, (BATCH, CONTEXT), generator=g)
        return (model, lambda m: egd_for(m, lr=0.01, momentum=0.95, nesterov=True, momentum_position="before",
                                         scale="rms"), x, y, list(model.layers))
    from egalitarian.build import build_optimizer_from, build_run
    from egalitarian.config import load_config, resolve
    from egalitarian.methods import OPTIMIZERS

    cfg = load_config("stdlib-gpt")
    cfg["method"] = "egd"
    resolved = resolve(cfg, OPTIMIZERS)
    run = build_run(resolved)
    idx = torch.randint(0, run.data.n_train, (16,), generator=torch.Generator().manual_seed(0))
    return (run.model, lambda m: build_optimizer_from(resolved, m), run.data.x_train[idx], run.data.y_train[idx],
            list(run.model.blocks))


def loss_of(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def measure(model_name: str, mode: str, rank: int, world: int, repeats: int) -> dict[str, Any]:
    """One rank's (or the single process's) step times and the split's log of one step."""
    from egalitarian import distributed as egd_dist

    torch.set_num_threads(1)
    model, make, x, y, layers = build(model_name)
    if world > 1 and mode == "ddp":
        wrapped = nn.parallel.DistributedDataParallel(model)
    elif world > 1:
        from torch.distributed.fsdp import fully_shard

        for layer in layers:
            fully_shard(layer)
        wrapped = fully_shard(model)
    else:
        wrapped = model
    opt = make(model)
    xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
    times, cpu, log = [], [], None
    for _ in range(3 + repeats):
        opt.zero_grad(set_to_none=True)
        loss_of(wrapped(xs), ys).backward()
        if world > 1:
            dist.barrier()
        with egd_dist.comm_log() as step_log:
            t, c = time.perf_counter(), time.process_time()
            opt.step()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        log = step_log
    assert log is not None
    return {"median_s": statistics.median(times[3:]), "cpu_median_s": statistics.median(cpu[3:]),
            "sent": log.sent, "received": log.received,
            "collectives": [c.op for c in log.collectives],
            "routes": sorted({r[1] for r in log.routes})}


def _worker(rank: int, world: int, port: int, model_name: str, mode: str, repeats: int, out: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    code = 0
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=300))
        result = measure(model_name, mode, rank, world, repeats)
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # gloo's teardown at exit can abort on this torch build; the results are on disk


def run_world(model_name: str, mode: str, world: int, repeats: int) -> dict[str, Any]:
    """The step of ``world`` ranks: the slowest rank's median, and each rank's bytes."""
    if world == 1:
        r = measure(model_name, mode, 0, 1, repeats)
        return {"step_ms": 1e3 * r["median_s"], "cpu_ms": 1e3 * r["cpu_median_s"], "ranks": [r]}
    with tempfile.TemporaryDirectory() as out, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        mp.spawn(_worker, args=(world, port, model_name, mode, repeats, out), nprocs=world, join=True)
        ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]
    return {"step_ms": 1e3 * max(r["median_s"] for r in ranks), "cpu_ms": 1e3 * max(r["cpu_median_s"] for r in ranks),
            "ranks": ranks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", default="1,2", help="world sizes, comma-separated (1: one process, no group)")
    ap.add_argument("--models", default="linear8,gpt")
    ap.add_argument("--modes", default="ddp,fsdp2")
    ap.add_argument("--repeats", type=int, default=20, help="timed steps per run (after 3 warm-up steps)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of the world sizes")
    ap.add_argument("--out", type=Path, default=None, help="also write dist_step.md and dist_step.json here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    worlds = [int(w) for w in args.worlds.split(",")]
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for model_name in args.models.split(","):
        for _ in range(args.rounds):
            for world in worlds:
                for mode in (["-"] if world == 1 else args.modes.split(",")):
                    results.setdefault((model_name, mode, world), []).append(
                        run_world(model_name, mode, world, args.repeats))
    cpu = platform.processor() or platform.machine()
    lines = [f"# bench/dist_step.py {' '.join(sys.argv[1:])}", "",
             f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cpu}, {os.cpu_count()} cores; torch "
             f"{torch.__version__}; gloo, 1 thread per process; {args.repeats} steps × {args.rounds} rounds (the "
             "median over rounds of the slowest rank's median)", "",
             "| model | mode | processes | `opt.step()` ms | × one process | CPU ms (× one process) | bytes sent per "
             "rank and step (max) | collectives per step | routes |", "|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for (model_name, mode, world), runs in results.items():
        step, cpu_ms = (statistics.median(r[k] for r in runs) for k in ("step_ms", "cpu_ms"))
        ones = results.get((model_name, "-", 1), [{"step_ms": math.nan, "cpu_ms": math.nan}])
        one, one_cpu = (statistics.median(r[k] for r in ones) for k in ("step_ms", "cpu_ms"))
        last = runs[-1]["ranks"]
        sent = max(r["sent"] for r in last)
        ops = ", ".join(f"{last[0]['collectives'].count(op)} × `{op}`" for op in dict.fromkeys(last[0]["collectives"]))
        routes = ", ".join(sorted({x for r in last for x in r["routes"]}))
        rows.append({"model": model_name, "mode": mode, "world": world, "step_ms": step, "x_one": step / one,
                     "cpu_ms": cpu_ms, "cpu_x_one": cpu_ms / one_cpu,
                     "sent_bytes": sent, "collectives": last[0]["collectives"], "routes": routes,
                     "rounds_ms": [r["step_ms"] for r in runs]})
        lines.append(f"| {model_name} | {mode} | {world} | {step:.1f} | {step / one:.2f} | {cpu_ms:.1f} "
                     f"({cpu_ms / one_cpu:.2f}) | {sent:,} | {ops or '—'} "
                     f"| {routes or '—'} |")
    target = [r for r in rows if r["model"] == "linear8" and r["mode"] == "ddp" and r["world"] == 2]
    if target:
        x = target[0]["x_one"]
        lines += ["", f"Issue #29's target, the 2-rank DDP step on `linear8` at most {TARGET:.2f}× one process: "
                      f"{x:.2f}× ({'met' if x <= TARGET else 'NOT met'})."]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        from egalitarian.io import write_json, write_text

        args.out.mkdir(parents=True, exist_ok=True)
        write_text(args.out / "dist_step.md", text + "\n")
        write_json(args.out / "dist_step.json", {"argv": sys.argv[1:], "cpu": cpu, "cores": os.cpu_count(),
                                                 "torch": torch.__version__, "rows": rows, "target": TARGET})


if __name__ == "__main__":
    main()

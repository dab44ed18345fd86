"""Helpers shared by the tests that run real process groups on CPU (gloo, ``torch.multiprocessing``): test_ddp and
test_distributed.

:func:`run_ranks` starts ``world`` processes, each with a gloo group on loopback, and runs ``fn(rank, world, *args)``
in each; the workers write their results to files the test reads.  :func:`ddp_train` is the data-parallel training
run both files compare with one process (:func:`single_train`).
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from egalitarian import EGD, Preconditioned, egd_for


def run_ranks(world: int, fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` processes of one gloo group (a free loopback port); a worker
    that raises prints its traceback and fails the spawn."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_entry, args=(world, port, fn, args), nprocs=world, join=True)


def _entry(rank: int, world: int, port: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only: no traffic leaves the machine
    code = 0
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=120))  # a hung collective fails, not the suite
        fn(rank, world, *args)
        dist.barrier()  # every rank has written its results
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # gloo's teardown at interpreter exit intermittently aborts ("terminate called without an active exception")
    # on this torch build; the results are on disk, so leave without running C++ destructors.
    os._exit(code)


def comm_counts(mode: Any) -> dict[str, int]:
    """``CommDebugMode``'s counts by the collective's name (``c10d._allgather_base_``, ``c10d.alltoall_base_``, …)."""
    return {str(op): n for op, n in mode.get_comm_counts().items()}


# ---------------------------------------------------------------------------- data-parallel training


STEPS = 3
BATCH = 8


class TinyLM(nn.Module):
    """Tied embedding and head, a fused [Q; K; V] projection (egd_for splits it in 3 row blocks), an MLP."""

    def __init__(self, vocab: int = 11, d: int = 6) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)  # a key bias has gradient 0 (softmax shift): AdamW amplifies noise
        self.up = nn.Linear(d, 2 * d)
        self.down = nn.Linear(2 * d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        h = h + torch.softmax(q @ k.mT, dim=-1) @ v
        h = h + self.down(torch.tanh(self.up(h)))
        return self.head(h)


def model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "egd_for":
        return TinyLM()
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def optimizer(kind: str, m: nn.Module) -> torch.optim.Optimizer:
    if kind == "egd":
        return EGD(m.parameters(), lr=0.1, momentum=0.9)
    if kind == "egd+adamw":
        return Preconditioned(m.parameters(), torch.optim.AdamW, lr=0.01)
    return egd_for(m, lr=0.05, momentum=0.9, nesterov=True, momentum_position="before", scale="rms")


def data(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    if kind == "egd_for":
        tokens = torch.randint(0, 11, (STEPS, BATCH, 5), generator=g)
        return tokens, torch.randint(0, 11, (STEPS, BATCH, 5), generator=g)
    return torch.randn(STEPS, BATCH, 5, generator=g), torch.randint(0, 3, (STEPS, BATCH), generator=g)


def loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = m(x)
    return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))  # a mean: DDP averages means


def ddp_train(rank: int, world: int, kind: str) -> list[torch.Tensor]:
    """``STEPS`` steps of ``kind`` under DDP, each rank on its ``1/world`` of the batch; the parameters after."""
    m = nn.parallel.DistributedDataParallel(model(kind))
    opt = optimizer(kind, m.module)
    X, Y = data(kind)
    for t in range(STEPS):
        opt.zero_grad()
        loss(m, X[t].chunk(world)[rank], Y[t].chunk(world)[rank]).backward()
        opt.step()
    return [p.detach().clone() for p in m.module.parameters()]


def single_train(kind: str) -> list[torch.Tensor]:
    """The same steps in one process on the whole batch: the reference."""
    m = model(kind)
    opt = optimizer(kind, m)
    X, Y = data(kind)
    for t in range(STEPS):
        opt.zero_grad()
        loss(m, X[t], Y[t]).backward()
        opt.step()
    return [p.detach().clone() for p in m.parameters()]

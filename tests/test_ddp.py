"""EGD under DistributedDataParallel: real 2-process gloo groups on CPU.

DDP all-reduces (averages) gradients during backward(), so each rank must take the EGD step of the full-batch
mean gradient.  Reference: one process, whole batch, same loss.  With a process group, each matrix is whitened by
one rank and all-gathered (egalitarian.distributed); tests/test_distributed.py checks the split itself, here the
training runs end to end.  One spawn runs every case (the workers write their results; the tests read them).
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from dist_helpers import BATCH, ddp_train, loss, model, optimizer, run_ranks, single_train

KINDS = ("egd", "egd+adamw", "egd_for")


def _worker(rank: int, world: int, out_dir: str) -> None:
    results = {kind: ddp_train(rank, world, kind) for kind in KINDS}
    # a NaN in one rank's batch: DDP's all-reduce spreads it, every rank raises and nothing is stepped
    m = torch.nn.parallel.DistributedDataParallel(model("egd"))
    opt = optimizer("egd", m.module)
    x = torch.randn(BATCH // world, 5, generator=torch.Generator().manual_seed(rank))
    if rank == 1:
        x[0, 0] = float("nan")
    before = [p.detach().clone() for p in m.module.parameters()]
    loss(m, x, torch.zeros(BATCH // world, dtype=torch.long)).backward()
    try:
        opt.step()
        results["nan"] = "stepped"
    except FloatingPointError:
        results["nan"] = "raised"
    results["nan_unchanged"] = all(torch.equal(a, b) for a, b in zip(before, m.module.parameters(), strict=True))
    torch.save(results, f"{out_dir}/rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    run_ranks(2, _worker, str(out))
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_ddp_two_process_gloo_matches_single_process(ranks, kind):
    assert not dist.is_initialized()  # the reference runs without a process group: today's single-process code
    reference = single_train(kind)
    for r in ranks:
        for a, b in zip(r[kind], reference, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(ranks[0][kind], ranks[1][kind], strict=True):
        assert torch.equal(a, b)  # the ranks stay in lockstep: every rank holds the owner's bits


@pytest.mark.slow
def test_a_nan_on_one_rank_raises_on_every_rank_and_steps_nothing(ranks):
    assert [r["nan"] for r in ranks] == ["raised", "raised"]
    assert all(r["nan_unchanged"] for r in ranks)

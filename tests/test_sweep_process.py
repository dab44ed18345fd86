"""Sweeps across processes: kill -9 a worker and then the sweep, rerun, and every run is done exactly once
with the store consistent; the Ray backend end to end on a local Ray instance.

Reference for every run: the same config trained in one go, in-process; metrics must match exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import ENV, egd, modular_sweep, query, wait

from egalitarian.sweep import Store, expand, load_sweep
from egalitarian.sweep.execute import owner_name
from egalitarian.train import train

EPOCHS = 80  # p = 11: 60 training pairs, 7 batches of 8 per epoch; p = 13: 84 pairs, 10 batches
KILL_SWEEP = modular_sweep("kill", EPOCHS, '"task.p" = [11, 13]\nseed = [0, 1]')

RAY_SWEEP = """
[base]
task = {name = "parity", n = 6, k = 1, n_train = 64, n_test = 64}
model = {name = "mlp", hidden = 16}
loss = {name = "mse"}
optimizer = {name = "sgd", lr = 0.05}
train = {batch_size = 16, max_epochs = 60}

[sweep]
name = "ray"
baseline = "optimizer.lr=0.05"

[grid]
"optimizer.lr" = [0.05, 0.2]
seed = [0, 1]
"""


def _in_flight(store: Path, root: Path, exclude: set[int]) -> tuple[str, int] | None:
    """A run being trained (status running, a checkpoint on disk) by a worker not in ``exclude``."""
    for rid, worker in query(store, "SELECT id, worker FROM runs WHERE status='running'"):
        pid = int(worker.rsplit(":", 1)[1])
        if pid not in exclude and (root / rid / "checkpoint.pt").exists():
            return rid, pid
    return None


def _reference(config: dict, tmp: Path) -> tuple[dict, list[tuple]]:
    """The run trained in one go, in-process: (summary, metric rows)."""
    cfg = {**config, "train": {**config["train"], "checkpoint_every": 0}}  # bookkeeping only: same math
    summary = train(cfg, tmp)
    with open(tmp / "metrics.csv") as f:
        next(f)
        rows = [(int(s), int(e), sp, m, float(v)) for s, e, sp, m, v in (ln.rstrip().split(",") for ln in f)]
    return summary, rows


@pytest.mark.slow
def test_kill_a_worker_and_the_sweep_then_rerun_finishes_every_run_exactly_once(tmp_path):
    (tmp_path / "kill.toml").write_text(KILL_SWEEP)
    sweep = load_sweep(tmp_path / "kill.toml")
    store, root = tmp_path / "sweeps" / "kill.sqlite", tmp_path / "sweeps" / "kill"
    proc = subprocess.Popen(
        egd("sweep", "kill.toml", "--workers", "2"),
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # 1. kill -9 a worker in the middle of a run; the sweep puts the run back and starts a new worker
        first, worker = wait(lambda: _in_flight(store, root, set()), "a run to checkpoint", proc)
        os.kill(worker, signal.SIGKILL)
        wait(
            lambda: query(store, f"SELECT 1 FROM runs WHERE id='{first}' AND worker IS NOT '{owner_name(worker)}'"),
            "the sweep to release the killed worker's run",
            proc,
        )
        # 2. kill -9 the sweep itself while runs are in flight
        wait(lambda: _in_flight(store, root, {worker}), "another run in flight", proc)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # its workers notice (SIGTERM from the kernel on Linux), checkpoint and put their runs back
    wait(lambda: not query(store, "SELECT 1 FROM runs WHERE status='running'"), "the orphaned workers to stop")
    left = query(store, "SELECT count(*) FROM runs WHERE status!='done'")[0][0]
    assert left >= 1, "the sweep finished before it was killed: nothing was tested"

    # 3. rerun: everything finishes
    out = subprocess.run(
        egd("sweep", "kill.toml", "--workers", "2"), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "done 4, failed 0, running 0, pending 0" in out.stdout

    with Store(store, create=False) as st:
        runs = {r["id"]: r for r in st.runs()}
        assert sorted(runs) == sorted(r.id for r in sweep.runs)
        assert all(r["status"] == "done" and r["error"] is None for r in runs.values())
        attempts = {rid: r["attempts"] for rid, r in runs.items()}
        assert attempts[first] >= 2 and min(attempts.values()) >= 1
        # each kill loses at most the runs in flight: 1 for the worker, 2 for the sweep
        assert sum(attempts.values()) <= len(runs) + 1 + 2, attempts
        for r in sweep.runs:
            rows = st.metrics(r.id)
            # by hand: step 0 has test loss and accuracy only (no training batch yet); each epoch adds train
            # and test loss and accuracy
            assert len(rows) == 2 + 4 * EPOCHS, (r.id, len(rows))
            assert len({(m.step, m.split, m.metric) for m in rows}) == len(rows)  # no duplicates
            s = runs[r.id]["summary"]
            per_epoch = {11: 60 // 8, 13: 84 // 8}[r.params["task.p"]]
            assert (s["epochs"], s["steps"]) == (EPOCHS, EPOCHS * per_epoch)
        # the interrupted run resumed to the same numbers as an uninterrupted one
        (first_run,) = [r for r in sweep.runs if r.id == first]
        got = [tuple(m) for m in st.metrics(first)]
        assert got == _reference(first_run.config, tmp_path / "reference")[1]
    assert query(store, "PRAGMA integrity_check") == [("ok",)]
    assert query(store, "SELECT count(*) FROM metrics WHERE run_id NOT IN (SELECT id FROM runs)") == [(0,)]


@pytest.mark.slow
def test_ray_backend_end_to_end_on_a_local_instance(tmp_path):
    pytest.importorskip("ray")
    (tmp_path / "ray.toml").write_text(RAY_SWEEP)
    sweep = load_sweep(tmp_path / "ray.toml")
    out = subprocess.run(
        egd("sweep", "ray.toml", "--backend", "ray", "--workers", "2"),
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "done 4, failed 0" in out.stdout and "(baseline)" in out.stdout
    with Store(tmp_path / "sweeps" / "ray.sqlite", create=False) as st:
        runs = {r["id"]: r for r in st.runs()}
        assert all(r["status"] == "done" and r["attempts"] == 1 for r in runs.values())
        assert all(r["worker"].startswith("ray:") for r in runs.values())
        for r in sweep.runs:
            expected, expected_rows = _reference(r.config, tmp_path / "reference" / r.id)
            got = runs[r.id]["summary"]
            assert (got["grok"] or {}).get("step") == (expected["grok"] or {}).get("step")
            assert (got["steps"], got["status"]) == (expected["steps"], expected["status"])
            rows = [tuple(m) for m in st.metrics(r.id)]
            assert rows == expected_rows
    # a second run has nothing to do and starts no Ray at all
    again = subprocess.run(
        egd("sweep", "ray.toml", "--backend", "ray"),
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "Ray" not in again.stderr and "done 4" in again.stdout


WRITER = """
import json, pathlib, sys, time
from egalitarian.sweep.store import Store

store, ids, me = Store(sys.argv[1], create=False), json.loads(sys.argv[2]), sys.argv[3]
go = pathlib.Path(sys.argv[1]).with_name("go")
pathlib.Path(sys.argv[1]).with_name("ready-" + me).touch()
while not go.exists():  # all writers start together
    time.sleep(0.001)
while (claim := store.claim(ids, me)) is not None:
    time.sleep(0.01)  # "training"
    store.finish(claim[0], me, {"by": me}, [(s, 0, "test", "acc", 0.5) for s in range(200)])
"""


def test_concurrent_writers_claim_and_finish_each_run_once(tmp_path):
    base = {
        "task": {"name": "modular", "p": 7},
        "model": {"name": "mlp", "hidden": 8},
        "optimizer": {"name": "sgd", "lr": 0.1},
    }
    runs = expand(base, {"seed": list(range(40))})
    ids = [r.id for r in runs]
    path = tmp_path / "c.sqlite"
    with Store(path) as st:
        st.add("c", runs)
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), json.dumps(ids), f"w{i}"], env=ENV) for i in range(3)
    ]
    wait(lambda: len(list(tmp_path.glob("ready-*"))) == 3, "the writers to start")
    (tmp_path / "go").touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    with Store(path, create=False) as st:
        rows = st.runs()
        assert all(r["status"] == "done" and r["attempts"] == 1 and r["summary"]["by"] == r["worker"] for r in rows)
        assert all(len(st.metrics(i)) == 200 for i in ids)
        assert len({r["worker"] for r in rows}) >= 2  # they did write concurrently
    assert query(path, "SELECT count(*) FROM metrics") == [(40 * 200,)]
    assert query(path, "PRAGMA integrity_check") == [("ok",)]

"""SIGTERM / SIGINT to a running `egd sweep`: it stops cleanly (exit 130), gives the runs in flight back,
leaves the store consistent, and a rerun finishes every run exactly once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

EPOCHS = 60
SWEEP = f"""
[base]
task = {{name = "modular", p = 11}}
model = {{name = "mlp", hidden = 32}}
optimizer = {{name = "sgd", lr = 0.5}}
train = {{batch_size = 8, max_epochs = {EPOCHS}, checkpoint_every = 1, stop_after_grok = false}}

[sweep]
name = "sig"

[grid]
seed = [0, 1, 2]
"""


def _query(store, sql):
    if not store.exists():
        return []
    con = sqlite3.connect(store, timeout=30)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_sweep_cleanly_and_a_rerun_completes(tmp_path, sig):
    (tmp_path / "sig.toml").write_text(SWEEP)
    store = tmp_path / "sweeps" / "sig.sqlite"
    cmd = [sys.executable, "-m", "egalitarian.cli", "sweep", "sig.toml", "--workers", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not any((tmp_path / "sweeps" / "sig" / rid / "checkpoint.pt").exists()
                  for (rid,) in _query(store, "SELECT id FROM runs WHERE status='running'")):
        assert proc.poll() is None, proc.communicate()
        if time.time() > deadline:  # a hang guard, not a performance check
            pytest.fail("no run ever got going")
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert _query(store, "SELECT count(*) FROM runs WHERE status='running'") == [(0,)]  # runs given back
    assert _query(store, "PRAGMA integrity_check") == [("ok",)]
    done_before = _query(store, "SELECT count(*) FROM runs WHERE status='done'")[0][0]
    assert done_before < 3

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _query(store, "SELECT status, count(*) FROM runs GROUP BY status") == [("done", 3)]
    # each run's metrics exactly once: step 0 (test loss, acc) + every epoch (train and test loss, acc)
    per_run = _query(store, "SELECT run_id, count(*) FROM metrics GROUP BY run_id")
    assert sorted(n for _, n in per_run) == [2 + 4 * EPOCHS] * 3

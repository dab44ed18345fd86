"""SIGTERM / SIGINT to a running `egd sweep`: it stops cleanly (exit 130), gives the runs in flight back,
leaves the store consistent, and a rerun finishes every run exactly once."""

from __future__ import annotations

import signal
import subprocess

import pytest
from sweep_helpers import ENV, egd, modular_sweep, query, wait

EPOCHS = 60
SWEEP = modular_sweep("sig", EPOCHS, "seed = [0, 1, 2]")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_sweep_cleanly_and_a_rerun_completes(tmp_path, sig):
    (tmp_path / "sig.toml").write_text(SWEEP)
    store = tmp_path / "sweeps" / "sig.sqlite"
    cmd = egd("sweep", "sig.toml", "--workers", "2")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait(lambda: any((tmp_path / "sweeps" / "sig" / rid / "checkpoint.pt").exists()
                     for (rid,) in query(store, "SELECT id FROM runs WHERE status='running'")),
         "a run to get going", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert query(store, "SELECT count(*) FROM runs WHERE status='running'") == [(0,)]  # runs given back
    assert query(store, "PRAGMA integrity_check") == [("ok",)]
    done_before = query(store, "SELECT count(*) FROM runs WHERE status='done'")[0][0]
    assert done_before < 3

    rerun = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert query(store, "SELECT status, count(*) FROM runs GROUP BY status") == [("done", 3)]
    # each run's metrics exactly once: step 0 (test loss, acc) + every epoch (train and test loss, acc)
    per_run = query(store, "SELECT run_id, count(*) FROM metrics GROUP BY run_id")
    assert sorted(n for _, n in per_run) == [2 + 4 * EPOCHS] * 3

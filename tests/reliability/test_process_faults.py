"""Process faults: SIGTERM/SIGINT save and exit cleanly, kill -9 loses at most the progress since the last
checkpoint, a full disk is reported and leaves the previous files intact.

Reference for every resume: the same config trained in one go, in-process; parameters must match bitwise.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from egalitarian import io as fio
from egalitarian.cli import main
from egalitarian.train import train

CONFIG = """
[task]
name = "modular"
p = 23
op = "add"
train_frac = 0.5
[model]
name = "mlp"
hidden = 64
[optimizer]
name = "egd"
lr = 0.3
momentum = 0.9
[train]
batch_size = 32
max_epochs = 100000
stop_after_grok = false
threads = 1
progress = "off"
checkpoint_every = 1
"""


def _cfg(max_epochs: int) -> dict:
    import tomllib

    cfg = tomllib.loads(CONFIG)
    cfg["train"]["max_epochs"] = max_epochs
    return cfg


def _egd(*args: str) -> list[str]:
    return [sys.executable, "-m", "egalitarian.cli", *args]


def _start(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(CONFIG)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_egd("run", "--config", str(cfg_path), "--out", str(out)), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "checkpoint.pt").exists():  # training has started and checkpointed at least once
        assert proc.poll() is None, proc.communicate()
        if time.time() > deadline:  # a hang guard, not a performance check
            pytest.fail("the run never checkpointed")
        time.sleep(0.05)
    time.sleep(0.5)
    return proc, out


def _params(run_dir: Path) -> list[torch.Tensor]:
    ck = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    return list(ck["model"].values())


def _resume_and_compare(tmp_path: Path, out: Path) -> None:
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    target = ck["loop"]["epoch"] + 2
    cfg_path = tmp_path / "cfg.toml"
    rc = main(["run", "--config", str(cfg_path), "--out", str(out), "--resume", "--set", f"train.max_epochs={target}"])
    assert rc == 0
    ref = tmp_path / "reference"
    train(_cfg(target), ref)
    for a, b in zip(_params(out), _params(ref), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_state_exits_cleanly_and_resumes_bit_identically(tmp_path, sig):
    proc, out = _start(tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"stopped by {signal.Signals(sig).name}" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ck["loop"]["step"] == summary["steps"]  # the state at the moment of the signal, not an older one
    _resume_and_compare(tmp_path, out)


@pytest.mark.slow
def test_kill_9_loses_at_most_the_progress_since_the_last_checkpoint(tmp_path):
    proc, out = _start(tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)  # loads: never half-written
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,split,metric,value" and all(r.count(",") == 4 for r in rows)
    assert ck["loop"]["epoch"] >= 1
    _resume_and_compare(tmp_path, out)


def test_full_disk_is_reported_and_the_old_file_survives(tmp_path, monkeypatch, capsys):
    target = tmp_path / "summary.json"
    fio.write_json(target, {"old": True})

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left on device") as info:
        fio.write_json(target, {"new": True})
    assert str(target) in str(info.value)
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left behind

    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(CONFIG.replace("max_epochs = 100000", "max_epochs = 1"))
    rc = main(["run", "--config", str(cfg_path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "Traceback" not in err

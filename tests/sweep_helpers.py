"""Helpers shared by the tests that drive `egd sweep` in real processes (test_sweep_process, test_sweep_signals)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def egd(*args: str) -> list[str]:
    """The command line of ``egd ARGS`` with this interpreter."""
    return [sys.executable, "-m", "egalitarian.cli", *args]


def modular_sweep(name: str, epochs: int, grid: str) -> str:
    """A sweep TOML: SGD on a tiny modular task (p = 11 unless the grid sets it), checkpointing every epoch."""
    return f"""
[base]
task = {{name = "modular", p = 11}}
model = {{name = "mlp", hidden = 32}}
optimizer = {{name = "sgd", lr = 0.5}}
train = {{batch_size = 8, max_epochs = {epochs}, checkpoint_every = 1, stop_after_grok = false}}

[sweep]
name = "{name}"

[grid]
{grid}
"""


def query(store: Path, sql: str) -> list[tuple]:
    """Read the store from outside (a plain sqlite3 connection); [] while it does not exist yet."""
    if not store.exists():
        return []
    con = sqlite3.connect(store, timeout=30)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the tables are being created
        return []
    finally:
        con.close()


def wait(pred, what: str, proc: subprocess.Popen | None = None, timeout: float = 90.0):
    """Poll ``pred`` until it is truthy; fail if ``proc`` exits first or after ``timeout`` (a hang guard)."""
    deadline = time.time() + timeout
    while not (value := pred()):
        assert proc is None or proc.poll() is None, (what, proc.communicate())
        if time.time() > deadline:  # a hang guard, not a performance check
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value

"""`egd sweep --backend ray --address` joining a running head node that has Ray's token authentication on.

A real head node (`ray start --head --block`, 1 CPU, its own temp dir and HOME) is started here with
RAY_AUTH_MODE=token and a token in RAY_AUTH_TOKEN, and stopped by its pid (SIGTERM: `--block` then stops
everything it started).  Without the token the driver is refused; with it the sweep runs on the cluster.
About 40 s, most of it Ray's 20 s of connection retries in the refused case.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sweep_helpers import ENV, egd

from egalitarian.sweep import Store

SWEEP = """
[base]
task = {name = "parity", n = 6, k = 1, n_train = 64, n_test = 64}
model = {name = "mlp", hidden = 16}
loss = {name = "mse"}
optimizer = {name = "sgd", lr = 0.05}
train = {batch_size = 16, max_epochs = 20}

[sweep]
name = "cluster"

[grid]
seed = [0, 1]
"""

TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    """A token-authenticated Ray head node on 127.0.0.1; yields (address, environment without the token)."""
    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip("no `ray` command next to this interpreter")
    home = tmp_path / "home"  # never read or write the user's ~/.ray/auth_token
    home.mkdir()
    base = {k: v for k, v in ENV.items() if k not in AUTH_VARS} | {"HOME": str(home)}
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix socket paths must fit 107 bytes
    port = _free_port()
    log = (tmp_path / "head.log").open("w")
    proc = subprocess.Popen(
        [str(ray_cli), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}", "--block"],
        env=base | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 60  # a hang guard, not a performance check
        while "Ray runtime started" not in (tmp_path / "head.log").read_text():
            if proc.poll() is not None:  # `ray start` exited: no Ray head node can run on this machine
                pytest.skip(f"no Ray head node here: {(tmp_path / 'head.log').read_text()[-500:]}")
            if time.time() > deadline:  # still starting after a minute: a hang, not a slow machine
                pytest.fail(f"the Ray head node did not start: {(tmp_path / 'head.log').read_text()[-500:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}", base
    finally:
        proc.terminate()  # `ray start --block` stops the processes it started on SIGTERM
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the session this test created, nothing else
            proc.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_sweep_joins_a_cluster_with_token_authentication(tmp_path, head):
    address, env = head
    (tmp_path / "cluster.toml").write_text(SWEEP)
    cmd = egd("sweep", "cluster.toml", "--backend", "ray", "--address", address)

    refused = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert refused.returncode != 0
    assert "Authentication token is missing or incorrect" in refused.stderr  # the head does check tokens

    joined = subprocess.run(cmd, cwd=tmp_path, env=env | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN},
                            capture_output=True, text=True, timeout=180)
    assert joined.returncode == 0, joined.stderr
    assert "done 2, failed 0" in joined.stdout
    assert "Connected to Ray cluster" in joined.stderr  # joined the head node, started no local instance
    with Store(tmp_path / "sweeps" / "cluster.sqlite", create=False) as st:
        runs = st.runs()
        assert len(runs) == 2 and all(r["status"] == "done" and r["worker"].startswith("ray:") for r in runs)

"""The sweep lock (filelock): one `egd sweep` per store, across processes; the refusal names the holder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from egalitarian.errors import ConfigError
from egalitarian.sweep.execute import sweep_lock

HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from egalitarian.sweep.execute import sweep_lock
    with sweep_lock(Path(sys.argv[1])):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes our stdin
""")


def test_a_second_sweep_on_the_same_store_is_refused_and_told_who_holds_it(tmp_path):
    store = tmp_path / "s.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"in use by another `egd sweep` \(pid {proc.pid} on "
                                              rf"{socket.gethostname()}\)"):
            with sweep_lock(store):
                pass
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    with sweep_lock(store):  # released when its holder ends
        assert (tmp_path / "s.sqlite.lock.owner").read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"
    assert not (tmp_path / "s.sqlite.lock.owner").exists()


def test_a_killed_holder_releases_the_lock(tmp_path):
    store = tmp_path / "s.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()  # SIGKILL on POSIX: no finally block runs, the OS drops the lock
    proc.wait(timeout=30)
    proc.stdin.close()
    with sweep_lock(store):
        pass


def test_the_lock_is_held_within_one_process_too(tmp_path):
    store = tmp_path / "s.sqlite"
    with sweep_lock(store):
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            with sweep_lock(store):
                pass

"""Single runs as safe as sweeps (issue #14): threads, run directories (no silent overwrite, a lock, names that
follow --set), bad input that used to escape as a traceback, and the README's own `egd` lines.

Expected directory names, thread counts and messages are worked out by hand here, not taken from earlier output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from egalitarian import io as fio
from egalitarian import rundir
from egalitarian.cli import main
from egalitarian.config import TRAIN_DEFAULTS
from egalitarian.errors import ConfigError
from egalitarian.sweep.store import Store
from egalitarian.train import train

README = Path(__file__).resolve().parents[2] / "README.md"
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

# (a + b) mod 7, half of the 49 pairs for training: 24 rows, batch 8 -> 3 steps per epoch; MLP 14 -> 16 -> 7
TINY = """\
name = "tiny"
[task]
name = "modular"
p = 7
train_frac = 0.5
[model]
name = "mlp"
hidden = 16
[optimizer]
name = "sgd"
lr = 0.5
[train]
batch_size = 8
max_epochs = 2
progress = "off"
"""


@pytest.fixture(autouse=True)
def _no_thread_override(monkeypatch):
    monkeypatch.delenv("EGD_THREADS", raising=False)  # a developer's own setting would override train.threads


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _error(capsys, *argv: str, code: int = 2) -> str:
    """Run ``egd ARGV``; it must exit ``code`` with exactly one line on stderr besides the informational ones
    (``egd run``'s directory, ``egd sweep``'s run count), no traceback."""
    got, out, err = _run(capsys, *argv)
    assert got == code, (got, out, err)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("egd: run directory:", "sweep s: "))]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------------------------- threads


def _threads_seen(cfg_or_path, run_dir: Path) -> tuple[list[int], dict]:
    seen: list[int] = []
    summary = train(cfg_or_path, run_dir, on_eval=lambda step, m: seen.append(torch.get_num_threads()))
    return seen, summary


def _tiny_cfg(**train_fields) -> dict:
    import tomllib

    cfg = tomllib.loads(TINY)
    cfg["train"].update(train_fields)
    return cfg


def test_threads_auto_means_one_thread_and_the_callers_setting_comes_back(tmp_path):
    before = torch.get_num_threads()
    start = 2 if CORES >= 2 else 1
    torch.set_num_threads(start)
    try:
        seen, summary = _threads_seen(_tiny_cfg(), tmp_path / "r")  # train.threads = 0 (the default)
        assert TRAIN_DEFAULTS["threads"] == 0
        assert set(seen) == {1} and summary["threads"] == 1
        assert torch.get_num_threads() == start
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(CORES < 2, reason="needs 2 cores")
def test_threads_asked_for_are_used_and_the_environment_overrides_the_config(tmp_path, monkeypatch):
    seen, summary = _threads_seen(_tiny_cfg(threads=2), tmp_path / "a")
    assert set(seen) == {2} and summary["threads"] == 2
    monkeypatch.setenv("EGD_THREADS", "1")
    seen, summary = _threads_seen(_tiny_cfg(threads=2), tmp_path / "b")
    assert set(seen) == {1} and summary["threads"] == 1


def test_more_threads_than_cores_is_refused(tmp_path, monkeypatch, capsys, tiny):
    with pytest.raises(ConfigError) as e:
        train(_tiny_cfg(threads=CORES + 1), tmp_path / "r")
    assert str(e.value) == (f"train.threads = {CORES + 1}: must be at most {CORES}, the cores this process may use "
                            "(0 = auto: 1 thread)")
    line = _error(capsys, "run", "--config", str(tiny), "--threads", str(CORES + 1), "--out", str(tmp_path / "c"))
    assert line == f"egd: error: --threads {CORES + 1}: must be from 1 to {CORES}, the cores this process may use"
    assert _error(capsys, "run", "--config", str(tiny), "--threads", "0", "--out", str(tmp_path / "c")).startswith(
        "egd: error: --threads 0: must be from 1 to")
    monkeypatch.setenv("EGD_THREADS", "many")
    with pytest.raises(ConfigError, match=r"^EGD_THREADS \(--threads\) = 'many': must be an integer from 1 to"):
        train(_tiny_cfg(), tmp_path / "e")


def test_run_threads_flag_is_used_and_does_not_leak(tmp_path, capsys, tiny):
    out = tmp_path / "r"
    code, _, err = _run(capsys, "run", "--config", str(tiny), "--threads", "1", "--out", str(out))
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["threads"] == 1
    assert "EGD_THREADS" not in os.environ


@pytest.mark.skipif(CORES < 2, reason="needs 2 cores")
def test_sweep_threads_reach_the_workers_environment_and_divide_the_default_workers(tmp_path, capsys, monkeypatch):
    import egalitarian.cli as cli
    import egalitarian.sweep as sweep_pkg

    seen = {}

    def fake_run_sweep(sweep, *, workers=None, backend="local", address=None):
        seen.update(env=os.environ.get("EGD_THREADS"), workers=workers)  # workers inherit this environment
        return {"done": len(sweep.runs), "failed": 0, "running": 0, "pending": 0}

    monkeypatch.setattr(sweep_pkg, "run_sweep", fake_run_sweep)
    monkeypatch.setattr(cli, "_sweep_report", lambda *a, **k: 0)
    monkeypatch.chdir(tmp_path)
    Path("s.toml").write_text(_SWEEP.format(store="out/s.sqlite"))
    assert _run(capsys, "sweep", "s.toml", "--threads", "2")[0] == 0
    assert seen == {"env": "2", "workers": CORES // 2}
    assert _run(capsys, "sweep", "s.toml", "--threads", "1", "--workers", "3")[0] == 0
    assert seen == {"env": "1", "workers": 3}
    assert "EGD_THREADS" not in os.environ
    line = _error(capsys, "sweep", "s.toml", "--threads", str(CORES + 1))
    assert line == f"egd: error: --threads {CORES + 1}: must be from 1 to {CORES}, the cores this process may use"


# ------------------------------------------------------------------------------------------ run directories


def test_a_finished_or_interrupted_run_is_never_overwritten_silently(tmp_path, capsys, tiny):
    out = tmp_path / "r"
    assert _run(capsys, "run", "--config", str(tiny), "--out", str(out))[0] == 0
    files = {n: (out / n).read_bytes() for n in rundir.RUN_FILES}
    line = _error(capsys, "run", "--config", str(tiny), "--out", str(out))
    assert line == (f"egd: error: run directory {str(out)!r} already holds a run (status 'budget'); use --resume "
                    "to continue it, --overwrite to replace it, or --out for another directory")
    assert {n: (out / n).read_bytes() for n in rundir.RUN_FILES} == files
    # killed before its summary: the checkpoint alone counts
    (out / "summary.json").unlink()
    line = _error(capsys, "run", "--config", str(tiny), "--out", str(out))
    assert "already holds a run (checkpoint.pt, no summary.json)" in line
    assert (out / "checkpoint.pt").read_bytes() == files["checkpoint.pt"]


def test_overwrite_removes_the_old_run_first_and_keeps_other_files(tmp_path, capsys, tiny):
    out = tmp_path / "r"
    assert _run(capsys, "run", "--config", str(tiny), "--set", "train.max_epochs=3", "--out", str(out))[0] == 0
    (out / "notes.txt").write_text("mine")
    # a new run that fails while building its model: the old run's files are gone already
    line = _error(capsys, "run", "--config", str(tiny), "--set", "model.hidden=0", "--out", str(out), "--overwrite")
    assert "model.hidden = 0" in line
    assert not any((out / n).exists() for n in rundir.RUN_FILES)
    assert (out / "notes.txt").read_text() == "mine"
    assert _run(capsys, "run", "--config", str(tiny), "--out", str(out), "--overwrite")[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["epochs"] == 2  # 2 epochs x 3 steps, not the old 9 steps
    assert max(int(r.split(",")[0]) for r in (out / "metrics.csv").read_text().splitlines()[1:]) == 6


def test_resume_needs_a_checkpoint_and_excludes_overwrite(tmp_path, capsys, tiny):
    out = tmp_path / "r"
    line = _error(capsys, "run", "--config", str(tiny), "--out", str(out), "--resume")
    assert line == (f"egd: error: --resume: run directory {str(out)!r} holds no checkpoint.pt to continue from; "
                    "run without --resume to start the run")
    assert not out.exists()
    line = _error(capsys, "run", "--config", str(tiny), "--out", str(out), "--resume", "--overwrite")
    assert line.startswith("egd: error: --resume --overwrite: choose one")


def _trajectory_hash(run_dir: Path) -> str:
    """By hand: SHA-256 of the resolved config (config.json) without the budget and bookkeeping fields of
    [train], as canonical JSON (sorted keys, no spaces); the first 8 hex digits."""
    cfg = json.loads((run_dir / "config.json").read_text())["config"]
    for key in ("max_steps", "max_epochs", "max_seconds", "chance_patience", "chance_threshold", "max_skip_fraction",
                "checkpoint_every", "checkpoint_seconds", "progress", "threads"):
        cfg["train"].pop(key, None)
    text = json.dumps(cfg, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:8]


def test_the_default_directory_follows_what_set_changes(tmp_path, capsys, monkeypatch, tiny):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, "run", "--config", str(tiny))
    assert code == 0 and "egd: run directory: runs/tiny\n" in err
    # an override that changes the trajectory: a directory of its own, named by the config's hash
    code, out, err = _run(capsys, "run", "--config", str(tiny), "--set", "optimizer.lr=0.25")
    assert code == 0
    (made,) = [p for p in Path("runs").iterdir() if p.name != "tiny"]
    assert made.name == f"tiny-{_trajectory_hash(made)}" and f"egd: run directory: runs/{made.name}" in err
    assert json.loads((made / "config.json").read_text())["config"]["optimizer"]["lr"] == 0.25
    # budgets and bookkeeping, or a value equal to the file's: the same directory as without --set
    for sets in (["train.max_epochs=3"], ["train.progress=\"off\"", "train.threads=1"], ["optimizer.lr=0.5"]):
        argv = ["run", "--config", str(tiny)] + [a for s in sets for a in ("--set", s)]
        line = _error(capsys, *argv)
        assert line.startswith("egd: error: run directory 'runs/tiny' already holds a run"), (sets, line)
    # which is what makes a larger budget a --resume of the same run
    assert _run(capsys, "run", "--config", str(tiny), "--set", "train.max_epochs=3", "--resume")[0] == 0
    assert json.loads(Path("runs/tiny/summary.json").read_text())["epochs"] == 3


_HOLDER = """
import sys
from egalitarian import rundir
with rundir.lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def test_a_second_run_into_a_locked_directory_names_the_pid(tmp_path, capsys, tiny):
    out = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = _error(capsys, "run", "--config", str(tiny), "--out", str(out))
        assert line.startswith(f"egd: error: run directory {str(out)!r} is in use by another egd run "
                               f"(pid {holder.pid} on ")
        assert not (out / "summary.json").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not (out / rundir.LOCK_OWNER).exists()  # the holder cleaned up; the lock is free again
    assert _run(capsys, "run", "--config", str(tiny), "--out", str(out))[0] == 0


def _readme_commands() -> list[str]:
    """The `egd ...` lines of the README's block after "After `make demo`, the `egd` command ..."."""
    text = README.read_text()
    start = text.index("After `make demo`, the `egd` command")
    block = text[text.index("```bash\n", start) + len("```bash\n"):]
    block = block[: block.index("```")]
    return [ln for ln in block.splitlines() if ln.startswith("egd ")]


def test_the_readme_commands_work_as_written(tmp_path, capsys, monkeypatch):
    """Every `egd` line of that README block exits 0, in order, in an empty directory.  What the test changes:
    budgets only, which do not change a run's directory: `train.max_epochs=20000` becomes 2 (3 on the --resume
    line, so that it trains one more epoch), and a run line with no budget gets `--set train.max_epochs=1`."""
    commands = _readme_commands()
    assert len([c for c in commands if c.startswith("egd run")]) == 3 and any("--resume" in c for c in commands)
    monkeypatch.chdir(tmp_path)
    for line in commands:
        argv = shlex.split(line, comments=True)[1:]
        if argv[0] == "run":
            budget = "3" if "--resume" in argv else "2"
            argv = [a.replace("train.max_epochs=20000", f"train.max_epochs={budget}") for a in argv]
            if not any(a.startswith("train.max_epochs=") for a in argv):
                argv += ["--set", "train.max_epochs=1"]
        code, out, err = _run(capsys, *argv)
        assert code == 0, (line, out, err)
    assert json.loads(Path("runs/mod-add-p97-egd/summary.json").read_text())["epochs"] == 1  # as the comment says
    (seeded,) = Path("runs").glob("mod-add-p97-sgd-*")  # the --set seed run and its resumption: one directory
    summary = json.loads((seeded / "summary.json").read_text())
    assert summary["epochs"] == 3  # continued from epoch 2, not started over
    epochs = [int(r.split(",")[1]) for r in (seeded / "metrics.csv").read_text().splitlines()[1:]
              if r.split(",")[2:4] == ["test", "acc"]]
    assert epochs == [0, 1, 2, 3]  # each evaluation once


# ------------------------------------------------------------------------------ bad input: exit 2, one line


def test_a_binary_config_file_is_named(tmp_path, capsys):
    path = tmp_path / "model.toml"
    path.write_bytes(b"\xff\xfe\x00\x81binary" * 10)
    line = _error(capsys, "run", "--config", str(path), "--out", str(tmp_path / "r"))
    assert line == (f"egd: error: config file {str(path)!r} is not UTF-8 text (byte 0: b'\\xff'); "
                    "expected a TOML file")


def test_a_config_that_is_a_directory_is_named(tmp_path, capsys):
    line = _error(capsys, "run", "--config", str(tmp_path), "--out", str(tmp_path / "r"))
    assert line == f"egd: error: config file {str(tmp_path)!r} is a directory; expected a TOML file"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("optimizer.rank=0", "optimizer.rank = 0: must be an integer >= 1"),
        ("optimizer.power_iters=-1", "optimizer.power_iters = -1: must be an integer >= 0"),
        # W1 is 16 x 14 and W2 7 x 16: min(m, n) is 14 and 7, so 14 is the largest rank any matrix uses
        ("optimizer.rank=15", "optimizer.rank = 15: must be at most 14, the largest min(m, n) of the whitened "
                              "matrices (layers.0.weight: 16 x 14)"),
        ("optimizer.rank=100000", "optimizer.rank = 100000: must be at most 14"),
    ],
)
def test_rank_and_power_iters_are_checked_when_the_optimizer_is_built(tmp_path, capsys, tiny, setting, message):
    out = tmp_path / "r"
    line = _error(capsys, "run", "--config", str(tiny), "--set", "optimizer.name=egd_rsvd", "--set", setting,
                  "--out", str(out))
    assert line.startswith(f"egd: error: {message}"), line
    assert not (out / "checkpoint.pt").exists()  # refused before any step


def test_the_largest_rank_a_matrix_uses_is_accepted(tmp_path, capsys, tiny):
    for name in ("egd_rsvd", "egd_adam", "egd_grokfast"):
        argv = ["run", "--config", str(tiny), "--set", f"optimizer.name={name}", "--set", "optimizer.rank=14"]
        assert _run(capsys, *argv, "--out", str(tmp_path / name))[0] == 0, name
        line = _error(capsys, *argv[:-1], "optimizer.rank=15", "--out", str(tmp_path / f"{name}-15"))
        assert "must be at most 14" in line, (name, line)


def _checkpointed_run(capsys, tiny: Path, out: Path) -> bytes:
    assert _run(capsys, "run", "--config", str(tiny), "--out", str(out))[0] == 0
    return (out / "checkpoint.pt").read_bytes()


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "not_a_checkpoint"])
def test_a_damaged_checkpoint_on_resume_is_named(tmp_path, capsys, tiny, damage):
    out = tmp_path / "r"
    good = _checkpointed_run(capsys, tiny, out)
    ckpt = out / "checkpoint.pt"
    if damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "truncated":
        ckpt.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        ckpt.write_bytes(b"this is no checkpoint\n" * 100)
    else:
        torch.save({"weights": torch.zeros(3)}, ckpt)
    line = _error(capsys, "run", "--config", str(tiny), "--set", "train.max_epochs=3", "--out", str(out), "--resume")
    assert line.startswith(f"egd: error: checkpoint {str(ckpt)!r} cannot be read (")
    assert line.endswith("it is empty, truncated or corrupt; start the run over (egd run --overwrite) or resume "
                         "from a copy")


_SWEEP = """
[base]
task = {{name = "modular", p = 7}}
model = {{name = "mlp", hidden = 8}}
optimizer = {{name = "sgd", lr = 0.1}}
train = {{max_epochs = 2, batch_size = 8}}
[sweep]
name = "s"
store = "{store}"
[grid]
seed = [0, 1]
"""


class _Planned:
    def __init__(self, i: int):
        self.id, self.group, self.label = f"run{i:04d}", "g", "label" * 10
        self.params, self.config = {"i": i}, {"pad": "x" * 300}


def _damaged_store(path: Path) -> None:
    """A real store with 200 runs (24 pages), then garbage over the start of every page after the first two."""
    with Store(path) as store:
        store.add("s", [_Planned(i) for i in range(200)])
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    for offset in range(2 * 4096, len(data), 4096):
        data[offset:offset + 64] = b"\xde\xad" * 32
    path.write_bytes(bytes(data))
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):  # what sqlite3 says about it
        sqlite3.connect(path).execute("SELECT * FROM runs").fetchall()


def test_a_damaged_results_store_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Path("out/s.sqlite")
    store.parent.mkdir()
    _damaged_store(store)
    Path("s.toml").write_text(_SWEEP.format(store=store))
    expected = (f"egd: error: results store {str(store)!r} is damaged (database disk image is malformed); restore "
                "it from a copy, or move it away and run the sweep again (its runs resume from the checkpoints in "
                "their run directories)")
    for argv in (["results", str(store)], ["sweep", "status", str(store)], ["sweep", "s.toml"]):
        assert _error(capsys, *argv) == expected, argv
    assert not Path("runs").exists()  # the sweep started nothing


def test_a_failed_checkpoint_write_is_an_oserror_naming_the_file(tmp_path, capsys, monkeypatch, tiny):
    target = tmp_path / "checkpoint.pt"
    fio.torch_save(target, {"old": torch.ones(2)})
    old = target.read_bytes()

    def full_disk(obj, f, *args, **kwargs):  # what torch.save raises when the disk fills up mid-write
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4480 vs 4368")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as e:
        fio.torch_save(target, {"new": torch.zeros(2)})
    assert str(target) in str(e.value) and "inline_container.cc" in str(e.value) and "disk full" in str(e.value)
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "tiny.toml"]  # no temporary file
    out = tmp_path / "r"
    line = _error(capsys, "run", "--config", str(tiny), "--out", str(out))
    assert str(out / "checkpoint.pt") in line and "is the disk full?" in line


def test_ctrl_c_before_training_exits_130_with_one_line(tmp_path, capsys, monkeypatch, tiny):
    import egalitarian.train as trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "build_run", interrupted)  # Ctrl-C while the model is being built
    out = tmp_path / "r"
    code, _, err = _run(capsys, "run", "--config", str(tiny), "--out", str(out))
    assert code == 130 and err.strip() == "egd: interrupted", err
    monkeypatch.undo()
    assert _run(capsys, "run", "--config", str(tiny), "--out", str(out))[0] == 0  # the lock was released


_CTRL_C_DURING_IMPORTS = textwrap.dedent("""
    import sys

    class CtrlC:  # Ctrl-C while torch is being imported, where a start-up Ctrl-C lands
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                raise KeyboardInterrupt

    sys.meta_path.insert(0, CtrlC())
    from egalitarian.cli import main

    sys.exit(main(sys.argv[1:]))
""")


def test_ctrl_c_during_start_up_exits_130_with_one_line(tmp_path, tiny):
    proc = subprocess.run([sys.executable, "-c", _CTRL_C_DURING_IMPORTS, "run", "--config", str(tiny), "--out",
                           str(tmp_path / "r")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "egd: interrupted"


# ------------------------------------------------------------------------------ nonfinite = "skip" in egd run


def test_run_reports_skipped_steps_and_fails_when_too_many(tmp_path, capsys, tiny):
    # lr 1e30: step 1 blows the weights up, every later loss is inf; 2 epochs x 3 steps = 6 steps, 5 skipped
    argv = ["run", "--config", str(tiny), "--set", "optimizer.lr=1e30", "--set", "train.nonfinite=\"skip\""]
    code, _, err = _run(capsys, *argv, "--set", "train.max_skip_fraction=1.0", "--out", str(tmp_path / "ok"))
    assert code == 0
    assert err.strip().splitlines()[-1] == ("egd: skipped 5 of 6 steps with a non-finite loss or gradient "
                                            "(train.nonfinite = 'skip')")
    # the default 0.1 allows 0.6 of the 6 steps: the first skipped step (step 2) fails the run, exit 3
    line = _error(capsys, *argv, "--out", str(tmp_path / "bad"), code=3)
    assert line.startswith("egd: skipped 1 of 2 steps with a non-finite loss or gradient, more than "
                           "train.max_skip_fraction = 0.1 of them")
    summary = json.loads((tmp_path / "bad" / "summary.json").read_text())
    assert (summary["status"], summary["stop_reason"], summary["skipped_steps"]) == ("nonfinite", "too_many_skipped", 1)


# ------------------------------------------------------------------------------------------ egd list fields


def test_list_fields_shows_every_train_field_with_its_default_and_meaning(capsys):
    code, out, _ = _run(capsys, "list", "fields")
    assert code == 0
    block = out.split("[train]", 1)[1].split("\n\n", 1)[0].splitlines()[1:]  # ([scheduler] follows)
    rows = {ln.split()[0]: ln for ln in block if ln.startswith("  ") and ln[2] != " "}
    assert set(rows) == set(TRAIN_DEFAULTS)
    assert rows["max_skip_fraction"].split()[1] == "0.1"
    assert rows["threads"].split()[1] == "0" and "0 = auto = 1" in rows["threads"]
    assert rows["eval_unit"].split()[1] == '"epoch"' and rows["drop_last"].split()[1] == "true"
    assert "egd list tasks" in out and "egd list optimizers" in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "egd list fields" in capsys.readouterr().out

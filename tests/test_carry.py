"""experiments/24-fair-boards/carry.py: a board's stores copied for the next session and restored, by hand-made
stores: every run and its summary survive, the curves are dropped but a loss board's reporting runs', the Optuna
file comes back byte for byte, and a store already present is never overwritten."""

from __future__ import annotations

import sqlite3

from egalitarian.sweep.spec import PlannedRun
from egalitarian.sweep.store import Store
from tests import script_helpers

SCRIPT = script_helpers.EXPERIMENTS / "24-fair-boards" / "carry.py"


def load_script():
    return script_helpers.load_script(SCRIPT)


def _run(i: int) -> PlannedRun:
    return PlannedRun(id=f"r{i}", params={"lr": i}, group=f"g{i}", label=f"lr={i}", config={"lr": i})


def _finish(store: Store, sweep: str, i: int, steps: int) -> None:
    store.add(sweep, [_run(i)])
    assert store.claim([f"r{i}"], "w") == (f"r{i}", {"lr": i})
    rows = [(s, 0, "test", "acc", s / steps) for s in range(1, steps + 1)]
    assert store.finish(f"r{i}", "w", {"steps": steps, "grokked": True}, rows)


def test_save_drops_the_curves_nothing_reads_and_restore_resumes_the_runs(tmp_path, capsys):
    carry = load_script()
    stores, out, specs = tmp_path / "tunes", tmp_path / "carry", tmp_path / "specs"
    stores.mkdir()
    specs.mkdir()
    (specs / "lm.toml").write_text('[tune]\nname = "fair-lm"\nstore = "tunes/fair-lm.sqlite"\nmetric = "loss"\n')
    (specs / "x.toml").write_text('[tune]\nname = "fair-x"\nstore = "tunes/fair-x.sqlite"\n')  # steps
    for name in ("fair-x", "fair-lm"):
        with Store(stores / f"{name}.sqlite") as store:
            _finish(store, f"{name}-tuning", 1, 7)
            _finish(store, f"{name}-report", 2, 5)
            store.add(f"{name}-tuning", [_run(3)])
            assert store.claim(["r3"], "w") is not None  # under way when the copy is made
            store.add(f"{name}-tuning", [_run(4)])  # pending
    optuna_like = stores / "fair-x.optuna.sqlite"
    with sqlite3.connect(optuna_like) as c:
        c.execute("CREATE TABLE trials (number INTEGER, value REAL)")
        c.executemany("INSERT INTO trials VALUES (?, ?)", [(0, 12.5), (1, 7.0)])
    c.close()
    (stores / "other.sqlite").write_bytes(b"")  # not a board's store: not carried
    assert sorted(p.name for p in carry.save(stores, out, specs)) == [
        "fair-lm.sqlite.gz", "fair-x.optuna.sqlite.gz", "fair-x.sqlite.gz"]

    back = tmp_path / "next-session"
    assert sorted(p.name for p in carry.restore(back, out)) == ["fair-lm.sqlite", "fair-x.optuna.sqlite",
                                                                "fair-x.sqlite"]
    for name, report_steps, dropped in (("fair-x", [], 12), ("fair-lm", [1, 2, 3, 4, 5], 7)):
        with Store(back / f"{name}.sqlite", create=False) as store:
            runs = {r["id"]: r for r in store.runs()}
            assert {k: r["status"] for k, r in runs.items()} == {"r1": "done", "r2": "done", "r3": "running",
                                                                 "r4": "pending"}
            assert runs["r1"]["summary"] == {"steps": 7, "grokked": True}
            assert runs["r2"]["summary"] == {"steps": 5, "grokked": True}
            assert store.metrics("r1") == []  # a tuning run's curve: dropped
            assert [m.step for m in store.metrics("r2")] == report_steps  # a reporting run's: a loss board's only
            assert f"without {dropped} metric rows" in store.get_meta("carried")  # 7 tuning rows (+ 5 reporting)
            assert store.reset_stale() == 1  # as a resumed sweep starts: the run under way is run again
    with sqlite3.connect(back / "fair-x.optuna.sqlite") as c:
        assert c.execute("SELECT number, value FROM trials ORDER BY number").fetchall() == [(0, 12.5), (1, 7.0)]
    c.close()
    with Store(stores / "fair-x.sqlite", create=False) as store:  # the original is untouched
        assert [m.step for m in store.metrics("r1")] == list(range(1, 8))

    (back / "fair-x.sqlite").unlink()
    (back / "fair-x.optuna.sqlite").write_bytes(b"newer")
    assert [p.name for p in carry.restore(back, out)] == ["fair-x.sqlite"]  # a store present is kept
    assert (back / "fair-x.optuna.sqlite").read_bytes() == b"newer"
    assert "kept" in capsys.readouterr().out


def test_save_keeps_the_copy_of_a_store_not_written_since(tmp_path, capsys):
    """A finished board's store is not copied again (its copy would differ only in the note's time); a store or
    write-ahead log newer than its copy is."""
    import os

    carry = load_script()
    stores, out, specs = tmp_path / "tunes", tmp_path / "carry", tmp_path / "specs"
    stores.mkdir()
    specs.mkdir()
    with Store(stores / "fair-x.sqlite") as store:
        _finish(store, "fair-x-tuning", 1, 7)
    assert [p.name for p in carry.save(stores, out, specs)] == ["fair-x.sqlite.gz"]
    src, gz = stores / "fair-x.sqlite", out / "fair-x.sqlite.gz"
    wal = stores / "fair-x.sqlite-wal"
    t = max(src.stat().st_mtime, wal.stat().st_mtime if wal.exists() else 0.0)
    os.utime(gz, (t + 10, t + 10))
    assert carry.save(stores, out, specs) == []
    assert "not written since its copy, kept" in capsys.readouterr().out
    os.utime(src, (t + 20, t + 20))  # written after the copy
    assert [p.name for p in carry.save(stores, out, specs)] == ["fair-x.sqlite.gz"]
    with Store(src, create=False) as store:  # a board still running: its last writes sit in the write-ahead log
        _finish(store, "fair-x-tuning", 2, 5)
        assert wal.exists()
        os.utime(src, (t, t))
        os.utime(gz, (t + 30, t + 30))
        os.utime(wal, (t + 40, t + 40))  # only the log is newer than the copy: copied again
        assert [p.name for p in carry.save(stores, out, specs)] == ["fair-x.sqlite.gz"]

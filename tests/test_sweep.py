"""Sweeps: grid expansion, run-id hashing, statistics by hand, the SQLite store, and CLI errors.

The multi-process tests (kill -9 and resume, Ray) are in ``test_sweep_process.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from egalitarian.cli import main
from egalitarian.config import resolve
from egalitarian.errors import ConfigError
from egalitarian.rundir import MetricRow
from egalitarian.sweep import (
    Store,
    bootstrap_ci,
    canonical_json,
    config_hash,
    expand,
    group_stats,
    load_sweep,
    quartiles,
    ratio_ci,
    run_id,
)
from egalitarian.sweep.stats import parse_spec, pick_baselines, stats_table

BASE = {
    "task": {"name": "modular", "p": 7},
    "model": {"name": "mlp", "hidden": 8},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "train": {"max_epochs": 2, "batch_size": 8},
}

SWEEP = """
[base]
task = {name = "modular", p = 7}
model = {name = "mlp", hidden = 8}
optimizer = {name = "sgd", lr = 0.1}
train = {max_epochs = 2, batch_size = 8}

[sweep]
name = "unit"
store = "out/unit.sqlite"
baseline = "optimizer.lr=0.1"

[grid]
"optimizer.lr" = [0.1, 0.2]
seed = [0, 1]
"""


def _params(runs):
    return [r.params for r in runs]


# ------------------------------------------------------------------------------------------- expansion


def test_grid_order_sorted_keys_last_fastest_and_seed_sets_three_fields():
    runs = expand(BASE, {"seed": [3, 4], "optimizer.lr": [0.5, 0.25], "model.hidden": [8]})
    assert _params(runs) == [
        {"model.hidden": 8, "optimizer.lr": 0.5, "seed": 3},
        {"model.hidden": 8, "optimizer.lr": 0.5, "seed": 4},
        {"model.hidden": 8, "optimizer.lr": 0.25, "seed": 3},
        {"model.hidden": 8, "optimizer.lr": 0.25, "seed": 4},
    ]
    for r in runs:
        c = r.config
        assert c["train"]["seed"] == c["train"]["shuffle_seed"] == c["task"]["split_seed"] == r.params["seed"]
        assert c["optimizer"]["lr"] == r.params["optimizer.lr"]
        assert c["train"]["threads"] == 1 and c["train"]["progress"] == "off"  # forced for every sweep run
        assert c == resolve(c)  # stored configs are resolved
    assert [r.label for r in runs] == ["model.hidden=8 optimizer.lr=0.5"] * 2 + ["model.hidden=8 optimizer.lr=0.25"] * 2
    assert runs[0].group == runs[1].group != runs[2].group == runs[3].group  # groups: all fields but seed
    assert len({r.id for r in runs}) == 4
    assert [r.id for r in expand(BASE, {"optimizer.lr": [0.5, 0.25], "seed": [3, 4], "model.hidden": [8]})] == [
        r.id for r in runs
    ]  # the order of the keys in the file does not matter


def test_explicit_runs_are_crossed_with_the_grid_in_file_order_and_duplicates_kept_once():
    explicit = [{"optimizer.lr": 0.3}, {"optimizer.name": "egd", "optimizer.lr": 0.5}, {"optimizer.lr": 0.3}]
    runs = expand(BASE, {"seed": [0, 1]}, explicit, {"train.max_epochs": 5})
    assert _params(runs) == [
        {"optimizer.lr": 0.3, "seed": 0},
        {"optimizer.lr": 0.3, "seed": 1},
        {"optimizer.name": "egd", "optimizer.lr": 0.5, "seed": 0},
        {"optimizer.name": "egd", "optimizer.lr": 0.5, "seed": 1},
    ]
    assert all(r.config["train"]["max_epochs"] == 5 for r in runs)  # [set] applies to every run
    assert runs[2].config["optimizer"] == {"name": "egd", "lr": 0.5}
    assert runs[2].label == "optimizer.lr=0.5 optimizer.name=egd"
    # no grid, no runs: the base alone; only explicit runs: those
    assert len(expand(BASE)) == 1 and _params(expand(BASE)) == [{}]
    assert _params(expand(BASE, None, [{"seed": 1}])) == [{"seed": 1}]
    with pytest.raises(ConfigError, match=r"runs\[0\]\.seed is also a grid key"):
        expand(BASE, {"seed": [0]}, [{"seed": 1}])


def test_seed_uses_the_tasks_own_seed_field_and_methods_tables():
    parity = {**BASE, "task": {"name": "parity", "n": 6, "k": 1}}
    (run,) = expand(parity, {"seed": [7]})
    assert run.config["task"]["seed"] == 7 and "split_seed" not in run.config["task"]
    recipe = {**BASE, "method": "a", "methods": {"a": {"name": "sgd", "lr": 0.1}, "b": {"name": "egd", "lr": 0.2}}}
    del recipe["optimizer"]
    runs = expand(recipe, {"method": ["a", "b"], "methods.b.lr": [0.7]})
    assert [r.config["optimizer"] for r in runs] == [{"name": "sgd", "lr": 0.1}, {"name": "egd", "lr": 0.7}]


def test_run_id_is_sha256_of_canonical_json_hard_coded_and_independent():
    d = {"c": {"e": True, "d": None}, "b": [1.5, "x", 1e-5], "a": 1, "é": "café"}
    text = b'{"a":1,"b":[1.5,"x",1e-05],"c":{"d":null,"e":true},"\\u00e9":"caf\\u00e9"}'
    assert canonical_json(d).encode() == text
    assert config_hash(d) == hashlib.sha256(text).hexdigest()[:16] == "f11ec254819a13f9"
    (run,) = expand(BASE)
    independent = json.dumps(resolve(run.config), sort_keys=True, separators=(",", ":"))
    assert run.id == run_id(run.config) == hashlib.sha256(independent.encode()).hexdigest()[:16]
    with pytest.raises(ConfigError, match="hashed"):
        config_hash({"lr": math.nan})


@pytest.mark.slow
def test_run_ids_are_the_same_in_another_process(tmp_path):
    (tmp_path / "s.toml").write_text(SWEEP)
    ids = [r.id for r in load_sweep(tmp_path / "s.toml").runs]
    code = "import sys; from egalitarian.sweep import load_sweep; print(*[r.id for r in load_sweep(sys.argv[1]).runs])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s.toml")], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.split() == ids


@pytest.mark.parametrize(
    ("grid", "fragments"),
    [
        ({"optimizer.lrr": [0.1]}, ["optimizer.lrr = 0.1", "unknown field of method 'sgd'", "allowed: name, lr"]),
        ({"train.max_epoch": [3]}, ["train.max_epoch", "max_epochs"]),
        ({"task.q": [1]}, ["task.q = 1", "task 'modular'", "split_seed"]),
        ({"model.width": [4]}, ["model.width = 4", "hidden"]),
        ({"foo.bar": [1]}, ["foo.bar", "unknown field", "optimizer.*"]),
        ({"optimizer.lr": 0.1}, ["grid.optimizer.lr = 0.1", "non-empty list"]),
        ({"optimizer.lr": []}, ["grid.optimizer.lr", "non-empty list"]),
        ({"train.max_epochs": ["x"]}, ["train.max_epochs = 'x'", "int"]),
        ({"methods.zz.lr": [1.0]}, ["methods.zz.lr", "no such method table"]),
        ({"optimizer.lr": [math.inf]}, ["optimizer.lr = inf", "finite"]),
    ],
)
def test_bad_grid_fields_are_config_errors_naming_the_field(grid, fragments):
    with pytest.raises(ConfigError) as e:
        expand(BASE, grid)
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


# ------------------------------------------------------------------------------------------ statistics


def test_quartiles_by_hand():
    # [1, 2, 3, 4]: positions (n-1)q = 0.75, 1.5, 2.25 -> 1.75, 2.5, 3.25
    assert quartiles([4, 1, 3, 2]) == (2.5, 1.75, 3.25)
    assert quartiles([1, 2, 3, 4, 10]) == (3.0, 2.0, 4.0)
    assert quartiles([5]) == (5.0, 5.0, 5.0)


def test_bootstrap_ci_degenerate_two_point_and_reproducible():
    assert bootstrap_ci([5.0]) == (5.0, 5.0)
    assert bootstrap_ci([7, 7, 7]) == (7.0, 7.0)
    # {1, 3}: resampled medians are 1, 2, 3 with probability 1/4, 1/2, 1/4: the 2.5% and 97.5% points are 1 and 3
    assert bootstrap_ci([1, 3]) == (1.0, 3.0)
    x = [3, 1, 4, 1, 5, 9, 2, 6]
    assert bootstrap_ci(x) == bootstrap_ci(x)  # seeded
    lo, hi = bootstrap_ci(x)
    assert lo <= quartiles(x)[0] <= hi
    assert ratio_ci([100, 100], [10, 10]) == (10.0, 10.0)


def _row(label, lr, seed, grok_epoch=None, status="done", steps_per_epoch=4):
    summary = None
    if status == "done":
        grok = (
            None
            if grok_epoch is None
            else {"epoch": grok_epoch, "step": grok_epoch * steps_per_epoch, "seconds": grok_epoch / 10}
        )
        summary = {"grokked": grok is not None, "grok": grok}
    return {
        "group_key": label,
        "label": label,
        "params": {"method": label, "optimizer.lr": lr, "seed": seed},
        "status": status,
        "summary": summary,
    }


def test_group_stats_and_speed_up_by_hand():
    runs = [_row("sgd", 0.5, s, e) for s, e in enumerate([100, 300, 200, None])]
    runs += [_row("egd", 0.5, s, e) for s, e in enumerate([10, 50, 20])]
    runs += [_row("egd", 0.5, 9, status="failed"), _row("egd", 0.5, 8, status="pending")]
    groups = {g["label"]: g for g in group_stats(runs, "method=sgd")}
    sgd, egd = groups["sgd"], groups["egd"]
    assert (sgd["n"], sgd["done"], sgd["grokked"], sgd["censored"], sgd["success_rate"]) == (4, 4, 3, 1, 0.75)
    assert (egd["n"], egd["done"], egd["failed"], egd["pending"], egd["success_rate"]) == (5, 3, 1, 1, 1.0)
    assert sgd["epochs"]["median"] == 200 and (sgd["epochs"]["q25"], sgd["epochs"]["q75"]) == (150, 250)
    assert egd["epochs"]["median"] == 20 and egd["epochs"]["iqr"] == 35 - 15
    assert egd["steps"]["median"] == 80 and egd["seconds"]["median"] == pytest.approx(2.0)
    assert egd["speedup"]["epochs"]["ratio"] == 200 / 20 == 10
    assert egd["speedup"]["steps"]["ratio"] == 800 / 80
    lo, hi = egd["speedup"]["epochs"]["ci"]
    # within the extreme ratios: this SGD run's summary has no budget, so it is censored at 0 and Kaplan-Meier
    # leaves it out of every risk set (tests/test_km.py covers censoring at a budget)
    assert lo <= 10 <= hi and lo >= 100 / 50 and hi <= 300 / 10
    assert sgd["is_baseline"] and sgd["speedup"]["epochs"]["ratio"] == 1.0
    assert egd["baseline"] == "sgd" and not egd["is_baseline"]
    table = stats_table(list(groups.values()))
    assert "(baseline)" in table and "10.00 [" in table and "3/4" in table


def test_baseline_spec_pairs_groups_on_the_other_fields():
    assert parse_spec("method=sgd optimizer.lr=0.5") == {"method": "sgd", "optimizer.lr": 0.5}
    groups = [
        {"group": g, "label": g, "params": {"method": m, "optimizer.lr": lr}}
        for g, m, lr in [("a", "sgd", 0.1), ("b", "sgd", 0.5), ("c", "egd", 0.1), ("d", "egd", 0.5)]
    ]
    assert pick_baselines(groups, "method=sgd") == {"a": "a", "b": "b", "c": "a", "d": "b"}
    assert pick_baselines(groups, "method=sgd optimizer.lr=0.5") == {g: "b" for g in "abcd"}
    assert pick_baselines(groups, None) == {g: None for g in "abcd"}
    with pytest.raises(ConfigError, match="matches no group"):
        pick_baselines(groups, "method=adam")


# ----------------------------------------------------------------------------------------------- store


def test_store_insert_is_idempotent_and_claims_in_sweep_order(tmp_path):
    runs = expand(BASE, {"seed": [0, 1, 2]})
    ids = [r.id for r in runs]
    with Store(tmp_path / "s.sqlite") as st:
        assert st.add("s", runs) == 3
        assert st.claim(ids, "w1") == (ids[0], runs[0].config)
        assert st.finish(ids[0], "w1", {"grokked": False}, [(0, 0, "test", "acc", 0.5)])
        assert st.add("s", runs) == 0  # idempotent: nothing new, results kept
        assert st.counts(ids) == {"pending": 2, "running": 0, "done": 1, "failed": 0}
        assert st.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert st.claim(ids[:1], "w2") is None  # only pending runs among the given ids
        assert st.claim(ids, "w2")[0] == ids[1]
        assert st.claim(ids, "w3")[0] == ids[2]
        assert st.claim(ids, "w4") is None
        assert not st.finish(ids[1], "w3", {}, [])  # only the claim holder may finish
        assert st.fail(ids[2], "w3", "boom")
        row = {r["id"]: r for r in st.runs(ids)}
        assert (row[ids[0]]["status"], row[ids[0]]["attempts"], row[ids[0]]["summary"]) == (
            "done",
            1,
            {"grokked": False},
        )
        assert (row[ids[2]]["status"], row[ids[2]]["error"]) == ("failed", "boom")
        assert st.metrics(ids[0]) == [MetricRow(step=0, epoch=0, split="test", metric="acc", value=0.5)]


def test_store_stale_running_rows_and_dead_workers_go_back_to_pending(tmp_path):
    runs = expand(BASE, {"seed": [0, 1]})
    ids = [r.id for r in runs]
    with Store(tmp_path / "s.sqlite") as st:
        st.add("s", runs)
        st.claim(ids, "host:1")
        st.claim(ids, "host:2")
        assert st.release("host:1") == 1  # the parent saw worker 1 die
        assert st.counts(ids)["pending"] == 1
        assert st.reset_stale() == 1  # a new sweep: whatever is still 'running' was left by a killed one
        assert st.counts(ids) == {"pending": 2, "running": 0, "done": 0, "failed": 0}
        for attempt in (2, 3):  # a run that kills its worker every time is failed after MAX_ATTEMPTS
            assert st.claim(ids, "w")[0] == ids[0]
            st.release("w", max_attempts=3, reason="worker died")
            assert st.runs([ids[0]])[0]["status"] == ("pending" if attempt < 3 else "failed")
        assert "worker died on each of 3 attempts" in st.runs([ids[0]])[0]["error"]
        assert st.requeue_failed(ids) == 1


def test_store_done_is_atomic_with_its_metrics(tmp_path):
    runs = expand(BASE)
    rid = runs[0].id
    with Store(tmp_path / "s.sqlite") as st:
        st.add("s", runs)
        st.claim([rid], "w")

        def rows_then_crash():
            yield (0, 0, "test", "acc", 0.1)
            yield (1, 0, "test", "acc", 0.2)
            raise RuntimeError("killed while writing")

        with pytest.raises(RuntimeError):
            st.finish(rid, "w", {"grokked": True}, rows_then_crash())
        assert st.runs([rid])[0]["status"] == "running" and st.metrics(rid) == []  # nothing half-written
        rows = [(s, 0, "test", "acc", 0.1 * s) for s in range(3)]
        assert st.finish(rid, "w", {"grokked": True}, rows)
        assert len(st.metrics(rid)) == 3 and st.runs([rid])[0]["status"] == "done"
    with Store(tmp_path / "s.sqlite", create=False) as other:  # another connection sees the committed state
        assert other.counts() == {"pending": 0, "running": 0, "done": 1, "failed": 0}


# ------------------------------------------------------------------------------------------------- CLI


def _cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (SWEEP.replace('"optimizer.lr"', '"optimizer.lrr"'), ["optimizer.lrr", "allowed"]),
        (SWEEP.replace("[base]", "[bas]"), ["bas", "unknown key"]),
        ("[grid]\nseed = [0]\n", ["base is missing"]),
        ('base = "no-such-recipe"\n', ["base = 'no-such-recipe'", "recipes"]),
        (SWEEP + "\n[grid\n", ["not valid TOML"]),
        (SWEEP.replace('name = "unit"', "name = 3"), ["sweep.name = 3"]),
        (SWEEP.replace("[sweep]", "[sweep]\nstor = 1"), ["sweep.stor", "allowed: name, store, baseline"]),
        (SWEEP.replace("optimizer.lr=0.1", "optimizer.lr=9"), ["sweep.baseline = 'optimizer.lr=9'", "matches no"]),
    ],
)
def test_cli_bad_sweep_files_exit_2_naming_the_field(tmp_path, capsys, text, fragments):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, out, err = _cli(capsys, "sweep", str(path))
    assert code == 2, (out, err)
    assert err.startswith("egd: error:") and len(err.strip().splitlines()) == 1
    for f in fragments:
        assert f in err, (f, err)


def test_cli_other_bad_input(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("s.toml").write_text(SWEEP)
    assert _cli(capsys, "sweep", "s.toml", "--workers", "0")[0] == 2
    code, _, err = _cli(capsys, "sweep", "status", "nope.sqlite")
    assert code == 2 and "does not exist" in err
    code, _, err = _cli(capsys, "results", "s.toml")  # a sweep that never ran: no store yet
    assert code == 2 and "out/unit.sqlite" in err
    Path("junk.sqlite").write_text("not a database, just text" * 100)
    code, _, err = _cli(capsys, "results", "junk.sqlite")
    assert code == 2 and "not a results store" in err
    code, out, _ = _cli(capsys, "sweep", "s.toml", "--dry-run")
    assert code == 0 and out.startswith("4 runs -> out/unit.sqlite")
    assert not Path("out").exists()


def test_cli_results_table_csv_and_json_by_hand(tmp_path, capsys):
    runs = expand(BASE, {"optimizer.lr": [0.1, 0.2], "seed": [0, 1, 2]})
    epochs = {0.1: [100, 300, 200], 0.2: [10, None, 20]}  # lr 0.2, seed 1 did not grok: censored
    store = tmp_path / "r.sqlite"
    with Store(store) as st:
        st.add("r", runs)
        st.set_meta("baseline", "optimizer.lr=0.1")
        for r in runs:
            e = epochs[r.params["optimizer.lr"]][r.params["seed"]]
            grok = {"epoch": e, "step": 4 * e, "seconds": e / 10} if e else None
            budget = {"status": "budget", "epochs": 300, "steps": 1200, "seconds": 30.0} if not e else {}
            st.claim([r.id], "w")
            st.finish(r.id, "w", {"grokked": e is not None, "grok": grok, **budget}, [(0, 0, "test", "acc", 0.0)])
    csv_path, json_path = tmp_path / "g.csv", tmp_path / "g.json"
    code, out, _ = _cli(capsys, "results", str(store), "--csv", str(csv_path), "--json", str(json_path))
    assert code == 0
    assert "baseline: optimizer.lr=0.1" in out and "(baseline)" in out and "2/3" in out
    # lr 0.2 by hand: events at 10 and 20, one run censored at 300: S(10) = 2/3, S(20) = 1/3, so the
    # Kaplan-Meier median is 20 (the median of the grokked runs alone is 15); speed-up 200 / 20 = 10
    line = next(ln for ln in out.splitlines() if ln.startswith("optimizer.lr=0.2"))
    assert line.split()[5:7] == ["20", "[10,"] and " 15 " in line and "10.00 [" in line
    import csv

    rows = list(csv.DictReader(csv_path.open()))
    assert [r["group"] for r in rows] == ["optimizer.lr=0.1", "optimizer.lr=0.2"]
    assert float(rows[1]["epochs_median"]) == 15 and float(rows[1]["success_rate"]) == pytest.approx(2 / 3)
    assert rows[1]["censored"] == "1" and float(rows[1]["speedup_epochs"]) == pytest.approx(200 / 20)
    assert float(rows[1]["epochs_km_median"]) == 20 and float(rows[0]["epochs_km_median"]) == 200
    assert float(rows[0]["epochs_q25"]) == 150 and float(rows[0]["epochs_q75"]) == 250
    report = json.loads(json_path.read_text())
    assert len(report["runs"]) == 6 and report["counts"]["done"] == 6
    assert report["groups"][1]["speedup"]["steps"]["ratio"] == pytest.approx(800 / 80)
    code, out, _ = _cli(capsys, "results", str(store), "--baseline", "optimizer.lr=0.2")
    assert "0.10 [" in out  # the other way round: 20 / 200
    code, out, _ = _cli(capsys, "sweep", "status", str(store))
    assert code == 0 and "runs:  6  done 6, failed 0" in out

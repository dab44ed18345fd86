"""experiments/24-fair-boards/export_board.py on a small finished tune (the fake executor of test_tune_search: steps
= 10 + 100·|log10(lr / best)| + seed): every trial and every held-out run is exported, counted by hand."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest

import egalitarian.tune as tune_mod
from tests.test_tune_search import Fake, quiet, write

pytest.importorskip("optuna")
SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "24-fair-boards" / "export_board.py"


def load_script():
    spec = importlib.util.spec_from_file_location("export_board", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_export_board_writes_every_trial_and_held_out_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tune_mod, "run_sweep", Fake())
    path = write(tmp_path, 'trials = 2\nstudies = 2\nstages = "coarse-refine"\nsampler = "random"\nbatch = 2\nwiden = 0\n',
                 '[space]\n"optimizer.lr" = { low = 0.01, high = 1.0, log = true }\n')
    export = load_script()
    assert export.main([str(path), "--out", str(tmp_path / "out")]) == 2  # no leaderboard yet: refused
    assert "not finished" in capsys.readouterr().err
    tune_mod.tune(path, log=quiet)
    assert export.main([str(path), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    trials = list(csv.DictReader((out / "trials.csv").open()))
    # 2 methods x 2 studies x (5 grid points 0.01..1 x sqrt(10) apart + 2 refined trials)
    assert len(trials) == 2 * 2 * 7
    assert sorted({t["stage"] for t in trials}) == ["1", "2"]
    grid = [t for t in trials if t["method"] == "sgd" and t["study"] == "0" and t["stage"] == "1"]
    # sgd's best lr is 2.0: steps = round(10 + 100 * log10(2 / lr) + seed), median over seeds 0 and 1
    for t in grid:
        lr = json.loads(t["values"])["optimizer.lr"]
        expected = [round(10 + 100 * abs(math.log10(lr / 2.0)) + s) for s in (0, 1)]
        assert float(t["objective"]) == pytest.approx(sum(expected) / 2)
    held = list(csv.DictReader((out / "heldout.csv").open()))
    board = json.loads((out / "leaderboard.json").read_text())
    winners = {(e["method"], json.dumps(s["values"], sort_keys=True)) for e in board for s in e["per_study"]}
    assert len(held) == len(winners) * 5  # each distinct winner on the 5 held-out seeds (equal winners: one run)
    assert {h["seed"] for h in held} == {"10", "11", "12", "13", "14"} and all(h["reached"] == "True" for h in held)
    cost = json.loads((out / "cost.json").read_text())
    assert cost["tuning"]["runs"] > 0 and cost["reporting"]["runs"] == len(held)
    assert (out / "leaderboard.md").read_text() == (tmp_path / "store-leaderboard.md").read_text()
    assert (out / "heldout.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

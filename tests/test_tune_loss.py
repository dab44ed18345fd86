"""``tune.metric = "loss"`` (models that do not grok) and the "steps to a target loss" reading of sweep.stats,
against values computed by hand from a fake executor's loss curves."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import egalitarian.tune as tune_mod
from egalitarian.sweep import Store
from egalitarian.sweep.stats import km_median, loss_curve, loss_outcome
from egalitarian.tune import CENSORED, TuneSpec, load_tune, score
from tests.test_tune import BASE

pytest.importorskip("optuna")

SPEC = BASE + """
[tune]
name = "t"
metric = "loss"
trials = 3
sampler = "grid"
tuning_seeds = [0]
reporting_seeds = [1, 2, 3]
baselines = ["sgd"]

[set]
"train.max_steps" = 150
"train.max_epochs" = 0
"train.eval_every" = 50
"train.eval_unit" = "step"

[space]
"optimizer.lr" = { low = 0.1, high = 10.0, log = true, relative = true, points = 3 }

[methods.sgd]
[methods.egd]
"""


class LossCurves:
    """Stands in for run_sweep: a run's final test loss is ``BASE[m] + |log10(lr / BEST[m])| + 0.01·seed``, its
    curve 5 at step 0, final + 0.4 at 50, final + 0.1 at 100, final at 150; egd at lr > 1 diverges (NaN)."""

    BASE, BEST = {"sgd": 1.0, "egd": 0.5}, {"sgd": 0.5, "egd": 0.05}

    def __call__(self, sweep, workers=None, backend="local", address=None, progress=None):
        with Store(sweep.store) as st:
            st.add(sweep.name, sweep.runs)
            for rid in [r["id"] for r in st.runs([r.id for r in sweep.runs]) if r["status"] == "pending"]:
                cfg = next(r.config for r in sweep.runs if r.id == rid)
                m, lr, seed = cfg["optimizer"]["name"], cfg["optimizer"]["lr"], cfg["train"]["seed"]
                final = self.BASE[m] + abs(math.log10(lr / self.BEST[m])) + 0.01 * seed
                diverged = m == "egd" and lr > 1
                curve = [(0, 5.0), (50, final + 0.4), (100, final + 0.1), (150, math.nan if diverged else final)]
                summary = {"status": "nonfinite" if diverged else "budget", "grokked": False, "grok": None,
                           "steps": 150, "epochs": 1, "seconds": 1.0,
                           "final_test_loss": math.nan if diverged else final, "final_test_acc": 0.5}
                st.claim([rid], "fake")
                st.finish(rid, "fake", summary, [(s, 0, "test", "loss", v) for s, v in curve])
            return st.counts([r.id for r in sweep.runs])


def test_loss_outcome_by_hand():
    rows = [(0, 0, "test", "loss", 3.0), (0, 0, "train", "loss", 0.1), (50, 1, "test", "loss", 1.5),
            (100, 2, "test", "loss", 0.9), (100, 2, "test", "acc", 0.2)]
    assert loss_curve(rows) == [(0, 3.0), (50, 1.5), (100, 0.9)]
    assert loss_outcome(rows, 1.5) == (50.0, True)  # at or below the target
    assert loss_outcome(rows, 1.0) == (100.0, True)
    assert loss_outcome(rows, 0.5) == (100.0, False)  # censored at the last evaluation
    assert loss_outcome(rows, 0.5, nonfinite=True) == (math.inf, False)
    assert loss_outcome(rows, 0.2, split="train") == (0.0, True)
    nan = [(0, 0, "test", "loss", 3.0), (50, 1, "test", "loss", None)]  # NaN reads back from SQLite as None
    assert loss_curve(nan)[1][0] == 50 and math.isnan(loss_curve(nan)[1][1])
    assert loss_outcome(nan, 1.0) == (50.0, False)


def test_a_loss_trial_scores_its_median_final_loss():
    spec = TuneSpec(name="x", store=Path("s.sqlite"), base={}, contenders=[], space=[], trials=1, metric="loss")

    def row(loss, status="done", run_status="budget"):
        return {"status": status, "summary": {"final_test_loss": loss, "status": run_status}}

    assert score(spec, [row(0.5), row(0.7), row(0.6)]) == 0.6
    assert score(spec, [row(0.5), row(0.7), row(None, "failed")]) == 0.7  # a failed run counts as CENSORED
    assert score(spec, [row(0.5), row(math.nan, run_status="nonfinite"), row(0.9)]) == 0.9
    assert score(spec, [row(None, "failed")]) == CENSORED


def test_leaderboard_by_final_loss_with_steps_to_the_baselines_loss(tmp_path, monkeypatch):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.replace('name = "t"', f'name = "t"\nstore = "{tmp_path / "store.sqlite"}"'))
    monkeypatch.setattr(tune_mod, "run_sweep", LossCurves())
    spec = load_tune(path)
    winners = tune_mod.best(spec, tune_mod.search(spec, log=lambda *a, **k: None))
    # tuning seed 0: sgd's best factor is 1 (lr 0.5), egd's is 0.1 (lr 0.05, the low edge); egd at 5 diverged
    assert winners["sgd"]["values"] == {"optimizer.lr": 0.5} and winners["egd"]["values"] == {"optimizer.lr": 0.05}
    assert winners["egd"]["edges"] == {"optimizer.lr": "low"}
    board = tune_mod.report(spec, winners)
    assert [e["method"] for e in board] == ["egd", "sgd"]  # by median final loss
    by = {e["method"]: e for e in board}
    # finals on seeds 1, 2, 3: sgd 1.01, 1.02, 1.03; egd 0.51, 0.52, 0.53; the target is sgd's median, 1.02
    assert by["sgd"]["final_loss"] == pytest.approx({"median": 1.02, "min": 1.01, "max": 1.03})
    assert by["egd"]["target_loss"] == by["sgd"]["target_loss"] == pytest.approx(1.02)
    assert by["sgd"]["loss_at"] == pytest.approx({"50": 1.42, "100": 1.12})  # 1/3 and 2/3 of 150 steps
    # steps to 1.02: sgd reaches it at 150 on seeds 1, 2 and never on seed 3 (1.03): KM median 150;
    # egd at 50 (0.91, 0.92, 0.93 at step 50) on every seed
    assert by["sgd"]["reached"] == 2 and by["sgd"]["loss"]["median"] == km_median([150, 150, 150],
                                                                                  [True, True, False]) == 150
    assert by["egd"]["reached"] == 3 and by["egd"]["loss"]["median"] == 50
    assert by["egd"]["speedup"]["sgd"]["ratio"] == 3.0
    text = tune_mod.leaderboard_markdown(spec, board)
    assert "Objective: median final test loss over tuning seeds [0]" in text
    assert "Target loss: sgd's median final test loss, 1.0200" in text
    assert "| egd | lr=0.05 (low edge) | 0.5200 [0.5100, 0.5300] | 0.9200 | 0.6200 | 50 [50, 50] (3/3) | 3.00" in text

"""experiments/24-fair-boards/step_cost.py: a board's cost per round from its methods' measured step costs, by hand.

No timing is asserted: only the arithmetic from the measured seconds to runs and CPU-hours, and the bad input."""

from __future__ import annotations

import json
import math
import sys

import pytest

from tests import script_helpers

SCRIPT = script_helpers.EXPERIMENTS / "24-fair-boards" / "step_cost.py"


@pytest.fixture(scope="module")
def step_cost():
    return script_helpers.load_script(SCRIPT)


def test_round_hours_by_hand(step_cost):
    # two methods whose whole-budget run takes 1 h and 2 h; per method 2 stage-1, 4 stage-2 and 1 held-out run
    runs = {"stage 1": 2, "stage 2": 4}
    upper, est, widen = step_cost.round_hours([3600.0, 7200.0], runs, 1, "steps")
    assert upper == pytest.approx(3 * 7)
    # stage 1: 83% censored, the rest at half cost: 0.915 a run; stage 2: 0.40 + 0.60 / 2 = 0.70; held-out: 0.5
    assert est == pytest.approx(3 * (2 * 0.915 + 4 * 0.70 + 0.5))
    assert widen == pytest.approx(3 * 4 * 0.70)
    # a loss target: every run goes the whole budget
    assert step_cost.round_hours([3600.0, 7200.0], runs, 1, "loss") == pytest.approx((21, 21, 12))


SPEC = """base = "mod-add-p97"
[tune]
name = "cost"
store = "{store}"
stages = "coarse-refine"
trials = 2
studies = 3
tuning_seeds = [0]
[set]
"train.max_steps" = 40
[space]
"optimizer.lr" = {{ low = 1e-5, high = 100.0, log = true }}
[methods.sgd]
[methods.egd]
"""


def test_the_script_measures_every_method_and_counts_the_runs_of_a_round(step_cost, tmp_path, monkeypatch, capsys):
    spec = tmp_path / "cost.toml"
    spec.write_text(SPEC.format(store=tmp_path / "cost.sqlite"))
    monkeypatch.setattr(sys, "argv", ["step_cost.py", str(spec), "--steps", "3", "--out", str(tmp_path / "b")])
    assert step_cost.main() == 0
    out = json.loads((tmp_path / "b" / "step-cost.json").read_text())
    # the lr grid 1e-5..1e2 at x sqrt(10): 15 points; 3 studies x 2 trials; 3 study winners x 5 held-out seeds
    assert out["runs_per_method"] == {"stage 1": 15, "stage 2": 6, "held-out": 15}
    assert out["budget"] == 40 and [m["method"] for m in out["methods"]] == ["sgd", "egd"]
    for m in out["methods"]:
        assert m["steps"] == 3  # the steps asked; the seconds themselves are the machine's, not asserted
        assert m["censored_run_s"] == pytest.approx(40 * m["loop_s"])
    total = sum(m["censored_run_s"] for m in out["methods"]) / 3600
    assert out["round_cpu_hours"]["upper"] == pytest.approx(total * (15 + 6 + 15))
    table = (tmp_path / "b" / "step-cost.md").read_text()
    assert "| sgd |" in table and "| egd |" in table and f"--out {tmp_path / 'b'}" in table
    assert math.isfinite(out["round_cpu_hours"]["estimate"])


@pytest.mark.parametrize("args, says", [(["--steps", "0"], "--steps 0: must be at least 1"),
                                        ([], "train.max_steps = 0")])
def test_bad_input_exits_2_with_one_line(step_cost, tmp_path, monkeypatch, capsys, args, says):
    spec = tmp_path / "cost.toml"
    spec.write_text(SPEC.format(store=tmp_path / "cost.sqlite").replace('"train.max_steps" = 40', "")
                    if not args else SPEC.format(store=tmp_path / "cost.sqlite"))
    monkeypatch.setattr(sys, "argv", ["step_cost.py", str(spec), *args])
    assert step_cost.main() == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1

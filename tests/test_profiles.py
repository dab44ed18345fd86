"""Performance profiles and the resolution of a time to threshold: hand computations, numerical integration as an
independent check of the score, and a brute-force check of the cadence rule."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

import egalitarian
from egalitarian.sweep.profiles import (
    Crossing,
    cadence,
    credit,
    first_at_or_above,
    first_at_or_below,
    is_tie,
    median_resolution,
    metric_curve,
    performance_profile,
    profile_markdown,
    profile_rows,
    profile_score,
    ratios,
    relative_resolution,
    resolved,
)

# Steps to target. A wins t1 and ties B on t3; B wins t2; C never reaches t1 (a failed method); nobody solves t4.
TABLE = {
    "t1": {"A": 100, "B": 250, "C": math.inf},
    "t2": {"A": 300, "B": 150, "C": 600},
    "t3": {"A": 90, "B": 90, "C": 270},
    "t4": {"A": math.inf, "B": math.inf, "C": math.inf},
}
# By hand: r(A) = 1, 2, 1; r(B) = 2.5, 1, 1; r(C) = inf, 4, 3; t4 is left out, so n = 3.
R = {"A": [1, 2, 1], "B": [2.5, 1, 1], "C": [math.inf, 4, 3]}


def test_ratios_by_hand():
    r, unsolved = ratios(TABLE)
    assert unsolved == ["t4"]
    assert list(r) == ["t1", "t2", "t3"]
    for m, want in R.items():
        assert [r[t][m] for t in r] == pytest.approx(want)
    assert r["t3"]["A"] == r["t3"]["B"] == 1.0  # a tie: both win


def test_performance_profile_by_hand():
    taus = [1, 1.5, 2, 2.5, 3, 3.9, 4, 10]
    prof = performance_profile(TABLE, taus)
    assert prof["A"] == pytest.approx([2 / 3, 2 / 3, 1, 1, 1, 1, 1, 1])
    assert prof["B"] == pytest.approx([2 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1, 1])
    assert prof["C"] == pytest.approx([0, 0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])  # never 1: it failed on t1


def test_profile_score_by_hand():
    # AlgoPerf: B = 1/3 * integral_1^4 rho(tau) dtau = mean over tasks of (4 - r)/3, 0 for r >= 4.
    score = profile_score(TABLE)
    assert score["A"] == pytest.approx((1 + 2 / 3 + 1) / 3)  # 8/9
    assert score["B"] == pytest.approx((0.5 + 1 + 1) / 3)  # 5/6
    assert score["C"] == pytest.approx((0 + 0 + 1 / 3) / 3)  # 1/9
    # over ln tau: credit 1 - ln r / ln 4
    log = profile_score(TABLE, scale="log")
    assert log["A"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert log["B"] == pytest.approx((1 - math.log(2.5) / math.log(4) + 2) / 3)
    assert log["C"] == pytest.approx((1 - math.log(3) / math.log(4)) / 3)
    assert profile_score(TABLE, tau_max=2)["B"] == pytest.approx(2 / 3)  # 2.5 > 2 earns nothing


def test_profile_score_is_the_integral_of_the_profile():
    # independent check: integrate rho on a fine grid with numpy's trapezoid rule, in tau and in ln tau
    taus = np.linspace(1, 4, 30001)
    prof = performance_profile(TABLE, taus)
    trapz = getattr(np, "trapezoid", None) or np.trapz
    for m, rho in prof.items():
        assert profile_score(TABLE)[m] == pytest.approx(trapz(rho, taus) / 3, abs=1e-4)
        log_taus = np.exp(np.linspace(0, math.log(4), 30001))
        rho_log = performance_profile(TABLE, log_taus)[m]
        assert profile_score(TABLE, scale="log")[m] == pytest.approx(trapz(rho_log, np.log(log_taus)) / math.log(4),
                                                                     abs=1e-4)
    # AlgoPerf's own discretisation (100 points over [1, 4], trapezoid, divided by 3) is within 1/198 per task
    grid = np.linspace(1, 4, 100)
    for m, rho in performance_profile(TABLE, grid).items():
        assert abs(trapz(rho, grid) / 3 - profile_score(TABLE)[m]) <= 1 / 198 + 1e-12


def test_unsolved_task_does_not_change_the_ranking():
    solved = {t: row for t, row in TABLE.items() if t != "t4"}
    assert profile_score(solved) == profile_score(TABLE)
    # as AlgoPerf counts it (in the denominator, 0 for everyone): every score times 3/4, same order
    algoperf = {m: s * 3 / 4 for m, s in profile_score(TABLE).items()}
    assert sorted(algoperf, key=algoperf.get) == sorted(profile_score(TABLE), key=profile_score(TABLE).get)


def test_not_run_fails_or_is_excluded():
    table = {"t1": {"A": 10, "B": 20}, "t2": {"A": 10, "B": None}, "t3": {"A": 30, "B": math.nan}, "t4": {"A": 5}}
    r, unsolved = ratios(table)
    assert unsolved == []
    assert r["t1"] == {"A": 1.0, "B": 2.0}
    assert r["t2"]["A"] == 1.0 and math.isnan(r["t2"]["B"]) and math.isnan(r["t4"]["B"])  # missing = not run
    assert performance_profile(table, [1, 2])["B"] == pytest.approx([0, 1 / 4])  # fails the 3 it did not run
    assert performance_profile(table, [1, 2], not_run="exclude")["B"] == pytest.approx([0, 1])
    assert profile_score(table, not_run="exclude")["B"] == pytest.approx(2 / 3)
    # a task where the only method run failed is unsolved
    assert ratios({"t": {"A": math.inf, "B": None}}).unsolved == ["t"]
    with pytest.raises(ValueError):
        ratios({"t": {"A": 0}})
    with pytest.raises(ValueError):
        performance_profile(table, [1], not_run="skip")


def test_credit():
    assert credit(1) == 1 and credit(4) == 0 and credit(math.inf) == 0 and credit(2.5) == pytest.approx(0.5)
    assert credit(2, scale="log") == pytest.approx(0.5)
    with pytest.raises(ValueError):
        credit(1, tau_max=1)


def test_profile_table():
    header, rows = profile_rows(TABLE, [1, 2, 4])
    assert header[:7] == ["method", "tasks", "reached", "wins", "rho(1)", "rho(2)", "rho(4)"]
    assert [r[0] for r in rows] == ["A", "B", "C"]  # best score first
    assert rows[0][1:] == ["3", "3", "2", "0.667", "1", "1", "0.889"]
    assert rows[2][1:4] == ["3", "2", "0"]
    text = profile_markdown(TABLE, [1, 2, 4])
    assert text.splitlines()[1] == "|---|---|---|---|---|---|---|---|"
    assert "| A | 3 | 3 | 2 | 0.667 | 1 | 1 | 0.889 |" in text
    assert text.endswith("Left out (no method reached the target): t4.")


# ------------------------------------------------------------------------------------------------ resolution

# test accuracy evaluated once per epoch of 9 steps (mod-add p = 97), from step 0 (the initialisation)
CURVE = [(0, 0.01), (9, 0.02), (18, 0.5), (27, 0.95), (36, 0.99), (45, 0.97)]


def test_first_at_or_above_by_hand():
    hit = first_at_or_above(CURVE, 0.95)  # reached exactly at 27: the crossing lies in (18, 27]
    assert hit == Crossing(27, 18, 0.95) and hit.width == 9
    assert relative_resolution(hit) == pytest.approx(9 / 27)
    assert first_at_or_above(CURVE, 0.98) == Crossing(36, 27, 0.99)
    assert first_at_or_above(CURVE, 0.999) is None  # never reached
    # reached at the first evaluation: at step 0 (width 0), or at the first evaluation after the start
    assert first_at_or_above(CURVE, 0.0) == Crossing(0, 0, 0.01) and relative_resolution(Crossing(0, 0, 0.01)) == 0
    later = [(9, 0.97), (18, 0.99)]
    assert first_at_or_above(later, 0.95) == Crossing(9, 0, 0.97)
    assert relative_resolution(first_at_or_above(later, 0.95)) == 1.0
    assert first_at_or_above(later, 0.95, start=5).width == 4
    # the first crossing counts even if the value drops again (the trainer latches it); NaN never reaches
    assert first_at_or_above([(10, 0.96), (20, 0.5), (30, 0.97)], 0.95).step == 10
    assert first_at_or_above([(10, math.nan), (20, 0.96)], 0.95) == Crossing(20, 10, 0.96)
    # evaluations given out of order are sorted by step
    assert first_at_or_above(list(reversed(CURVE)), 0.95) == Crossing(27, 18, 0.95)
    # per-step evaluation: known exactly to within one step
    per_step = [(s, 0.96 if s >= 88 else 0.5) for s in range(0, 120)]
    assert first_at_or_above(per_step, 0.95) == Crossing(88, 87, 0.96)
    assert resolved(first_at_or_above(per_step, 0.95)) and not resolved(hit)


def test_first_at_or_below_for_a_loss():
    loss = [(0, 4.6), (100, 3.0), (200, 2.5), (300, 2.4)]
    assert first_at_or_below(loss, 2.5) == Crossing(200, 100, 2.5)
    assert first_at_or_below(loss, 1.0) is None


def test_metric_curve_from_store_rows():
    rows = [(0, 0, "test", "acc", 0.01), (0, 0, "test", "loss", 4.6), (9, 1, "train", "acc", 0.5),
            (9, 1, "test", "acc", None)]
    (s0, v0), (s1, v1) = metric_curve(rows)
    assert (s0, v0, s1) == (0, 0.01, 9) and math.isnan(v1)  # NULL (a NaN stored by SQLite) reads as NaN
    assert metric_curve(rows, "test", "loss") == [(0, 4.6)]


def test_ties():
    # issue #28's per-step check: EGD 88 vs Muon 90, each known to 1 step: not a tie
    assert not is_tie(88, 90, 1, 1)
    # once per epoch (9 steps) both read 90: a tie; 87 vs 90 with a 9-step resolution: a tie
    assert is_tie(90, 90, 9, 9) and is_tie(87, 90, 9, 1)
    # (81, 90] and (90, 99] do not overlap: a difference equal to the resolution is not a tie
    assert not is_tie(90, 99, 9, 9)
    assert is_tie(90, 99, 1, 10)  # the larger resolution decides
    assert is_tie(math.inf, math.inf, 0, 0) and not is_tie(math.inf, 90, 0, 9) and not is_tie(90, math.inf, 9, 0)
    assert is_tie(5, 5, 0, 0)
    seeds = [Crossing(90, 81, 1.0), Crossing(99, 90, 1.0), None, Crossing(88, 87, 1.0)]
    assert median_resolution(seeds) == 9 and median_resolution([None]) == 0


def test_cadence_rule_by_hand():
    assert cadence(88) == 1  # floor(1.76)
    assert cadence(49) == 1  # floor(0.98) = 0 -> at least every step
    assert cadence(0) == 1
    assert cadence(150) == 3 and cadence(1000) == 20 and cadence(1049) == 20
    assert cadence(1000, rel=0.1) == 100
    with pytest.raises(ValueError):
        cadence(100, rel=0)
    with pytest.raises(ValueError):
        cadence(-1)


@pytest.mark.parametrize("below", [0, 9, 49, 50, 88, 99, 150, 999, 1000, 2700])
def test_cadence_resolves_every_crossing_to_two_percent(below):
    # brute force: whatever the true crossing t > below, evaluating every cadence(below) steps from `below`
    # brackets it to within 2% of the step found
    c = cadence(below)
    for t in range(below + 1, below + 3 * c + 2):
        evals = [(s, 1.0 if s >= t else 0.0) for s in range(below, below + 5 * c + t, c)]
        hit = first_at_or_above(evals, 0.5)
        assert hit.prev_step < t <= hit.step
        assert hit.width == c and (c == 1 or relative_resolution(hit) <= 0.02)
        assert c == 1 or resolved(hit)


def test_the_module_is_stdlib_only():
    path = Path(egalitarian.__file__).parent / "sweep" / "profiles.py"
    imports = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            imports.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            imports |= {a.name for a in node.names}
    assert imports <= {"__future__", "math", "collections.abc", "typing"}, sorted(imports)


def test_cli_profile(tmp_path: Path, capsys):
    from egalitarian.cli import main

    src = tmp_path / "table.json"
    rows = {t: {m: ("inf" if math.isinf(v) else v) for m, v in row.items()} for t, row in TABLE.items()}
    src.write_text(json.dumps(rows | {"t5": {"A": None, "B": "inf"}}))
    out = tmp_path / "profile.md"
    assert main(["profile", str(src), "--taus", "1,2,4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| A | 3 | 3 | 2 | 0.667 | 1 | 1 | 0.889 |" in text
    assert text.rstrip().endswith("t4, t5.") and out.read_text() == text
    assert main(["profile", str(src), "--taus", "1,x"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"t": {"A": 0}}')
    assert main(["profile", str(bad)]) == 2
    assert "must be positive" in capsys.readouterr().err

"""experiments/24-fair-boards/export_board.py on a small finished tune (the fake executor of test_tune_search: steps
= 10 + 100·|log10(lr / best)| + seed): every trial and every held-out run is exported, counted by hand."""

from __future__ import annotations

import csv
import json
import math

import pytest

import egalitarian.tune as tune_mod
from tests import script_helpers
from tests.test_tune_search import Fake, quiet, write

pytest.importorskip("optuna")
SCRIPT = script_helpers.EXPERIMENTS / "24-fair-boards" / "export_board.py"


def load_script():
    return script_helpers.load_script(SCRIPT)


def test_export_board_writes_every_trial_and_held_out_run(tmp_path, monkeypatch, capsys):
    tune = 'trials = 2\nstudies = 2\nstages = "coarse-refine"\nsampler = "random"\nbatch = 2\nwiden = 0\n'
    path = write(tmp_path, tune,
                 '[space]\n"optimizer.lr" = { low = 0.01, high = 1.0, log = true }\n')
    export = load_script()
    assert export.main([str(path), "--out", str(tmp_path / "out")]) == 2  # no leaderboard yet: refused
    assert "not finished" in capsys.readouterr().err
    fake = Fake()
    monkeypatch.setattr(tune_mod, "run_sweep", fake)
    tune_mod.tune(path, log=quiet)
    # a reporting run of a configuration that is no study's winner (as an earlier round's winner would leave)
    spec = tune_mod.load_tune(path)
    stray = tune_mod.plan(spec, spec.contenders[0], {"optimizer.lr": 0.0123}, [10], reporting=True)
    from egalitarian.sweep import Sweep
    fake(Sweep(name="t-report", store=spec.store, baseline=None, runs=stray))
    # egd transfer's runs live in their own store beside the board's: counted as the transfer's cost
    fake(Sweep(name="t-transfer", store=spec.store.with_name("store-transfer.sqlite"), baseline=None,
               runs=tune_mod.plan(spec, spec.contenders[0], {"optimizer.lr": 0.5}, [10, 11], reporting=True)))
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
    # stage 1's table, by hand: every grid point reaches the threshold; egd's best grid lr is 0.316 (best 0.3:
    # steps round(12.28 + seed) = 12, 13 -> 12.5), sgd's is 1 (round(40.1 + seed) = 40, 41 -> 40.5); egd first
    assert (out / "stage1.md").read_text().splitlines()[2:] == [
        "| egd | 5 of 5 (0.01–1) | 0.316 | 12.5 |", "| sgd | 5 of 5 (0.01–1) | 1 | 40.5 |"]
    held = list(csv.DictReader((out / "heldout.csv").open()))
    board = json.loads((out / "leaderboard.json").read_text())
    winners = {(e["method"], json.dumps(s["values"], sort_keys=True)) for e in board for s in e["per_study"]}
    assert len(held) == len(winners) * 5  # each distinct winner on the 5 held-out seeds (equal winners: one run)
    assert all("0.0123" not in h["values"] for h in held)  # the stray reporting run is not the board's
    for e in board:  # each row names the studies whose winner it is
        for s in e["per_study"]:
            mine = [h for h in held if h["method"] == e["method"] and str(s["study"]) in h["studies"].split()]
            assert len(mine) == 5 and {json.loads(h["values"])["optimizer.lr"] for h in mine} == {
                s["values"]["optimizer.lr"]}
    assert {h["seed"] for h in held} == {"10", "11", "12", "13", "14"} and all(h["reached"] == "True" for h in held)
    cost = json.loads((out / "cost.json").read_text())
    assert cost["tuning"]["runs"] > 0 and cost["reporting"]["runs"] == len(held) + 1  # the stray run is paid
    assert cost["transfer"]["runs"] == 2 and set(cost) - {"wall_clock_hours_first_to_last_run", "note"} == {
        "tuning", "reporting", "transfer"}
    assert (out / "leaderboard.md").read_text() == (tmp_path / "store-leaderboard.md").read_text()
    assert (out / "heldout.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage1_table_counts_censored_grid_points_and_keeps_the_first_of_equal_bests():
    """Hand-made trials: method a reaches the threshold at two of three grid points with equal objectives (the
    earlier, lr 0.1, is its best), method b at none; rounds other than 0, studies other than 0 and stage 2 are not
    stage 1's grid."""
    def row(m, lr, obj, stage=1, rnd=0, study=0):
        return {"method": m, "round": rnd, "study": study, "stage": stage,
                "values": json.dumps({"optimizer.lr": lr}), "objective": obj}
    rows = [row("b", 0.01, ""), row("a", 0.01, ""), row("a", 0.1, "50"), row("a", 1.0, "50"),
            row("a", 0.5, "5", stage=2), row("a", 0.01, "1", rnd=1), row("a", 0.01, "1", study=1), row("b", 0.1, ""),
            row("c", 0.1, ""), row("c", 10.0, "70")]
    assert load_script().stage1_table(rows).splitlines()[2:] == [
        "| a | 2 of 3 (0.1–1) | 0.1 | 50 |", "| c | 1 of 2 (10) | 10 | 70 |", "| b | 0 of 2 | – | censored |"]


def load_summary():
    return script_helpers.load_script(SCRIPT.with_name("summary.py"))


def test_summary_builds_the_readme_block_and_the_profile_from_the_boards(tmp_path, monkeypatch):
    """Two hand-made boards: a leads task 1 (100 vs b 150, adamw censored), b leads task 2 (200 vs a 400, adamw 300).
    Ratios to the best: a 1, 2; b 1.5, 1; adamw inf, 1.5.  AlgoPerf's score (tau <= 4, linear credit (4 - r) / 3):
    a (1 + 2/3) / 2 = 0.833, b (5/6 + 1) / 2 = 0.917, adamw (0 + 5/6) / 2 = 0.417."""
    summary = load_summary()
    monkeypatch.setattr(summary, "HERE", tmp_path)  # boards with nothing exported beside them

    def row(m, v, tie=False):
        return {"method": m, "across": {"median": v}, "steps": {"median": v}, "tie_with_leader": tie}

    boards = {"mod-add-p97": [row("a", 100), row("b", 150), row("adamw", "inf")],
              "parity-k3": [row("b", 200), row("adamw", 300), row("a", 400)]}
    table, text = summary.profile(boards)
    assert table == {"mod-add-p97": {"a": 100, "b": 150, "adamw": "inf"},
                     "parity-k3": {"b": 200, "adamw": 300, "a": 400}}
    score = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in text.splitlines()
             if line.startswith("| ") and not line.startswith("| method")}
    assert (score["a"], score["b"], score["adamw"]) == ("0.833", "0.917", "0.417"), text
    rows = summary.readme_rows(boards)
    assert "| (a + b) mod 97, paper MLP, 3 methods, 5 | a; b; adamw | [100 steps; 150 steps; > budget]" in rows
    assert "| sparse parity k = 3, 3 methods, 5 | b; adamw | [200 steps; 300 steps]" in rows
    assert all(r.endswith("| pending |") for r in rows.splitlines()[-2:])  # no follow-up exported beside them
    readme = "x\n<!-- boards:begin -->\nold\n<!-- boards:end -->\ny\n"
    assert summary.with_rows(readme, "new") == "x\n<!-- boards:begin -->\nnew\n<!-- boards:end -->\ny\n"


def test_summary_links_the_follow_ups_exported_beside_a_board(tmp_path, monkeypatch):
    summary = load_summary()
    monkeypatch.setattr(summary, "HERE", tmp_path)
    (tmp_path / "mod-add-p97").mkdir()
    assert summary.follow_ups("mod-add-p97") == "pending"
    for kind in ("transfer", "robustness"):
        (tmp_path / "mod-add-p97" / f"{kind}.md").write_text("x")
    assert summary.follow_ups("mod-add-p97") == (
        "[lr robustness](experiments/24-fair-boards/mod-add-p97/robustness.md), "
        "[transfer](experiments/24-fair-boards/mod-add-p97/transfer.md)")
    (tmp_path / "mod-add-p97" / "handcheck.md").write_text(
        "Hand check of tune `t`: each method's tuned configuration (the pooled search's: ...) against\nx")
    assert "[hand check (pooled)](experiments/24-fair-boards/mod-add-p97/handcheck.md)" in summary.follow_ups(
        "mod-add-p97")


def test_summary_outputs_are_what_the_committed_boards_give():
    assert load_summary().main(["--check"]) == 0  # README's block, profile.json and profile.md are generated


def test_the_transformer_rule_takes_adamw_and_the_five_best_by_score_on_the_cheap_boards(tmp_path):
    summary = load_summary()
    spec = tmp_path / "transformer.toml"
    spec.write_text("[methods.adamw]\n[methods.m1]\n[methods.m2]\n[methods.m6]\n[methods.m5]\n[methods.m4]\n")
    summary.TRANSFORMER_SPEC = spec
    # one cheap board; ratios to the best (100): adamw 1, m1 1, m2 1.1, m6 1.2, m5 1.5, m3 2, m4 4, m7 failed;
    # AlgoPerf's linear score (4 - r) / 3: m1 1, m2 0.967, m6 0.933, m5 0.833, m3 0.667, m4 0, m7 0
    table = {"mod-add-p97": {"adamw": 100, "m1": 100, "m2": 110, "m3": 200, "m4": 400, "m5": 150, "m6": 120,
                             "m7": "inf"},
             "stdlib-gpt": {"m4": 1, "m7": 1}}  # not a cheap board: left out
    text = summary.transformer_rule(table)
    assert "provisional: 1 of 4 cheap boards" in text
    assert ("adamw, then m1 (1), m2 (0.967), m6 (0.933), m5 (0.833), m3 (0.667) (AlgoPerf score over "
            "mod-add-p97)") in text
    assert "the spec differs: add m3; drop m4" in text
    spec.write_text("[methods.adamw]\n[methods.m1]\n[methods.m2]\n[methods.m6]\n[methods.m5]\n[methods.m3]\n")
    assert "the spec's methods are these" in summary.transformer_rule(table)
    assert summary.transformer_rule({"stdlib-gpt": {"m4": 1}}) == ""


def test_studies_reads_the_board_and_the_pooled_study_and_checks_each_against_the_other_studies(tmp_path):
    """Hand-made held-out runs. Method a: studies 0, 1, 2 with tuning values 10, 20, 30 hold out at 100, 80, 60
    steps; the board's row is the median study (1, 80), beaten by study 2 by 1 - 60/80 = 25%; the pooled search
    picks study 0 (the best tuning value; the held-out seeds play no part), beaten by 1 - 60/100 = 40%.  adamw:
    tuning values 5, 5, 9 (the tie goes to study 0, 200 steps), study 1 holds out at 190 (5%: not beaten), study 2
    never reaches the threshold.  a's pooled speed-up against adamw's pooled study: 200 / 100 = 2."""
    summary = load_summary()

    def runs(method, studies, steps, reached=True):
        return [{"method": method, "studies": studies, "steps": str(s), "reached": str(reached)} for s in steps]

    rows = (runs("a", "0", [100] * 5) + runs("a", "1", [80] * 5) + runs("a", "2", [60] * 5)
            + runs("adamw", "0", [200, 200, 200, 210, 220]) + runs("adamw", "1", [190] * 5)
            + runs("adamw", "2", [2700] * 5, reached=False) + runs("b", "0 1 2", [150, 160, 170, 180, 190]))
    held = summary.held_out(rows)
    assert held[("b", 2)] == ([150.0, 160.0, 170.0, 180.0, 190.0], [True] * 5)  # shared runs count for each study

    def entry(method, study, tuning, medians):
        return {"method": method, "study": study,
                "per_study": [{"study": k, "tuning_value": t, "median": m}
                              for k, (t, m) in enumerate(zip(tuning, medians, strict=True))]}

    board = [entry("a", 1, [10, 20, 30], [100, 80, 60]), entry("b", 0, [1, 1, 1], [170, 170, 170]),
             entry("adamw", 0, [5, 5, 9], [200, 190, math.inf])]
    out = summary.studies(board, held)
    a, adamw, b = out["a"], out["adamw"], out["b"]
    assert (a["board"]["study"], a["board"]["best_study"], a["board"]["beaten"]) == (1, 2, True)
    assert a["board"]["gain"] == pytest.approx(0.25)
    assert (a["pooled"]["study"], a["pooled"]["km_median"], a["pooled"]["beaten"]) == (0, 100.0, True)
    assert a["pooled"]["gain"] == pytest.approx(0.4)
    assert (adamw["pooled"]["study"], adamw["pooled"]["km_median"]) == (0, 200.0)
    assert adamw["pooled"]["gain"] == pytest.approx(0.05) and not adamw["pooled"]["beaten"]
    assert b["pooled"]["gain"] == 0 and not b["board"]["beaten"]  # equal studies: none beats another
    assert a["pooled"]["speedup"]["ratio"] == pytest.approx(2.0)
    lo, hi = a["pooled"]["speedup"]["ci"]
    assert 2.0 <= lo <= hi <= 2.2  # adamw's resampled medians lie in 200..220, a's are all 100
    assert adamw["pooled"]["speedup"]["ratio"] == pytest.approx(1.0)
    text = summary.studies_markdown("t", out)
    assert "| adamw | 0: 5 → 200; 1: 5 → 190; 2: 9 → > budget | 200 (study 0) | 5% (study 1) |" in text
    assert text.rstrip().endswith("board reading a; pooled reading a.")
    assert [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")][1:] == [
        "a", "b", "adamw"]  # by the pooled reading

"""``egd tune``'s automatic range widening (issue #28): a winner at an edge of a range widens that range for every
method alike and the whole search reruns in new studies, at most ``tune.widen`` rounds, never past a limit.

The fake executor of tests/test_tune_search.py finishes every run with steps = 10 + 100·|log10(lr / best)| + seed
(best: sgd 2.0, egd 0.3), so every expectation below is computed by hand from that formula.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

import egalitarian.tune as tune_mod
from egalitarian.cli import main
from egalitarian.tune import Dimension, load_tune
from tests.test_tune_search import Fake, quiet, trials_of, whole_and_resumed, write

optuna = pytest.importorskip("optuna")

# 2 decades: stage 1 is the 5 points 0.01, 0.0316228, 0.1, 0.316228, 1.  sgd's best lr 2.0 lies past the high end:
# its stage-1 best is the grid's last point (1: 40 and 41 steps on seeds 0, 1) and its winner the high edge.
# egd's best 0.3 is inside: its winner (about 0.3, log position 0.74) is at no edge.
NARROW = '[space]\n"optimizer.lr" = { low = 0.01, high = 1.0, log = true }\n'
CR = 'stages = "coarse-refine"\ntrials = 4\nbatch = 2\nsampler = "random"\n'
GRID0 = [0.01, 0.0316228, 0.1, 0.316228, 1.0]
GRID1 = [0.01, 0.0316228, 0.1, 0.316228, 1.0, 3.16228, 10.0]  # the range widened by a decade at its high end


def names(spec) -> set[str]:
    return set(optuna.get_all_study_names(f"sqlite:///{spec.study_path.resolve()}"))


def test_an_edge_widens_the_range_for_every_method_and_reruns_the_same_stages(tmp_path, monkeypatch):
    fake = Fake()
    monkeypatch.setattr(tune_mod, "run_sweep", fake)
    spec = load_tune(write(tmp_path, CR, NARROW))
    assert spec.widen == 2  # the default
    studies = tune_mod.search(spec, log=quiet)
    # one widening round: in round 1 (range 0.01..10) sgd's stage-1 best is 3.16228 (30, 31 steps) and its
    # stage 2 spans 1..10, where a high edge (>= 10^0.7 = 5.01) would take >= 10 + 100·log10(2.5) = 50 steps
    assert names(spec) == {"t/sgd", "t/egd", "t/sgd/widen1", "t/egd/widen1"}
    assert studies.spec.round == 1 and studies.spec.space[0] == Dimension("optimizer.lr", 0.01, 10.0)
    r0, r1 = trials_of(spec), trials_of(spec, 1)
    for label in ("sgd", "egd"):  # every method, with or without an edge, gets the same two stages again
        assert [p for _, p in r0[(label, 0)][:5]] == [{"optimizer.lr": x} for x in GRID0]
        assert [p for _, p in r1[(label, 0)][:7]] == [{"optimizer.lr": x} for x in GRID1]
        assert len(r1[(label, 0)]) == 7 + 4 and all(state == "COMPLETE" for state, _ in r1[(label, 0)])
    lo, hi = 3.16228 / 10**0.5, 3.16228 * 10**0.5  # sgd's round-1 stage 2: one decade around 3.16228
    assert all(lo * (1 - 1e-5) <= p["optimizer.lr"] <= hi * (1 + 1e-5) for _, p in r1[("sgd", 0)][7:])
    # egd's stage-1 best is 0.316228 in both rounds, so its stage 2 asks the same decade with the same seed:
    # the same trials, whose runs the store already has
    assert r1[("egd", 0)][7:] == r0[("egd", 0)][5:]
    # runs: round 0, 2 methods x (5 + 4 trials) x 2 seeds = 36; round 1 adds the 2 new grid points of each method
    # (3.16228, 10: 8 runs) and sgd's 4 new stage-2 trials (8 runs); the 5 old grid points are reused
    assert len(fake.configs) == 36 + 8 + 8

    winners = tune_mod.best(spec, studies)  # judged on round 1's range: no edge left
    assert winners["sgd"]["edges"] == {} and winners["egd"]["edges"] == {}
    assert winners["sgd"]["rounds"] == [
        {"round": 0, "ranges": {"optimizer.lr": [0.01, 1.0]},
         "edges": [{"dimension": "optimizer.lr", "side": "high", "hit_by": ["sgd study 0"],
                    "widened_to": [0.01, 10.0], "at_limit": False}]},
        {"round": 1, "ranges": {"optimizer.lr": [0.01, 10.0]}, "edges": []}]
    lr = winners["sgd"]["values"]["optimizer.lr"]
    # the winner is the best trial of both rounds by the formula (the median over seeds 0 and 1; a tie goes to the
    # earlier round, then the earlier trial); round 0's stage 2 reached half a decade past its grid's end (1..3.16)
    from tests.test_tune_search import steps_of
    ranked = sorted((sum(steps_of(p["optimizer.lr"], "sgd", seed) for seed in (0, 1)) / 2, r, i, p["optimizer.lr"])
                    for r, trials in ((0, r0), (1, r1)) for i, (_, p) in enumerate(trials[("sgd", 0)]))
    value, r_best, i_best, lr_best = ranked[0]
    assert (winners["sgd"]["round"], winners["sgd"]["trial"]) == (r_best, i_best)
    assert lr == pytest.approx(lr_best, rel=1e-5) and winners["sgd"]["tuning_value"] == value
    assert winners["egd"]["round"] == 0  # egd: the same trials in both rounds, a tie: the earlier round


def test_the_leaderboard_states_every_round(tmp_path, monkeypatch):
    monkeypatch.setattr(tune_mod, "run_sweep", Fake())
    path = write(tmp_path, CR, NARROW)
    tune_mod.tune(path, log=quiet)
    text = (tmp_path / "store-leaderboard.md").read_text()
    assert ("Ranges widened for every method alike, each round a whole new search in the widened ranges; each "
            "study's winner is its best trial of every round: round 0: optimizer.lr 0.01..1 (optimizer.lr high edge "
            "(sgd study 0) -> 0.01..10); "
            "round 1: optimizer.lr 0.01..10 (no edge).") in text
    assert "every method: optimizer.lr log-uniform 0.01..10. Two stages for every method: 7 points" in text
    assert "At an edge" not in text
    import json

    board = json.loads((tmp_path / "store-leaderboard.json").read_text())
    assert [r["ranges"]["optimizer.lr"] for r in board[0]["rounds"]] == [[0.01, 1.0], [0.01, 10.0]]


def test_widen_0_and_no_edge_keep_the_search_of_today(tmp_path, monkeypatch):
    dirs = {n: tmp_path / n for n in ("zero", "default", "wide", "wide0")}
    for d in dirs.values():
        d.mkdir()
    fakes = {n: Fake() for n in dirs}
    specs = {}
    for n, tune, space in (("zero", CR + "widen = 0\n", NARROW), ("default", CR, NARROW),
                           ("wide", CR, '[space]\n"optimizer.lr" = { low = 0.01, high = 100.0, log = true }\n'),
                           ("wide0", CR + "widen = 0\n",
                            '[space]\n"optimizer.lr" = { low = 0.01, high = 100.0, log = true }\n')):
        specs[n] = load_tune(write(dirs[n], tune, space))
        monkeypatch.setattr(tune_mod, "run_sweep", fakes[n])
        tune_mod.search(specs[n], log=quiet)
    # widen = 0: round 0 only, the same trials as the spec without the key asks in its round 0
    assert names(specs["zero"]) == {"t/sgd", "t/egd"}
    assert trials_of(specs["zero"]) == trials_of(specs["default"])
    # and exactly round 0's runs: 2 methods x (5 + 4) trials x 2 seeds, each the plan of its trial
    trials = trials_of(specs["zero"])
    ids = {r.id for c in specs["zero"].contenders for _, p in trials[(c.label, 0)]
           for r in tune_mod.plan(specs["zero"], c, tune_mod.trial_values(specs["zero"], c, p), [0, 1])}
    assert set(fakes["zero"].configs) == ids and len(ids) == 36
    assert set(fakes["zero"].configs) < set(fakes["default"].configs)
    # no edge (0.01..100 holds both optima inside): no widening round, whatever tune.widen says
    assert names(specs["wide"]) == names(specs["wide0"]) == {"t/sgd", "t/egd"}
    assert trials_of(specs["wide"]) == trials_of(specs["wide0"])
    assert set(fakes["wide"].configs) == set(fakes["wide0"].configs)
    # widen = 0 flags the edge as before
    text = tune_mod.leaderboard_markdown(specs["zero"], tune_mod.report(
        specs["zero"], tune_mod.best(specs["zero"], tune_mod.search(specs["zero"], log=quiet))))
    assert "| sgd | lr=" in text and "(high edge)" in text
    assert text.count("At an edge of the search range (widen it to be sure): sgd.") == 1
    assert "Ranges widened" not in text


def test_a_search_killed_in_round_1_resumes_as_if_never_stopped(tmp_path, monkeypatch):
    # run_sweep calls: round 0 = stage 1, then stage 2 in 2 batches (calls 1-3); round 1 = calls 4-6.  Killed in
    # round 1's stage 1, then (each rerun's round 0 runs nothing) in its stage 2's first and second batch
    whole, broken, studies = whole_and_resumed(tmp_path, monkeypatch, CR + "studies = 2\n", NARROW, (4, 2, 2))
    assert names(broken) == names(whole) and studies.spec.round == 1
    assert trials_of(broken) == trials_of(whole) and trials_of(broken, 1) == trials_of(whole, 1)
    again = Fake()
    monkeypatch.setattr(tune_mod, "run_sweep", again)
    tune_mod.search(broken, log=quiet)
    assert again.calls == 0  # a finished search, widening included, does nothing


MOMENTUM = ('[space]\n"optimizer.momentum" = { low = 0.5, high = 0.99, log = false, points = 3, '
            'limit_high = 1.0 }\n')


class MomentumFake(Fake):
    """steps = 10 + 100·(1 − momentum) + seed: the more momentum the faster, so the winner is the range's top."""

    def steps(self, cfg: dict) -> int:
        return round(10 + 100 * (1 - cfg["optimizer"]["momentum"]) + cfg["train"]["seed"])


def test_a_limit_stops_the_widening(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tune_mod, "run_sweep", MomentumFake())
    path = write(tmp_path, 'sampler = "grid"\ntrials = 3\nwiden = 2\n', MOMENTUM)
    spec = load_tune(path)
    tune_mod.tune(path, log=quiet)
    # round 0: grid 0.5, 0.745, 0.99 -> 0.99 wins (high edge); + half the width 0.245 = 1.235, past the limit: 1.
    # round 1: grid 0.5, 0.75, 1 -> 1 wins, at the limit: no round 2 although tune.widen = 2
    assert names(spec) == {"t/sgd", "t/egd", "t/sgd/widen1", "t/egd/widen1"}
    assert sorted(p["optimizer.momentum"] for _, p in trials_of(spec)[("sgd", 0)]) == [0.5, 0.745, 0.99]
    assert sorted(p["optimizer.momentum"] for _, p in trials_of(spec, 1)[("sgd", 0)]) == [0.5, 0.75, 1.0]
    text = (tmp_path / "store-leaderboard.md").read_text()
    assert "| sgd | momentum=1 (high edge, at its limit) |" in text
    assert "round 0: optimizer.momentum 0.5..0.99 (optimizer.momentum high edge (sgd study 0, egd study 0) -> " \
           "0.5..1); round 1: optimizer.momentum 0.5..1 (optimizer.momentum high edge (sgd study 0, egd study 0), " \
           "at its limit)." in text
    assert "At an edge that is the range's limit (limit_low/limit_high: not widened): sgd, egd." in text
    # the spec changed under a finished widening: refused with one line, by the studies' record of the spec ...
    capsys.readouterr()
    path.write_text(path.read_text().replace("limit_high = 1.0", "limit_high = 0.995"))
    assert main(["tune", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "space.optimizer.momentum.limit_high = 0.995" in err and "with 1.0" in err
    # ... and, where there is no such record (a store made before it existed), because round 1's studies were
    # made for 0.5..1
    monkeypatch.setattr(tune_mod, "_check_made_with", lambda *a: None)
    assert main(["tune", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "widening round 1" in err and "0.995" in err


def test_widened_ranges_by_hand():
    lr = Dimension("optimizer.lr", 1e-5, 100.0)
    assert (lr.widened("low").low, lr.widened("high").high) == (1e-6, 1000.0)  # a decade
    assert tune_mod.coarse_grid(lr)[0] == 1e-5 and set(tune_mod.coarse_grid(lr)) < set(
        tune_mod.coarse_grid(lr.widened("low").widened("high")))  # the x sqrt(10) lattice keeps its points
    assert Dimension("x", 1e-5, 1.0, limit_low=3e-6).widened("low").low == 3.16228e-6  # half a decade fits
    assert Dimension("x", 1e-5, 1.0, limit_low=5e-6).widened("low").low == 5e-6  # neither: up to the limit
    assert Dimension("x", 5e-6, 1.0, limit_low=5e-6).widened("low") is None  # at the limit
    m = Dimension("m", 0.5, 0.9, log=False)
    assert (m.widened("low").low, m.widened("high").high) == (0.3, 1.1)  # half the width, 0.4 / 2
    assert Dimension("m", 0.5, 0.9, log=False, limit_high=1.0).widened("high").high == 1.0
    assert Dimension("m", 0.5, 1.0, log=False, limit_high=1.0).widened("high") is None
    assert Dimension("w", 5, 100, integer=True).widened("low").low == 1  # 0.5, then 1.58 -> 1 (>= 1)
    assert Dimension("w", 1, 100, integer=True).widened("low") is None
    assert Dimension("w", 0, 9, log=False, integer=True).widened("low").low == -5  # 0 - 4.5, rounded outward


def test_every_edge_of_every_study_widens_its_side(tmp_path):
    path = write(tmp_path, "trials = 3\n", '[space]\n"optimizer.lr" = { low = 0.01, high = 100.0 }\n'
                 '"optimizer.momentum" = { low = 0.5, high = 0.9, log = false }\n')
    spec = load_tune(path)
    dist = {"optimizer.lr": optuna.distributions.FloatDistribution(0.01, 100.0, log=True),
            "optimizer.momentum": optuna.distributions.FloatDistribution(0.5, 0.9)}

    def study(*trials):
        st = optuna.create_study()
        for lr, mom, v in trials:
            st.add_trial(optuna.trial.create_trial(params={"optimizer.lr": lr, "optimizer.momentum": mom},
                                                   distributions=dist, value=v))
        return st

    # sgd's winner: lr 0.012 (log position 0.02: low) and momentum 0.89 (0.975: high); egd's: lr 90 (0.99: high)
    studies = {"sgd": [study((1.0, 0.7, 5.0), (0.012, 0.89, 1.0))], "egd": [study((90.0, 0.7, 1.0))]}
    nxt = tune_mod._widened(spec, studies)
    assert nxt.round == 1 and [(d.low, d.high) for d in nxt.space] == [(0.001, 1000.0), (0.5, 1.1)]
    assert [(e["dimension"], e["side"], e["hit_by"], e["widened_to"]) for e in nxt.history[0]["edges"]] == [
        ("optimizer.lr", "low", ["sgd study 0"], [0.001, 100.0]),  # both sides: the second builds on the first
        ("optimizer.lr", "high", ["egd study 0"], [0.001, 1000.0]),
        ("optimizer.momentum", "high", ["sgd study 0"], [0.5, 1.1])]
    assert tune_mod._widened(spec, {"sgd": [study((1.0, 0.7, 1.0))], "egd": [study((0.5, 0.6, 1.0))]}) is None
    # a censored winner (value >= CENSORED: no trial reached the threshold) widens nothing, though at an edge
    censored = tune_mod.CENSORED + 0.5
    assert tune_mod._widened(spec, {"sgd": [study((0.012, 0.89, censored))], "egd": [study((1.0, 0.7, 1.0))]}) is None


def test_the_low_side_of_an_off_dimension_is_at_its_limit():
    wd = Dimension("optimizer.weight_decay", 1e-5, 1.0, off=True)
    assert wd.widened("low") is None  # 0 is already searched below the range
    assert wd.widened("high").high == 10.0  # the high side widens by a decade as any log range


def test_a_limit_bounds_stage_2_and_the_widening_of_the_first_dimension(tmp_path, monkeypatch):
    """lr 0.01..1 with limit_high = 1: sgd's stage-1 best is the grid's top, 1; stage 2's decade around it
    (0.316228..3.16228) stops at 1, and the edge is at its limit, so nothing widens; egd's low side is free."""
    monkeypatch.setattr(tune_mod, "run_sweep", Fake())
    spec = load_tune(write(tmp_path, CR, '[space]\n"optimizer.lr" = { low = 0.01, high = 1.0, limit_high = 1.0 }\n'))
    studies = tune_mod.search(spec, log=quiet)
    assert names(spec) == {"t/sgd", "t/egd"}
    stage2 = [p["optimizer.lr"] for _, p in trials_of(spec)[("sgd", 0)][5:]]
    assert len(stage2) == 4 and all(0.316228 <= x <= 1.0 for x in stage2)
    w = tune_mod.best(spec, studies)["sgd"]
    assert w["edges"] == {"optimizer.lr": "high"} and w["at_limit"] == ["optimizer.lr"]


def test_a_censored_winner_at_an_edge_is_named_as_such(tmp_path, monkeypatch):
    """sgd never reaches the threshold and its winner, ranked by final accuracy (here higher at a higher lr), sits at
    the high edge: no widening round follows and the board says why instead of advising to raise tune.widen."""

    class Censoring(Fake):
        def summary(self, cfg):
            if cfg["optimizer"]["name"] != "sgd":
                return super().summary(cfg)
            return {"grokked": False, "status": "budget", "grok": None, "steps": 1000, "epochs": 1000,
                    "seconds": 10.0, "final_test_acc": min(cfg["optimizer"]["lr"], 1.0) / 2}

    monkeypatch.setattr(tune_mod, "run_sweep", Censoring())
    path = write(tmp_path, 'stages = "coarse-refine"\ntrials = 2\nsampler = "random"\n',  # grid 0.01..1
                 '[space]\n"optimizer.lr" = { low = 0.01, high = 1.0, log = true }\n')
    tune_mod.tune(path, log=quiet)
    text = (tmp_path / "store-leaderboard.md").read_text()
    assert "At an edge but censored" in text and "sgd" in text.split("At an edge but censored")[1].splitlines()[0]
    assert "raise it to widen again" not in text and "widening round" not in text


# ------------------------------------------------------------------------------ stage 2's window (coarse-refine)

WIDE = '[space]\n"optimizer.lr" = { low = 0.01, high = 100.0, log = true }\n'  # grid: 9 points 0.01 .. 100
GRID = [0.01, 0.0316228, 0.1, 0.316228, 1.0, 3.16228, 10.0, 31.6228, 100.0]


def two_stage_study(best_grid_point: float, stage2: list[tuple[float, float]]):
    """A finished coarse-refine study by hand: stage 1's grid, every point 100 steps but ``best_grid_point`` (50),
    then stage 2's (lr, steps) trials."""
    dist = {"optimizer.lr": optuna.distributions.FloatDistribution(0.01, 100.0, log=True)}
    st = optuna.create_study()
    for lr, v in [(x, 50.0 if x == best_grid_point else 100.0) for x in GRID] + stage2:
        st.add_trial(optuna.trial.create_trial(params={"optimizer.lr": lr}, distributions=dist, value=v))
    return st


def test_a_stage_2_winner_at_an_end_of_its_window_widens_the_window_for_every_method(tmp_path):
    """sgd's stage 1 is best at 0.316228, so its stage 2 searched one decade around it, 0.1..1; its winner 0.95
    sits at log position log10(9.5) = 0.98 of that window: the window's high edge, though 0.95 is in the middle
    of the range 0.01..100. egd's winner 0.35 (position 0.52 of its window 0.1..1) is at no edge."""
    spec = load_tune(write(tmp_path, CR, WIDE))
    assert (spec.window, spec.window_from) == (0.5, 0)  # the defaults
    assert tune_mod.refine_window(spec, 0.316228) == (0.1, 1.0)
    studies = {"sgd": [two_stage_study(0.316228, [(0.15, 60.0), (0.5, 55.0), (0.95, 40.0)])],
               "egd": [two_stage_study(0.316228, [(0.15, 60.0), (0.35, 40.0), (0.9, 55.0)])]}
    sgd, egd = (tune_mod._winner(spec, c, studies[c.label][0]) for c in spec.contenders)
    assert sgd["edges"] == {"optimizer.lr window": "high"} and egd["edges"] == {}
    assert "at_limit" not in sgd
    assert tune_mod._fmt_values(sgd) == "lr=0.95 (high edge of stage 2's window)"

    nxt = tune_mod._widened(spec, studies)  # the range stays; the window doubles its half-width
    assert nxt.round == 1 and nxt.space == spec.space and nxt.window == 1.0
    assert nxt.history[0]["edges"] == [{"dimension": "optimizer.lr window", "side": "high", "hit_by": ["sgd study 0"],
                                        "widened_to": [-1.0, 1.0], "at_limit": False}]
    assert tune_mod._ranges(spec) == {"optimizer.lr": [0.01, 100.0]}  # as the studies made before the rule stored
    assert tune_mod._ranges(nxt) == {"optimizer.lr": [0.01, 100.0], "optimizer.lr window": [-1.0, 1.0]}
    # round 1 asks every method's stage 2 over two decades around its stage-1 best: ×1/10..×10
    assert tune_mod.refine_window(nxt, 0.316228) == (0.0316228, 3.16228)
    egd_c = next(c for c in spec.contenders if c.label == "egd")
    stage1_only = two_stage_study(0.316228, [])
    ((_, dists),) = tune_mod._next_asks(replace(nxt, batch=1), egd_c, 0, stage1_only, optuna)
    assert (dists["optimizer.lr"].low, dists["optimizer.lr"].high) == (0.0316228, 3.16228)
    # judged on round 1's window (±1 decade), 0.95 is at position 0.74 of 0.0316..3.16: no edge any more
    assert tune_mod._winner(nxt, spec.contenders[0], studies["sgd"][0])["edges"] == {}
    text = tune_mod._widening_text([*nxt.history, {"round": 1, "ranges": tune_mod._ranges(nxt), "edges": []}])
    assert "round 0: optimizer.lr window ±0.5 decades (optimizer.lr window high edge (sgd study 0) -> ±1 decades)" \
        in text and "round 1: optimizer.lr window ±1 decades (no edge)" in text
    # a round before tune.window_widens_from only flags its window edges
    assert tune_mod._widened(replace(spec, window_from=1), studies) is None
    assert tune_mod._widened(replace(spec, round=1, window_from=1), studies).window == 1.0  # from round 1 on
    # doubling: a window of ±1 decade whose winner sits at its end (0.0316 of 0.0316..3.16) goes to ±2
    at_one = {"sgd": [two_stage_study(0.316228, [(0.0335, 40.0), (0.5, 55.0)])], "egd": studies["egd"]}
    assert tune_mod._widened(nxt, at_one).window == 2.0
    # the low end: stage 2 best at its window's bottom (0.105: position 0.02)
    low = {"sgd": [two_stage_study(0.316228, [(0.105, 40.0), (0.5, 55.0)])], "egd": studies["egd"]}
    assert tune_mod._widened(spec, low).history[0]["edges"][0]["side"] == "low"


def test_window_widens_from_must_be_a_round(tmp_path, capsys):
    path = write(tmp_path, CR + "window_widens_from = -1\n", WIDE)
    assert main(["tune", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tune.window_widens_from" in err and "-1" in err


# ------------------------------------------------------------------ a study's winner: its best trial of every round

TWO_DIMS = ('[space]\n"optimizer.lr" = { low = 0.01, high = 1.0, log = true }\n'
            '"loss.weight_decay" = { low = 1e-5, high = 1.0, log = true }\n')


def _study(spec, trials: list[tuple[float, float, float]]):
    """An in-memory study holding ``(lr, weight decay, value)`` trials, on ``spec``'s ranges."""
    dists = {d.field: optuna.distributions.FloatDistribution(d.low, d.high, log=True) for d in spec.space}
    st = optuna.create_study(direction="minimize")
    for lr, wd, value in trials:
        st.add_trial(optuna.trial.create_trial(params={"optimizer.lr": lr, "loss.weight_decay": wd},
                                               distributions=dists, value=value))
    return st


def test_a_study_wins_with_its_best_trial_of_every_round_judged_on_the_last_rounds_ranges(tmp_path):
    spec0 = load_tune(write(tmp_path, 'trials = 2\nsampler = "random"\n', TWO_DIMS))
    # round 0 (lr 0.01..1): sgd's best is lr 0.95 (log position log(95)/log(100) = 0.989: the high edge), weight
    # decay 0.9 (position 4.954/5 = 0.991: the high edge, of a range no round widens); egd's best is lr 0.1
    r0 = {"sgd": [_study(spec0, [(0.95, 0.9, 20.0), (0.05, 1e-3, 60.0)])],
          "egd": [_study(spec0, [(0.1, 1e-3, 30.0), (0.2, 1e-3, 31.0)])]}
    record = tune_mod._round_record(spec0, r0)
    assert [(e["dimension"], e["side"], e["hit_by"]) for e in record["edges"]] == [
        ("optimizer.lr", "high", ["sgd study 0"]), ("loss.weight_decay", "high", ["sgd study 0"])]
    lr1 = Dimension("optimizer.lr", 0.01, 10.0)
    spec1 = replace(spec0, space=[lr1, spec0.space[1]], round=1, history=(record,))
    # round 1 (lr 0.01..10): neither method beats its round-0 value; egd ties it (30), so the earlier round wins
    r1 = {"sgd": [_study(spec1, [(3.0, 1e-3, 25.0), (0.5, 1e-3, 40.0)])],
          "egd": [_study(spec1, [(0.3, 1e-2, 30.0), (5.0, 1e-3, 90.0)])]}
    found = tune_mod.Studies(r1)
    found.spec, found.earlier = spec1, [(spec0, r0)]
    winners = tune_mod.best(spec0, found)
    sgd, egd = winners["sgd"], winners["egd"]
    assert (sgd["round"], sgd["trial"], sgd["tuning_value"]) == (0, 0, 20.0)
    assert sgd["values"]["optimizer.lr"] == 0.95 and sgd["values"]["loss.weight_decay"] == 0.9
    # on round 1's lr range 0.01..10, lr 0.95 sits at log position log10(95)/3 = 0.659: no edge; weight decay's
    # range did not widen, so its high edge stays
    assert sgd["edges"] == {"loss.weight_decay": "high"}
    assert (egd["round"], egd["tuning_value"], egd["values"]["optimizer.lr"]) == (0, 30.0, 0.1)
    assert egd["edges"] == {}
    assert [r["round"] for r in sgd["rounds"]] == [0, 1]
    # a single-round search: no round key, the winner as before
    alone = tune_mod.Studies(r0)
    alone.spec, alone.earlier = spec0, []
    assert "round" not in tune_mod.best(spec0, alone)["sgd"]


def test_carried_keeps_a_window_edge_only_while_the_window_is_unchanged(tmp_path):
    spec = load_tune(write(tmp_path, 'stages = "coarse-refine"\ntrials = 2\nsampler = "random"\n', NARROW))
    key = tune_mod.window_key(spec)
    w = {"edges": {key: "high"}, "searched": {"optimizer.lr": 0.3}, "values": {}, "tuning_value": 5.0, "trial": 6}
    later = replace(spec, round=2, window=1.0)
    assert tune_mod._carried(later, replace(spec, round=1), w)["edges"] == {}           # widened since: gone
    assert tune_mod._carried(later, replace(spec, round=1, window=1.0), w)["edges"] == {key: "high"}
    assert tune_mod._carried(spec, spec, w) is w                                          # the last round's own

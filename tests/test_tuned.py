"""``egd robustness`` and ``egd transfer`` (issue #28, items 5 and 7): a finished tune's tuned configurations, the lr
scaled around them and run on held-out variants of the task.

A fake executor finishes every run from a formula of its config (robustness: steps = 100·max(q, 1/q)^EXP with q the
lr over the method's best lr, censored above 4.5× it; transfer: a hand-written table per task variant), and the
leaderboard JSON is written by hand, so every expected number below is computed by hand from those, never from the
code's earlier output.  One test at the end trains for real on a tiny task.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

import egalitarian.tune as tune_mod
import egalitarian.tuned as tuned_mod
from egalitarian.cli import main
from egalitarian.sweep import Store
from egalitarian.tune import load_tune, trial_values
from egalitarian.tuned import FACTORS, load_robustness, load_transfer, ranks, window
from tests.test_tune import BASE

SMALL_SPACE = BASE + """
[tune]
name = "m"
trials = 2
[space]
"optimizer.lr" = { low = 1e-3, high = 10.0, log = true }
"""  # a two-trial search whose space goes on in each test

TUNE = """
[tune]
name = "t"
trials = 2
tuning_seeds = [0, 1]
reporting_seeds = [10, 11, 12, 13, 14]

[set]
"train.max_epochs" = 3

[report_set]
"train.eval_unit" = "step"
"train.eval_every" = 1

[space]
"optimizer.lr" = { low = 1e-3, high = 100.0, log = true }
"loss.weight_decay" = { low = 1e-5, high = 1.0, log = true, off = true }

[methods.sgd]
[methods.egd]
[methods.egd_all]
method = "egd"
set = { "optimizer.whiten" = "all" }
"""

# the board: sgd tuned at its best lr; egd tuned at twice its best lr (so its best point is factor 0.5)
VALUES = {"sgd": {"optimizer.lr": 2.0, "loss.weight_decay": 0.0},
          "egd": {"optimizer.lr": 0.6, "loss.weight_decay": 0.001}}
BEST = {"sgd": 2.0, "egd": 0.3}
EXP = {"sgd": 0.25, "egd": 1.0}
SOURCE = {"sgd": (200.0, [190.0, 210.0]), "egd": (100.0, [95.0, 105.0])}


def row(method: str) -> dict:
    """A leaderboard row as `egd tune` writes it (the fields these commands read, plus a few it has)."""
    median, ci = SOURCE[method]
    return {"method": method, "runs": 5, "done": 5, "grokked": 5, "values": VALUES[method], "edges": {},
            "steps": {"median": median, "ci": ci}, "epochs": {"median": None, "ci": [None, None]}}


def write_tune(tmp_path: Path, board: bool = True) -> Path:
    path = tmp_path / "tune.toml"
    path.write_text(BASE + TUNE.replace('name = "t"', f'name = "t"\nstore = "{tmp_path / "store.sqlite"}"'))
    if board:
        (tmp_path / "store-leaderboard.json").write_text(json.dumps([row("egd"), row("sgd")]))
    return path


def write_spec(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text('tune = "tune.toml"\n' + text)
    return path


def finished(cfg: dict, steps: float | None) -> dict:
    """A run's summary: grokked at ``steps``, or censored at the budget (1000 steps) when ``steps`` is None."""
    return {"grokked": steps is not None, "status": "grokked" if steps is not None else "budget",
            "grok": {"step": steps, "epoch": steps, "seconds": 1.0} if steps is not None else None,
            "steps": 1000, "epochs": 1000, "seconds": 10.0, "final_test_acc": 1.0 if steps else 0.1}


def robustness_steps(cfg: dict) -> float | None:
    name = "egd" if cfg["optimizer"]["name"] == "egd" else "sgd"
    q = cfg["optimizer"]["lr"] / BEST[name]
    return None if q > 4.5 else round(100 * max(q, 1 / q) ** EXP[name])


class Fake:
    """Stands in for run_sweep: finishes each pending run with ``outcome(config)``; records what it ran."""

    def __init__(self, outcome):
        self.outcome = outcome
        self.executed: list[str] = []
        self.configs: dict[str, dict] = {}

    def __call__(self, sweep, workers=None, backend="local", address=None, progress=None):
        with Store(sweep.store) as st:
            st.add(sweep.name, sweep.runs)
            by_id = {r.id: r for r in sweep.runs}
            for r in st.runs(list(by_id)):
                if r["status"] == "pending":
                    cfg = by_id[r["id"]].config
                    st.claim([r["id"]], "fake")
                    st.finish(r["id"], "fake", finished(cfg, self.outcome(cfg)), [])
                    self.executed.append(r["id"])
                    self.configs[r["id"]] = cfg
            return st.counts(list(by_id))


def quiet(*a, **k):
    return None


# ---------------------------------------------------------------------------------------------- the window


def test_the_window_on_hand_made_curves():
    f = list(FACTORS)  # 0.125 .. 8, x sqrt(2) apart
    assert f[0] == 0.125 and f[6] == 1.0 and f[-1] == 8.0 and len(f) == 13
    inf = math.inf
    # best 100 at x1; <= 200 from x0.354 (200) to x2 (180): 2 / 0.354 = 2^2.5
    w = window(f, [inf, 400, 300, 200, 150, 120, 100, 110, 180, 250, inf, inf, inf])
    assert (w["best"], w["best_factor"], w["lo"], w["hi"], w["open"]) == (100, 1.0, f[3], 2.0, False)
    assert w["ratio"] == pytest.approx(2 ** 2.5) and w["resolution"] == pytest.approx(2 ** 0.5)
    # the window reaches the grid's low end: "at least"
    w = window(f, [150, 120, 100, 300, 400, *[inf] * 8])
    assert (w["lo"], w["hi"], w["open"]) == (0.125, 0.25, True) and w["ratio"] == pytest.approx(2)
    # a censored point inside ends the window, although later points are within 2x again
    w = window(f, [100, 150, inf, 120, 110, *[400] * 8])
    assert (w["lo"], w["hi"], w["open"], w["ratio"]) == (0.125, f[1], True, pytest.approx(2 ** 0.5))
    # two runs within 2x: the one with the best point counts, though the other is wider
    w = window(f, [300, 180, 170, 160, 150, 400, 400, 90, 400, 400, 400, 400, 400])
    assert (w["lo"], w["hi"], w["best_factor"], w["ratio"]) == (f[7], f[7], f[7], 1.0)
    assert window(f, [inf] * 13) is None  # never reached: no window
    assert window([1.0], [50.0])["open"] is True  # one point is both ends of its grid


def test_the_hand_check_on_hand_made_points():
    inf = math.inf

    def pts(medians, factors=(0.5, 1.0, 2.0)):
        return [{"factor": f, "median": m} for f, m in zip(factors, medians, strict=True)]

    assert tuned_mod.hand_check(pts([110, 100, 120])) == {"tuned": 100, "best": 100, "best_factor": 1.0,
                                                          "gain": 0.0, "beaten": False}
    h = tuned_mod.hand_check(pts([90, 100, 120]))  # 10% better: within the standard's 15%
    assert h["best_factor"] == 0.5 and h["gain"] == pytest.approx(0.1) and not h["beaten"]
    h = tuned_mod.hand_check(pts([inf, 100, 84]))  # 16% better: beaten
    assert h["best_factor"] == 2.0 and h["gain"] == pytest.approx(0.16) and h["beaten"]
    assert tuned_mod.hand_check(pts([80, 100, 80]))["best_factor"] == 0.5  # a tie: the first nearest to x1
    assert tuned_mod.hand_check(pts([inf, inf, 300]))["gain"] == 1.0  # the tuned lr never reached the threshold
    assert tuned_mod.hand_check(pts([inf, inf, inf])) is None
    assert tuned_mod.hand_check(pts([100, 90], factors=(0.5, 2.0))) is None  # no tuned point on the lattice


def test_ranks_share_ties():
    inf = math.inf
    assert ranks({"a": 100, "b": 100, "c": 50, "d": inf, "e": inf}) == {"a": 2, "b": 2, "c": 1, "d": 4, "e": 4}


# ------------------------------------------------------------------------------------------- robustness


def test_robustness_plans_tuned_values_times_factors_and_reuses_the_boards_runs(tmp_path, monkeypatch):
    fake = Fake(robustness_steps)
    monkeypatch.setattr(tune_mod, "run_sweep", fake)
    monkeypatch.setattr(tuned_mod, "run_sweep", fake)
    tspec = load_tune(write_tune(tmp_path))
    # the board's reporting runs, as `egd tune` runs them (each method's winner on the reporting seeds)
    winners = {c.label: {"trial": 0, "searched": {}, "values": VALUES[c.label], "tuning_value": 1.0,
                         "censored": False, "edges": {}, "trials": 1} for c in tspec.contenders if c.label in VALUES}
    tune_mod.report(replace(tspec, contenders=tspec.contenders[:2]), winners)
    board_ids = set(fake.executed)
    assert len(board_ids) == 2 * 5
    fake.executed.clear()

    spec = write_spec(tmp_path, '[robustness]\nmethods = ["sgd", "egd"]\n')
    result = tuned_mod.robustness(spec, log=quiet)
    # 2 methods x 13 factors x 5 seeds, factor 1 being the board's own runs: not run again
    assert len(fake.executed) == 2 * 12 * 5 and not set(fake.executed) & board_ids
    planned = tuned_mod.robustness_plan(load_robustness(spec), {m: {"values": VALUES[m]} for m in VALUES})
    assert {r.id for m in VALUES for r in planned[(m, 1.0)]} == board_ids
    for (m, f), runs in planned.items():
        assert len(runs) == 5
        for r in runs:
            cfg = fake.configs.get(r.id) or r.config
            assert cfg["optimizer"]["lr"] == pytest.approx(VALUES[m]["optimizer.lr"] * f, rel=1e-5)
            assert cfg["loss"]["weight_decay"] == VALUES[m]["loss.weight_decay"]  # the other tuned values kept
            assert (cfg["train"]["eval_unit"], cfg["train"]["eval_every"]) == ("step", 1)  # [report_set]
            assert cfg["train"]["max_epochs"] == 3  # [set]
        assert sorted(r.config["train"]["seed"] for r in runs) == [10, 11, 12, 13, 14]
    # hand-computed curves (see the module docstring's formula; every seed gives the same steps)
    egd = [p["median"] for p in result["methods"]["egd"]["points"]]
    assert egd == [400, 283, 200, 141, 100, 141, 200, 283, 400, math.inf, math.inf, math.inf, math.inf]
    sgd = [p["median"] for p in result["methods"]["sgd"]["points"]]
    assert sgd == [168, 154, 141, 130, 119, 109, 100, 109, 119, 130, 141, math.inf, math.inf]
    assert [p["grokked"] for p in result["methods"]["egd"]["points"]] == [5] * 9 + [0] * 4
    text = (tmp_path / "store-robustness.md").read_text()
    assert "| sgd | 2 | ×1 (2) | 100 | ≥ 32 (×0.125..×4) | not beaten |" in text
    # egd's tuned lr takes 200 steps, x0.5 takes 100: a search that missed by 50% on the same seeds
    assert ("| egd | 0.6 | ×0.5 (0.3) | 100 | 4 (×0.25..×1) | 200 → 100 at ×0.5 (−50%, beaten by > 15%: "
            "underpowered) |") in text
    assert "| ×2.83 | 130 [130, 130] (5/5) | > budget [∞, ∞] (0/5) |" in text
    assert "smoke test" not in text
    saved = json.loads((tmp_path / "store-robustness.json").read_text())
    assert saved["methods"]["egd"]["window"]["ratio"] == 4.0 and saved["methods"]["egd"]["points"][9]["median"] is None
    assert saved["methods"]["egd"]["hand_check"] == {"tuned": 200, "best": 100, "best_factor": 0.5, "gain": 0.5,
                                                     "beaten": True}
    assert saved["methods"]["sgd"]["hand_check"]["gain"] == 0.0 and not saved["methods"]["sgd"]["hand_check"]["beaten"]
    assert (tmp_path / "store-robustness.png").read_bytes()[:4] == b"\x89PNG"

    # resume: a second call runs nothing new and writes the same table
    fake.executed.clear()
    tuned_mod.robustness(spec, log=quiet)
    assert fake.executed == [] and (tmp_path / "store-robustness.md").read_text() == text


def test_a_report_set_gives_the_runs_another_cadence_and_says_so(tmp_path, monkeypatch):
    """``report_set`` over the tune's [report_set]: the runs evaluate per epoch with the replay instead of every step;
    their configs differ from the board's reporting runs (so factor 1 runs again), and the table states it."""
    fake = Fake(robustness_steps)
    monkeypatch.setattr(tuned_mod, "run_sweep", fake)
    write_tune(tmp_path)
    spec = write_spec(tmp_path, '[robustness]\nmethods = ["egd"]\nfactors = [1, 2]\nreport_set = { '
                      '"train.eval_unit" = "epoch", "train.refine_grok" = true }\n')
    loaded = load_robustness(spec)
    planned = tuned_mod.robustness_plan(loaded, {"egd": {"values": VALUES["egd"]}})
    for runs in planned.values():
        for r in runs:
            train = r.config["train"]
            assert (train["eval_unit"], train["eval_every"], train["refine_grok"], train["max_epochs"]) == (
                "epoch", 1, True, 3)  # report_set over [report_set] (eval_every kept), [set] kept
    plain = tuned_mod.robustness_plan(load_robustness(write_spec(tmp_path, '[robustness]\nmethods = ["egd"]\n'
                                                                 'factors = [1, 2]\n', "plain.toml")),
                                      {"egd": {"values": VALUES["egd"]}})
    assert not {r.id for r in planned[("egd", 1.0)]} & {r.id for r in plain[("egd", 1.0)]}
    tuned_mod.robustness(spec, log=quiet)
    assert len(fake.executed) == 2 * 5
    text = (tmp_path / "store-robustness.md").read_text()
    assert "evaluation every 1 epoch(s) (the threshold step found to 1 step by replay: train.refine_grok)" in text


def test_fewer_than_five_seeds_is_a_smoke_test(tmp_path, monkeypatch):
    monkeypatch.setattr(tuned_mod, "run_sweep", Fake(robustness_steps))
    write_tune(tmp_path)
    tuned_mod.robustness(write_spec(tmp_path, '[robustness]\nmethods = ["egd"]\nfactors = [1, 2]\nseeds = [7]\n'),
                         log=quiet)
    text = (tmp_path / "store-robustness.md").read_text()
    assert "smoke test, not a result" in text and "| ×2 | 400 [400, 400] (1/1) |" in text


# --------------------------------------------------------------------------------------------- transfer

# steps per (optimizer, p, op) of the fake; None: censored at the budget
TRANSFER_STEPS = {("sgd", 5, "add"): 150, ("egd", 5, "add"): 300, ("sgd", 7, "sub"): None, ("egd", 7, "sub"): 120}
VARIANTS = '[variants.p5]\n"task.p" = 5\n[variants.sub]\n"task.op" = "sub"\n'


def transfer_steps(cfg: dict) -> float | None:
    return TRANSFER_STEPS[(cfg["optimizer"]["name"], cfg["task"]["p"], cfg["task"].get("op", "add"))]


def test_transfer_table_ranks_and_score_on_a_hand_computed_example(tmp_path, monkeypatch):
    fake = Fake(transfer_steps)
    monkeypatch.setattr(tuned_mod, "run_sweep", fake)
    write_tune(tmp_path)
    spec = write_spec(tmp_path, f'[transfer]\nmethods = ["sgd", "egd"]\nstore = "{tmp_path / "tr.sqlite"}"\n'
                      + VARIANTS)
    result = tuned_mod.transfer(spec, log=quiet)
    assert len(fake.executed) == 2 * 2 * 5  # variants x methods x seeds, into the transfer store
    for cfg in fake.configs.values():  # tuned values + the variant's override, with [set] and [report_set]
        m = cfg["optimizer"]["name"]
        assert cfg["optimizer"]["lr"] == VALUES[m]["optimizer.lr"]
        assert cfg["loss"]["weight_decay"] == VALUES[m]["loss.weight_decay"]
        assert (cfg["train"]["eval_every"], cfg["train"]["max_epochs"]) == (1, 3)
        assert (cfg["task"]["p"], cfg["task"].get("op", "add")) in {(5, "add"), (7, "sub")}
    with Store(tmp_path / "tr.sqlite", create=False) as st:
        assert len(st.runs()) == 20
    # ratios to the best per variant: p5 sgd 1, egd 2; sub sgd inf, egd 1.  AlgoPerf's credit (4 - r) / 3:
    # sgd (1 + 0) / 2 = 1/2, egd (2/3 + 1) / 2 = 5/6
    assert result["score"] == {"sgd": pytest.approx(0.5), "egd": pytest.approx(5 / 6)}
    assert result["best"] == ["egd"]
    cols = result["columns"]
    assert {c: {m: cols[c][m]["rank"] for m in cols[c]} for c in cols} == {
        "source": {"sgd": 2, "egd": 1}, "p5": {"sgd": 1, "egd": 2}, "sub": {"sgd": 2, "egd": 1}}
    text = (tmp_path / "store-transfer.md").read_text()
    assert "| method | source board (t) | p5 | sub |" in text
    assert ("| sgd | 200 [190, 210] (5/5) #2 | 150 [150, 150] (5/5) #1 | > budget [∞, ∞] (0/5) #2 |"
            in text)
    assert "| egd | 100 [95, 105] (5/5) #1 | 300 [300, 300] (5/5) #2 | 120 [120, 120] (5/5) #1 |" in text
    assert "- `p5`: task.p = 5" in text and '- `sub`: task.op = "sub"' in text
    assert "| egd | 2 | 2 | 1 |" in text  # the profile: 2 variants, both reached, 1 win
    assert "Whose tuning transfers best (the highest score across the variants): egd" in text
    fake.executed.clear()
    tuned_mod.transfer(spec, log=quiet)  # resume: nothing new
    assert fake.executed == []
    # without a store of its own: beside the tune's, named after it
    assert load_transfer(write_spec(tmp_path, VARIANTS, "other.toml")).store == tmp_path / "store-transfer.sqlite"


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("command", "text", "fragments"),
    [
        ("robustness", '[robustness]\nmethods = ["egd_all"]\n', ["not on the board", "egd_all"]),
        ("robustness", '[robustness]\nmethods = ["adam"]\n', ["robustness.methods", "'adam'", "sgd, egd, egd_all"]),
        ("robustness", "[robustness]\nfactors = [0.5, 0, 2]\n", ["robustness.factors = [0.5, 0, 2]", "> 0"]),
        ("robustness", "[robustness]\nfactors = [1, 1]\n", ["robustness.factors", "distinct"]),
        ("robustness", "[robustness]\nseeds = [0, 10]\n", ["robustness.seeds = [0, 10]", "disjoint", "[0]"]),
        ("robustness", "[robustness]\nseeds = [-1]\n", ["robustness.seeds = [-1]", "integers >= 0"]),
        ("robustness", '[robustness]\nfield = "lr"\n', ["robustness.field = 'lr'", "SECTION.FIELD"]),
        ("robustness", "[robustness]\ncolour = 1\n", ["robustness.colour = 1", "unknown key"]),
        ("transfer", '[variants.odd]\n"task.q" = 3\n', ["variants.odd", "task.q = 3", "unknown field"]),
        ("transfer", '[variants.big]\n"task.train_frac" = 1.5\n', ["variants.big", "task.train_frac = 1.5"]),
        ("transfer", '[variants.lr]\n"optimizer.lr" = 1.0\n', ["variants.lr.optimizer.lr = 1.0", "searched"]),
        ("transfer", "[transfer]\nseeds = [1]\n" + VARIANTS, ["transfer.seeds = [1]", "disjoint"]),
        ("transfer", "[transfer]\n", ["variants", "at least one"]),
        ("robustness", '[robustness]\nreport_set = { "optimizer.lr" = 1.0 }\n',
         ["robustness.report_set.optimizer.lr = 1.0", "searched"]),
        ("robustness", '[robustness]\nreport_set = { "train.seed" = 3 }\n',
         ["robustness.report_set.train.seed = 3", "robustness.seeds"]),
        ("robustness", '[robustness]\nreport_set = { "train.eval_unit" = "hour" }\n',
         ["robustness.report_set", "eval_unit", "'hour'"]),
        ("transfer", '[transfer]\nreport_set = 3\n' + VARIANTS, ["transfer.report_set = 3", "dotted fields"]),
        ("handcheck", "[handcheck]\nfactors = [1]\n", ["handcheck.factors = [1]", "unknown key"]),
        ("handcheck", "[handcheck]\nseeds = [1, 0]\n", ["handcheck.seeds = [1, 0]", "disjoint"]),
    ],
)
def test_bad_specs_exit_2_with_one_line(tmp_path, capsys, command, text, fragments):
    write_tune(tmp_path)
    code = main([command, str(write_spec(tmp_path, text))])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    for f in fragments:
        assert f in err, (f, err)


@pytest.mark.parametrize("command", ["robustness", "transfer"])
def test_an_unfinished_tune_exits_2_naming_its_leaderboard(tmp_path, capsys, command):
    write_tune(tmp_path, board=False)
    code = main([command, str(write_spec(tmp_path, VARIANTS if command == "transfer" else ""))])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert str(tmp_path / "store-leaderboard.json") in err and f"run `egd tune {tmp_path / 'tune.toml'}` first" in err


def test_a_loss_tune_has_no_time_to_threshold(tmp_path, capsys):
    write_tune(tmp_path)
    path = tmp_path / "tune.toml"
    path.write_text(path.read_text().replace('name = "t"', 'name = "t"\nmetric = "loss"'))
    assert main(["robustness", str(write_spec(tmp_path, ""))]) == 2
    assert "tune.metric is 'loss'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_robustness_end_to_end_with_the_real_executor(tmp_path, capsys):
    write_tune(tmp_path)
    spec = write_spec(tmp_path, '[robustness]\nmethods = ["sgd"]\nfactors = [0.5, 1]\nseeds = [10]\n')
    assert main(["robustness", str(spec), "--workers", "2"]) == 0
    saved = json.loads((tmp_path / "store-robustness.json").read_text())
    points = saved["methods"]["sgd"]["points"]
    assert [p["value"] for p in points] == [1.0, 2.0] and all(p["done"] == 1 for p in points)
    assert "smoke test" in capsys.readouterr().out
    with Store(tmp_path / "store.sqlite", create=False) as st:
        runs = st.runs()
    assert len(runs) == 2 and all(r["status"] == "done" for r in runs)
    assert all(r["summary"]["steps"] == 3 for r in runs)  # [set]: 3 epochs of one full batch


# ------------------------------------------------------------------------------------------- hand check

HAND_SEARCHED = {"sgd": {"optimizer.lr": 2.0, "loss.weight_decay": 1e-5, "loss.weight_decay.off": True},
                 "egd": {"optimizer.lr": 0.6, "loss.weight_decay": 0.001, "loss.weight_decay.off": False}}


def handcheck_steps(cfg: dict) -> float | None:
    """robustness_steps (sgd at its best lr: 100; egd at twice its best: 200), changed by the L2 weight decay by
    hand: egd halves at 0.01 (a neighbour the search missed), sgd takes 90 at 0.00316 (10%: within 15%) and never
    reaches the threshold at 1."""
    steps = robustness_steps(cfg)
    wd, name = cfg["loss"]["weight_decay"], cfg["optimizer"]["name"]
    if name == "egd" and wd == pytest.approx(0.01):
        return steps / 2
    if name == "sgd" and wd == pytest.approx(0.00316228):
        return 90
    if name == "sgd" and wd == pytest.approx(1.0):
        return None
    return steps


def test_the_neighbours_of_a_winner_by_hand(tmp_path):
    tspec = load_tune(write_tune(tmp_path))
    by = {c.label: c for c in tspec.contenders}
    got = tuned_mod.neighbours(tspec, by["egd"], HAND_SEARCHED["egd"])
    assert [(n, p["loss.weight_decay"], p["loss.weight_decay.off"], p["optimizer.lr"]) for n, p in got] == [
        ("loss.weight_decay off", 0.001, True, 0.6), ("loss.weight_decay = 0.0001", 1e-4, False, 0.6),
        ("loss.weight_decay = 0.01", 0.01, False, 0.6)]
    got = tuned_mod.neighbours(tspec, by["sgd"], HAND_SEARCHED["sgd"])  # off: the range's ends and middle
    assert [(n, p["loss.weight_decay"], p["loss.weight_decay.off"]) for n, p in got] == [
        ("loss.weight_decay = 1e-05", 1e-5, False), ("loss.weight_decay = 0.00316", 0.00316228, False),
        ("loss.weight_decay = 1", 1.0, False)]
    # a stage-1 winner (lr only): the method's own weight decay (the recipe's: none, so off) completes it
    assert [n for n, _ in tuned_mod.neighbours(tspec, by["sgd"], {"optimizer.lr": 2.0})] == [n for n, _ in got]


def test_the_neighbours_of_a_linear_range_with_a_limit_and_of_a_categorical(tmp_path):
    path = tmp_path / "tune.toml"
    path.write_text(SMALL_SPACE + """
"momentum" = { fields = ["optimizer.momentum"], low = 0.5, high = 0.99, log = false, off = true, limit_high = 0.999 }
"schedule" = { choices = [
    { "scheduler.name" = "constant", "scheduler.warmup_steps" = 0 },
    { "scheduler.name" = "constant", "scheduler.warmup_steps" = 10 },
] }
[methods.sgd]
""")
    tspec = load_tune(path)
    (c,) = tspec.contenders
    got = tuned_mod.neighbours(tspec, c, {"optimizer.lr": 0.5, "momentum": 0.95, "momentum.off": False,
                                          "schedule": 1})
    # ± 0.049 (10% of 0.5..0.99), the upper one held at the limit 0.999; the other choice
    assert [n for n, _ in got] == ["momentum off", "momentum = 0.901", "momentum = 0.999",
                                   "schedule = constant (warmup_steps 0)"]
    values = trial_values(tspec, c, got[2][1])
    assert values["optimizer.momentum"] == 0.999 and values["scheduler.warmup_steps"] == 10
    # a winner in the low tenth (0.52 < 0.5 + 0.049): the gap between off (0) and the range gets its middle, 0.25
    got = tuned_mod.neighbours(tspec, c, {"optimizer.lr": 0.5, "momentum": 0.52, "momentum.off": False,
                                          "schedule": 0})
    assert [n for n, _ in got] == ["momentum off", "momentum = 0.25", "momentum = 0.471", "momentum = 0.569",
                                   "schedule = constant (warmup_steps 10)"]
    assert trial_values(tspec, c, got[1][1])["optimizer.momentum"] == 0.25
    # a choice that is a value is named as itself; a table without a *.name field by its fields
    assert tune_mod.choice_text(0.5) == "0.5" and tune_mod.choice_text("cosine") == "cosine"
    assert tune_mod.choice_text({"scheduler.warmup_steps": 10, "train.x": "y"}) == "warmup_steps 10, x y"


def test_handcheck_flags_a_neighbour_that_beats_the_tuned_configuration(tmp_path, monkeypatch):
    fake = Fake(handcheck_steps)
    monkeypatch.setattr(tuned_mod, "run_sweep", fake)
    write_tune(tmp_path)
    board = [{**row(m), "searched": HAND_SEARCHED[m]} for m in ("egd", "sgd")]
    (tmp_path / "store-leaderboard.json").write_text(json.dumps(board))
    result = tuned_mod.handcheck(write_spec(tmp_path, '[handcheck]\nmethods = ["egd", "sgd"]\n'), log=quiet)
    assert len(fake.executed) == 2 * 5 * 5  # 2 methods x (tuned + 3 neighbours + own values) x 5 seeds
    egd, sgd = result["methods"]["egd"], result["methods"]["sgd"]
    # own values: the base's lr 0.5 and no weight decay; egd 100 x (0.5 / 0.3) = 167, sgd 100 x 4^0.25 = 141
    assert [(p["setting"], p["median"]) for p in egd["settings"]] == [
        ("tuned", 200), ("loss.weight_decay off", 200), ("loss.weight_decay = 0.0001", 200),
        ("loss.weight_decay = 0.01", 100), ("own values", 167)]
    assert [(p["setting"], p["median"]) for p in sgd["settings"]][-1] == ("own values", 141)
    assert egd["hand_check"] == {"tuned": 200, "best": 100, "best_setting": "loss.weight_decay = 0.01",
                                 "gain": 0.5, "beaten": True}
    assert sgd["hand_check"]["best_setting"] == "loss.weight_decay = 0.00316" and not sgd["hand_check"]["beaten"]
    assert sgd["settings"][-2]["median"] == math.inf  # wd 1: censored, counted
    text = (tmp_path / "store-handcheck.md").read_text()
    assert ("| egd | 4 | 200 → 100 with loss.weight_decay = 0.01 (−50%, beaten by > 15%: underpowered) |"
            in text)
    assert "| sgd | 4 | 100 → 90 with loss.weight_decay = 0.00316 (−10%, within 15%) |" in text
    # each method's section names its tuned configuration (VALUES: the leaderboard rows' values)
    assert "**egd** (tuned: optimizer.lr = 0.6, loss.weight_decay = 0.001)" in text
    assert "**sgd** (tuned: optimizer.lr = 2, loss.weight_decay = 0)" in text
    # resume: nothing runs again
    fake.executed.clear()
    tuned_mod.handcheck(write_spec(tmp_path, '[handcheck]\nmethods = ["egd", "sgd"]\n'), log=quiet)
    assert fake.executed == []


def test_the_hand_check_tries_neighbours_on_the_last_rounds_ranges(tmp_path):
    """A board whose search widened weight decay to 1e-5..10 (a second round): sgd's winner has it off, so its
    neighbours are that range's ends and middle, 1e-5, 0.01 (= sqrt(1e-5 x 10)) and 10, not the spec's 1e-5..1."""
    write_tune(tmp_path)
    spec = tuned_mod.load_handcheck(write_spec(tmp_path, '[handcheck]\nmethods = ["sgd"]\n'))
    rounds = [{"round": 0, "ranges": {"optimizer.lr": [1e-3, 100.0], "loss.weight_decay": [1e-5, 1.0]}, "edges": []},
              {"round": 1, "ranges": {"optimizer.lr": [1e-3, 100.0], "loss.weight_decay": [1e-5, 10.0]}, "edges": []}]
    board = {"sgd": {**row("sgd"), "searched": HAND_SEARCHED["sgd"], "rounds": rounds}}
    planned = tuned_mod.handcheck_plan(spec, board)
    assert sorted(name for _, name in planned) == [
        "loss.weight_decay = 0.01", "loss.weight_decay = 10", "loss.weight_decay = 1e-05", "own values", "tuned"]
    wds = {name: runs[0].config["loss"]["weight_decay"] for (_, name), runs in planned.items()}
    assert wds["loss.weight_decay = 10"] == 10.0 and wds["loss.weight_decay = 0.01"] == pytest.approx(0.01)


# ------------------------------------------------------------------------------------- the pooled winner


def test_point_of_inverts_trial_values(tmp_path):
    """A search point -> its config values (trial_values) -> back (point_of): the same point, for a log range with
    off (on and off), a linear range searched as momentum (SGD) or beta1 (an element of AdamW's betas) and a
    categorical of tables; a dimension the values do not set is left out."""
    path = tmp_path / "tune.toml"
    path.write_text(SMALL_SPACE + """
"optimizer.weight_decay" = { low = 1e-5, high = 1.0, log = true, off = true }
"momentum" = { fields = ["optimizer.momentum", "optimizer.betas.0"], low = 0.5, high = 0.99, log = false, off = true }
"schedule" = { choices = [
    { "scheduler.name" = "constant", "scheduler.warmup_steps" = 0 },
    { "scheduler.name" = "constant", "scheduler.warmup_steps" = 10 },
    { "scheduler.name" = "cosine", "scheduler.warmup_steps" = 10, "scheduler.min_factor" = 0.1 },
] }
[methods.sgd]
[methods.adamw]
""")
    tspec = load_tune(path)
    for c in tspec.contenders:
        for point in ({"optimizer.lr": 0.25, "optimizer.weight_decay": 0.03, "optimizer.weight_decay.off": False,
                       "momentum": 0.75, "momentum.off": False, "schedule": 2},
                      {"optimizer.lr": 3.0, "optimizer.weight_decay": 1e-5, "optimizer.weight_decay.off": True,
                       "momentum": 0.5, "momentum.off": True, "schedule": 0},
                      {"optimizer.lr": 0.01, "schedule": 1}):
            values = trial_values(tspec, c, point)
            assert tune_mod.point_of(tspec, c, values) == point, (c.label, values)
    adamw = next(c for c in tspec.contenders if c.label == "adamw")
    assert trial_values(tspec, adamw, {"momentum": 0.75, "momentum.off": False})["optimizer.betas"][0] == 0.75


def pooled_board() -> list[dict]:
    """egd's row is its median study's (study 2, lr 0.6), but study 1 has the best tuning value (lr 0.3, egd's best
    lr: 100 steps by robustness_steps) and is what the studies pooled pick; sgd has one study."""
    studies = [(0, 50.0, 1.2), (1, 30.0, 0.3), (2, 40.0, 0.6)]
    per = [{"study": k, "tuning_value": t, "values": {"optimizer.lr": lr, "loss.weight_decay": 0.001}, "median": 1.0}
           for k, t, lr in studies]
    egd = {**row("egd"), "searched": HAND_SEARCHED["egd"], "study": 2, "tuning_value": 40.0, "per_study": per}
    return [egd, {**row("sgd"), "searched": HAND_SEARCHED["sgd"]}]


def test_a_pooled_follow_up_takes_each_methods_study_with_the_best_tuning_value(tmp_path, monkeypatch):
    fake = Fake(handcheck_steps)
    monkeypatch.setattr(tuned_mod, "run_sweep", fake)
    write_tune(tmp_path)
    (tmp_path / "store-leaderboard.json").write_text(json.dumps(pooled_board()))
    spec = write_spec(tmp_path, '[handcheck]\nmethods = ["egd", "sgd"]\nwinner = "pooled"\nname = "hc-pooled"\n')
    result = tuned_mod.handcheck(spec, log=quiet)
    egd = result["methods"]["egd"]
    # study 1's lr 0.3 is egd's best: 100 steps; its neighbours are study 1's (weight decay 0.001 from its values)
    assert egd["tuned_values"] == {"optimizer.lr": 0.3, "loss.weight_decay": 0.001}
    assert [(p["setting"], p["median"]) for p in egd["settings"]] == [
        ("tuned", 100), ("loss.weight_decay off", 100), ("loss.weight_decay = 0.0001", 100),
        ("loss.weight_decay = 0.01", 50), ("own values", 167)]  # the base's lr 0.5: 100 x 0.5 / 0.3
    assert result["methods"]["sgd"]["tuned_values"] == VALUES["sgd"]  # one study: its row
    text = (tmp_path / "store-hc-pooled.md").read_text()
    assert "the pooled search's: its study whose winner has the best tuning value" in text
    board = tuned_mod.read_board(load_tune(tmp_path / "tune.toml"), ["egd"])  # the default: the row, study 2
    assert board["egd"]["values"]["optimizer.lr"] == 0.6
    rob = write_spec(tmp_path, '[robustness]\nmethods = ["egd"]\nwinner = "pooled"\nfactors = [1, 2]\n', "r.toml")
    points = tuned_mod.robustness(rob, log=quiet)["methods"]["egd"]["points"]
    assert [(p["value"], p["median"]) for p in points] == [(0.3, 100), (0.6, 200)]


def test_a_follow_up_winner_must_be_board_or_pooled(tmp_path, capsys):
    write_tune(tmp_path)
    assert main(["handcheck", str(write_spec(tmp_path, '[handcheck]\nwinner = "best"\n'))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "handcheck.winner = 'best'" in err and "board, pooled" in err, err


def test_a_method_that_reached_on_no_tuning_seed_runs_only_its_tuned_and_own_configurations(tmp_path, monkeypatch):
    """egd's tuning value is censored (>= 1e9: the search placed it by final accuracy): its robustness runs only
    x1, its hand check only the tuned configuration and its own values; sgd (reached) runs everything. With
    unreached = "run" egd runs the whole lattice too."""
    fake = Fake(handcheck_steps)
    monkeypatch.setattr(tuned_mod, "run_sweep", fake)
    write_tune(tmp_path)
    board = [{**row("egd"), "searched": HAND_SEARCHED["egd"], "tuning_value": 1e9 + 0.49},
             {**row("sgd"), "searched": HAND_SEARCHED["sgd"], "tuning_value": 100.0}]
    (tmp_path / "store-leaderboard.json").write_text(json.dumps(board))
    both = 'methods = ["egd", "sgd"]\n'
    result = tuned_mod.handcheck(write_spec(tmp_path, "[handcheck]\n" + both), log=quiet)
    assert [p["setting"] for p in result["methods"]["egd"]["settings"]] == ["tuned", "own values"]
    assert len(result["methods"]["sgd"]["settings"]) == 5  # tuned + 3 neighbours + own values
    assert result["unreached"] == ["egd"] and len(fake.executed) == (2 + 5) * 5
    # egd's own values (lr 0.5: 167 steps) beat its tuned lr 0.6 (200): still checked
    assert result["methods"]["egd"]["hand_check"]["best_setting"] == "own values"
    assert "No neighbours for egd: reached the threshold on no tuning seed" in (tmp_path / "store-handcheck.md"
                                                                                 ).read_text()

    fake.executed.clear()
    spec = write_spec(tmp_path, "[robustness]\nfactors = [0.5, 1, 2]\n" + both, "r.toml")
    rob = tuned_mod.robustness(spec, log=quiet)
    egd, sgd = rob["methods"]["egd"], rob["methods"]["sgd"]
    assert [p["factor"] for p in egd["points"]] == [1.0] and egd["skipped"]
    assert egd["window"] is None and egd["hand_check"] is None
    assert [p["factor"] for p in sgd["points"]] == [0.5, 1.0, 2.0] and not sgd["skipped"]
    text = (tmp_path / "store-robustness.md").read_text()
    assert "| egd | 0.6 | - | 200 (×1) | - (not run: reached on no tuning seed) |" in text
    assert "| ×0.5 | not run | 119 [119, 119] (5/5) |" in text  # sgd at lr 1: 100 x 2^0.25
    assert (tmp_path / "store-robustness.png").read_bytes()[:4] == b"\x89PNG"

    fake.executed.clear()
    spec = write_spec(tmp_path, '[robustness]\nfactors = [0.5, 1, 2]\nunreached = "run"\n' + both, "r2.toml")
    assert [p["factor"] for p in tuned_mod.robustness(spec, log=quiet)["methods"]["egd"]["points"]] == [0.5, 1, 2]
    assert len(fake.executed) == 2 * 5  # egd's x0.5 and x2 (sgd's and egd's x1 are in the store)


def test_unreached_must_be_skip_or_run(tmp_path, capsys):
    write_tune(tmp_path)
    assert main(["robustness", str(write_spec(tmp_path, '[robustness]\nunreached = "drop"\n'))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "robustness.unreached = 'drop'" in err and "skip, run" in err, err

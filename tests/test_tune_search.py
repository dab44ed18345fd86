"""``egd tune``'s search design (issue #28): several studies per method, the two-stage ``coarse-refine`` search,
categorical, ``off`` and optional dimensions, the outer-10% edge rule and the across-studies leaderboard.

A fake executor finishes every run with steps = 10 + 100·|log10(lr / best)| + seed (best per method), so the
expected values below are computed by hand from that formula, never from the code's earlier output.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import egalitarian.tune as tune_mod
from egalitarian.cli import main
from egalitarian.sweep import Store
from egalitarian.tune import Dimension, load_tune
from tests.test_tune import BASE

optuna = pytest.importorskip("optuna")

BEST = {"sgd": 2.0, "egd": 0.3, "adamw": 0.01, "grokfast": 0.003, "egd_adam": 0.02}


def steps_of(lr: float, method: str, seed: int) -> int:
    return round(10 + 100 * abs(math.log10(lr / BEST[method])) + seed)


class Fake:
    """Stands in for run_sweep: finishes each pending run by the formula above; records every config run."""

    def __init__(self, fail_on_call: int | None = None):
        self.configs: dict[str, dict] = {}
        self.calls = 0
        self.fail_on_call = fail_on_call

    def __call__(self, sweep, workers=None, backend="local", address=None, progress=None):
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise KeyboardInterrupt
        with Store(sweep.store) as st:
            st.add(sweep.name, sweep.runs)
            by_id = {r.id: r for r in sweep.runs}
            for row in st.runs(list(by_id)):
                if row["status"] != "pending":
                    continue
                cfg = by_id[row["id"]].config
                summary = self.summary(cfg)
                st.claim([row["id"]], "fake")
                st.finish(row["id"], "fake", summary, [])
                self.configs[row["id"]] = cfg
            return st.counts(list(by_id))

    def summary(self, cfg: dict) -> dict:
        """A finished run's summary: grokked at :meth:`steps` (a subclass may censor some runs)."""
        steps = self.steps(cfg)
        return {"grokked": True, "status": "grokked", "grok": {"step": steps, "epoch": steps, "seconds": steps / 100},
                "steps": 1000, "epochs": 1000, "seconds": 10.0, "final_test_acc": 1.0}

    def steps(self, cfg: dict) -> int:
        return steps_of(cfg["optimizer"]["lr"], cfg["optimizer"]["name"], cfg["train"]["seed"])


def write(tmp_path: Path, tune: str, space: str, methods: str = "[methods.sgd]\n[methods.egd]\n") -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(BASE + "[tune]\nname = \"t\"\n" + tune + f'store = "{tmp_path / "store.sqlite"}"\n'
                    + "tuning_seeds = [0, 1]\nreporting_seeds = [10, 11, 12, 13, 14]\n" + space + methods)
    return path


def trials_of(spec, widening: int = 0) -> dict[tuple[str, int], list[tuple[str, dict]]]:
    """Each study's trials (state, params) of widening round ``widening``, by (method, study)."""
    storage = f"sqlite:///{spec.study_path.resolve()}"
    out = {}
    for c in spec.contenders:
        for k in range(spec.studies):
            name = f"{spec.name}/{c.label}" + (f"/study{k}" if k else "") + (f"/widen{widening}" if widening else "")
            study = optuna.load_study(study_name=name, storage=storage)
            out[(c.label, k)] = [(t.state.name, dict(t.params)) for t in study.trials]
    return out


def quiet(*a, **k):
    return None


# ------------------------------------------------------------------------------------------ two stages

LR_WD = """
[space]
"optimizer.lr" = { low = 0.01, high = 100.0, log = true, relative = true }
"loss.weight_decay" = { low = 1e-5, high = 1.0, log = true, relative = false, off = true }
"""


def test_coarse_refine_asks_the_same_stages_of_every_method(tmp_path, monkeypatch):
    fake = Fake()
    monkeypatch.setattr(tune_mod, "run_sweep", fake)
    spec = load_tune(write(tmp_path, 'stages = "coarse-refine"\ntrials = 4\nbatch = 2\nseed = 1\n', LR_WD))
    tune_mod.search(spec, log=quiet)
    # stage 1: 0.01 x sqrt(10)^i up to 100 -- 9 points over the 4 decades, the same factors for every method
    grid = [0.01, 0.0316228, 0.1, 0.316228, 1.0, 3.16228, 10.0, 31.6228, 100.0]
    assert tune_mod.coarse_grid(spec.space[0]) == grid
    # both methods' own lr is 0.5 (the recipe's tables); the fake's best: sgd lr 2.0 = factor 4 -> nearest grid
    # point in log10 is 3.16228 (0.10 decade off, vs 0.40 for 1.0); egd 0.3 = factor 0.6 -> 1.0 (0.22 vs 0.28)
    stage1_best = {"sgd": 3.16228, "egd": 1.0}
    trials = trials_of(spec)
    for label in ("sgd", "egd"):
        ts = trials[(label, 0)]
        assert len(ts) == 9 + 4 and all(state == "COMPLETE" for state, _ in ts)
        assert [p for _, p in ts[:9]] == [{"optimizer.lr": x} for x in grid]  # stage 1: lr only, in order
        lo, hi = stage1_best[label] / 10**0.5, stage1_best[label] * 10**0.5
        for _, p in ts[9:]:  # stage 2: one decade around stage 1's best lr; weight decay over its whole range
            assert set(p) == {"optimizer.lr", "loss.weight_decay", "loss.weight_decay.off"}
            assert lo * (1 - 1e-5) <= p["optimizer.lr"] <= hi * (1 + 1e-5)
            assert 1e-5 <= p["loss.weight_decay"] <= 1.0
    # stage 1's runs leave the other dimensions at the method's own value: the recipe's L2 1e-4 is not in BASE,
    # so the loss has its default weight decay; lr = factor x 0.5
    lrs = sorted({cfg["optimizer"]["lr"] for cfg in fake.configs.values() if cfg["optimizer"]["name"] == "sgd"})
    assert all(round(x * 0.5, 6) in {round(v, 6) for v in lrs} for x in grid)


def whole_and_resumed(tmp_path, monkeypatch, tune: str, space: str, kills: tuple[int, ...]):
    """The same spec searched twice: once uninterrupted, once killed on each of the ``kills``-th run_sweep calls
    of successive reruns and then finished; returns both specs and the finished rerun's result."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    whole, broken = load_tune(write(a, tune, space)), load_tune(write(b, tune, space))
    monkeypatch.setattr(tune_mod, "run_sweep", Fake())
    tune_mod.search(whole, log=quiet)
    for killed_on in kills:
        monkeypatch.setattr(tune_mod, "run_sweep", Fake(fail_on_call=killed_on))
        with pytest.raises(KeyboardInterrupt):
            tune_mod.search(broken, log=quiet)
    monkeypatch.setattr(tune_mod, "run_sweep", Fake())
    return whole, broken, tune_mod.search(broken, log=quiet)


def test_coarse_refine_resumes_where_it_stopped(tmp_path, monkeypatch):
    # killed in stage 1; then in stage 2's first round (stage 1 completed first); then in its second round
    whole, broken, _ = whole_and_resumed(tmp_path, monkeypatch, 'stages = "coarse-refine"\ntrials = 4\nbatch = 2\n'
                                         'studies = 2\n', LR_WD, (1, 2, 2))
    assert trials_of(broken) == trials_of(whole)


# ------------------------------------------------------------------------------------- several studies

LR = '[space]\n"optimizer.lr" = { low = 0.01, high = 100.0, log = true, relative = true }\n'


def test_studies_ask_different_trials_and_resume_independently(tmp_path, monkeypatch):
    dirs = {n: tmp_path / n for n in ("one", "three", "broken", "grown")}
    for d in dirs.values():
        d.mkdir()
    tune = "trials = 4\nbatch = 2\nseed = 5\n"
    one = load_tune(write(dirs["one"], tune, LR))
    three = load_tune(write(dirs["three"], tune + "studies = 3\n", LR))
    monkeypatch.setattr(tune_mod, "run_sweep", Fake())
    tune_mod.search(one, log=quiet)
    tune_mod.search(three, log=quiet)
    t1, t3 = trials_of(one), trials_of(three)
    for label in ("sgd", "egd"):
        assert len({tuple(p["optimizer.lr"] for _, p in t3[(label, k)]) for k in range(3)}) == 3  # all differ
        assert all(len(t3[(label, k)]) == 4 for k in range(3))  # the same budget each
        assert t3[(label, 0)] == t1[(label, 0)]  # study 0 is the one-study tune (seed 5); study k has seed 5 + k
    # study k is the sampler seeded seed + k: a one-study tune with seed 7 asks study 2's trials
    seven = tmp_path / "seven"
    seven.mkdir()
    s7 = load_tune(write(seven, "trials = 4\nbatch = 2\nseed = 7\n", LR))
    tune_mod.search(s7, log=quiet)
    assert trials_of(s7)[("sgd", 0)] == t3[("sgd", 2)]

    # killed in the middle and rerun: each study continues where it stopped, ending with the same trials
    broken = load_tune(write(dirs["broken"], tune + "studies = 3\n", LR))
    monkeypatch.setattr(tune_mod, "run_sweep", Fake(fail_on_call=2))
    with pytest.raises(KeyboardInterrupt):
        tune_mod.search(broken, log=quiet)
    monkeypatch.setattr(tune_mod, "run_sweep", Fake())
    tune_mod.search(broken, log=quiet)
    assert trials_of(broken) == t3

    # studies are independent: a finished 2-study tune grown to 3 keeps studies 0-1 and runs only study 2
    two = load_tune(write(dirs["grown"], tune + "studies = 2\n", LR))
    tune_mod.search(two, log=quiet)
    grown = load_tune(write(dirs["grown"], tune + "studies = 3\n", LR))
    fake = Fake()
    monkeypatch.setattr(tune_mod, "run_sweep", fake)
    tune_mod.search(grown, log=quiet)
    assert trials_of(grown) == t3
    new_lrs = {cfg["optimizer"]["lr"] for cfg in fake.configs.values()}
    study2 = {float(f"{p['optimizer.lr'] * 0.5:.6g}") for label in ("sgd", "egd") for _, p in t3[(label, 2)]}
    assert new_lrs and new_lrs <= study2


def test_across_studies_by_hand():
    a = tune_mod.across_studies([162.0, 90.0, 99.0])
    assert (a["median"], a["min"], a["max"], a["study"]) == (99.0, 90.0, 162.0, 2)
    b = tune_mod.across_studies([110.0, 90.0, math.inf, 100.0])  # even: the mean of the middle two; row = lower
    assert (b["median"], b["min"], b["max"], b["study"]) == (105.0, 90.0, math.inf, 3)


def test_the_leaderboard_gives_the_median_across_studies_and_the_spread(tmp_path, monkeypatch):
    monkeypatch.setattr(tune_mod, "run_sweep", Fake())
    tune = 'trials = 3\nbatch = 3\nstudies = 3\nsampler = "random"\nbaselines = ["sgd"]\n'
    spec = load_tune(write(tmp_path, tune, LR))
    studies = tune_mod.search(spec, log=quiet)
    winners = tune_mod.best(spec, studies)
    board = tune_mod.report(spec, winners)
    trials = trials_of(spec)
    for e in board:
        label = e["method"]
        per = []
        for k in range(3):
            # the winner by hand: the trial whose median tuning steps (seeds 0, 1) is smallest, first on a tie
            vals = [(sorted(steps_of(p["optimizer.lr"] * 0.5, label, s) for s in (0, 1)), i)
                    for i, (_, p) in enumerate(trials[(label, k)])]
            i = min(vals, key=lambda v: (sum(v[0]) / 2, v[1]))[1]
            lr = float(f"{trials[(label, k)][i][1]['optimizer.lr'] * 0.5:.6g}")
            held = sorted(steps_of(lr, label, s) for s in (10, 11, 12, 13, 14))[2]  # 5 seeds, all grokked
            assert e["per_study"][k]["values"] == {"optimizer.lr": lr} and e["per_study"][k]["median"] == held
            per.append(held)
        srt = sorted(per)
        assert e["across"] == {"median": srt[1], "min": srt[0], "max": srt[2]}
        assert e["steps"]["median"] == srt[1] and e["study"] == per.index(srt[1])
    assert [e["across"]["median"] for e in board] == sorted(e["across"]["median"] for e in board)
    text = tune_mod.leaderboard_markdown(spec, board)
    assert "3 studies per method, random sampler seeds 0..2" in text
    assert "| KM median steps: median across 3 studies | spread across studies [min, max] |" in text
    e = board[0]
    assert f"| {e['across']['median']:g} | [{e['across']['min']:g}, {e['across']['max']:g}] |" in text
    for k in range(3):
        s = e["per_study"][k]
        assert f"| {e['method']} | {k} ({k}) | lr={s['values']['optimizer.lr']:g} |" in text


# ------------------------------------------------------------------- categorical, off and optional dims

RICH = """
[space]
"optimizer.lr" = { low = 0.01, high = 100.0, log = true, relative = true }
"loss.weight_decay" = { low = 1e-5, high = 1.0, log = true, relative = false, off = true }
"optimizer.momentum" = { low = 0.5, high = 0.99, log = false, relative = false, optional = true }
"schedule" = { choices = [{ "scheduler.name" = "constant" },
                          { "scheduler.name" = "cosine", "scheduler.warmup_steps" = 2, "scheduler.min_factor" = 0.1 }] }
"""
METHODS3 = "[methods.sgd]\n[methods.egd]\n[methods.adamw]\n"


def test_categorical_and_off_dimensions_map_to_config_values(tmp_path):
    spec = load_tune(write(tmp_path, "trials = 4\n", RICH, METHODS3))
    sgd = {c.label: c for c in spec.contenders}["sgd"]
    params = {"optimizer.lr": 2.0, "loss.weight_decay": 0.01, "loss.weight_decay.off": True,
              "optimizer.momentum": 0.9, "schedule": 1}
    assert tune_mod.trial_values(spec, sgd, params) == {
        "optimizer.lr": 1.0, "loss.weight_decay": 0.0, "optimizer.momentum": 0.9, "scheduler.name": "cosine",
        "scheduler.warmup_steps": 2, "scheduler.min_factor": 0.1}
    on = tune_mod.trial_values(spec, sgd, {**params, "loss.weight_decay.off": False, "schedule": 0})
    assert on == {"optimizer.lr": 1.0, "loss.weight_decay": 0.01, "optimizer.momentum": 0.9,
                  "scheduler.name": "constant"}
    (run, _) = tune_mod.plan(spec, sgd, tune_mod.trial_values(spec, sgd, params), [0, 1])
    assert run.config["scheduler"] == {"name": "cosine", "warmup_steps": 2, "total_steps": 0, "min_factor": 0.1}
    assert run.config["loss"]["weight_decay"] == 0.0 and run.config["optimizer"]["momentum"] == 0.9


def test_a_dimension_a_method_lacks_is_not_asked_of_it(tmp_path, monkeypatch):
    fake = Fake()
    monkeypatch.setattr(tune_mod, "run_sweep", fake)
    spec = load_tune(write(tmp_path, 'trials = 12\nbatch = 4\nsampler = "random"\n', RICH, METHODS3))
    by = {c.label: c for c in spec.contenders}
    assert [d.field for d in tune_mod.dimensions(spec, by["adamw"])] == ["optimizer.lr", "loss.weight_decay",
                                                                        "schedule"]
    tune_mod.search(spec, log=quiet)
    trials = trials_of(spec)
    full = {"optimizer.lr", "loss.weight_decay", "loss.weight_decay.off", "optimizer.momentum", "schedule"}
    for label in ("sgd", "egd", "adamw"):
        ps = [p for _, p in trials[(label, 0)]]
        assert len(ps) == 12 and all(set(p) == (full - {"optimizer.momentum"} if label == "adamw" else full)
                                     for p in ps)
        assert {p["schedule"] for p in ps} == {0, 1} and {p["loss.weight_decay.off"] for p in ps} == {False, True}
    # every run's config is its trial's values mapped by hand
    for cfg in fake.configs.values():
        assert cfg["optimizer"]["name"] in BEST
        assert cfg.get("scheduler", {}).get("name") in ("constant", "cosine")
        if cfg["scheduler"]["name"] == "cosine":
            assert cfg["scheduler"]["min_factor"] == 0.1 and cfg["scheduler"]["warmup_steps"] == 2
        assert cfg["loss"]["weight_decay"] == 0.0 or 1e-5 <= cfg["loss"]["weight_decay"] <= 1.0
        assert ("momentum" in cfg["optimizer"]) == (cfg["optimizer"]["name"] != "adamw")


def test_the_edge_rule_is_the_outer_tenth_of_a_range(tmp_path):
    spec = load_tune(write(tmp_path, "trials = 3\n", LR))
    c = spec.contenders[0]
    study = optuna.create_study()
    dist = {"optimizer.lr": optuna.distributions.FloatDistribution(0.01, 100.0, log=True)}
    # log position of x in 0.01..100: (log10 x + 2) / 4.  0.0363 -> 0.14 (inside), 0.0229 -> 0.09 (low edge)
    for x, v in ((0.0363, 5.0), (0.0229, 1.0), (1.0, 3.0)):
        study.add_trial(optuna.trial.create_trial(params={"optimizer.lr": x}, distributions=dist, value=v))
    assert tune_mod._winner(spec, c, study)["edges"] == {"optimizer.lr": "low"}
    study.add_trial(optuna.trial.create_trial(params={"optimizer.lr": 0.0363}, distributions=dist, value=0.5))
    assert tune_mod._winner(spec, c, study)["edges"] == {}
    assert Dimension("x", 0.01, 100.0).position(43.7) == pytest.approx((math.log10(43.7) + 2) / 4)  # 0.91: high


# -------------------------------------------------------- inert hyperparameters and alternative fields

ALT = ('[space]\n"optimizer.lr" = { low = 0.01, high = 100.0, log = true, relative = true }\n'
       '"momentum" = { fields = ["optimizer.momentum", "optimizer.betas.0"], low = 0.5, high = 0.99, log = false, '
       'optional = true, limit_high = 1.0 }\n')
METHODS_ALT = """[methods.sgd]
[methods.adamw]
[methods.grokfast]
[methods.egd_adam_sgd]
method = "egd_adam"
set = { "optimizer.base" = "sgd" }
[methods.adamw_b2]
method = "adamw"
set = { "optimizer.betas" = [0.95, 0.9] }
"""
LR_REL = '[space]\n"optimizer.lr" = { low = 0.01, high = 100.0, log = true, relative = true }\n'
GROKFAST_SGD = '[methods.gf_sgd]\nmethod = "grokfast"\nset = { "optimizer.base" = "sgd" }\n'


def test_a_dimension_of_alternative_fields_searches_the_first_live_one(tmp_path, monkeypatch):
    """SGD searches its momentum; AdamW its beta1 (it has no momentum); Grokfast on Adam its beta1 (its momentum
    key is inert there); EGD+Adam on an SGD base its momentum (its betas are inert there)."""
    spec = load_tune(write(tmp_path, 'trials = 3\nbatch = 3\nsampler = "random"\nwiden = 0\n', ALT, METHODS_ALT))
    by = {c.label: c for c in spec.contenders}
    used = {label: tune_mod.searched_fields(spec, c)["momentum"] for label, c in by.items()}
    assert used == {"sgd": "optimizer.momentum", "adamw": "optimizer.betas.0", "grokfast": "optimizer.betas.0",
                    "egd_adam_sgd": "optimizer.momentum", "adamw_b2": "optimizer.betas.0"}
    # the pair is the method's own, with the searched element set: AdamW's default beta2 0.999, Grokfast's 0.98,
    # the one a method's set gives (0.9); lr: the factor times the method's own lr (AdamW 1e-3, SGD's recipe 0.5)
    params = {"optimizer.lr": 2.0, "momentum": 0.8}
    assert tune_mod.trial_values(spec, by["adamw"], params) == {"optimizer.lr": 0.002,
                                                               "optimizer.betas": [0.8, 0.999]}
    assert tune_mod.trial_values(spec, by["grokfast"], params)["optimizer.betas"] == [0.8, 0.98]
    assert tune_mod.trial_values(spec, by["adamw_b2"], params)["optimizer.betas"] == [0.8, 0.9]
    assert tune_mod.trial_values(spec, by["sgd"], params) == {"optimizer.lr": 1.0, "optimizer.momentum": 0.8}

    fake = Fake()
    monkeypatch.setattr(tune_mod, "run_sweep", fake)
    studies = tune_mod.search(spec, log=quiet)
    trials = trials_of(spec)
    for label in by:  # every method is asked both dimensions, under the same names
        assert [set(p) for _, p in trials[(label, 0)]] == [{"optimizer.lr", "momentum"}] * 3
    asked = {label: {float(f"{p['momentum']:.6g}") for _, p in trials[(label, 0)]} for label in by}
    for cfg in fake.configs.values():  # each run sets the field its method searches, from a trial's value
        opt = cfg["optimizer"]
        if opt["name"] in ("sgd", "egd_adam"):
            assert "betas" not in opt and opt["momentum"] in asked["sgd"] | asked["egd_adam_sgd"]
        else:
            assert "momentum" not in opt and opt["betas"][1] in (0.999, 0.98, 0.9)
            assert opt["betas"][0] in asked["adamw"] | asked["grokfast"] | asked["adamw_b2"]
    # the leaderboard names the field each method used
    winners = tune_mod.best(spec, studies)
    sgd, adamw = tune_mod._fmt_values(winners["sgd"]), tune_mod._fmt_values(winners["adamw"])
    assert ", momentum=" in sgd and "betas" not in sgd
    assert adamw.startswith("lr=") and ", betas.0=" in adamw and "momentum" not in adamw and "0.999" not in adamw
    assert winners["adamw"]["fields"] == {"momentum": "optimizer.betas.0"}
    assert winners["sgd"]["fields"] == {"momentum": "optimizer.momentum"}
    assert tune_mod._fmt_dimension(spec.space[1]).startswith(
        "momentum (optimizer.momentum or optimizer.betas.0, the first a method has) uniform 0.5..0.99")


def test_a_method_with_neither_field_lacks_the_dimension(tmp_path, monkeypatch):
    """No registry method lacks both momentum and betas, so: a dimension on beta1 only.  AdamW is asked it; SGD
    (no betas) and Grokfast on an SGD base (betas inert) are not, and their runs have no betas."""
    space = LR_REL + ('"beta1" = { fields = ["optimizer.betas.0"], low = 0.8, high = 0.95, log = false, '
                      'optional = true }\n')
    spec = load_tune(write(tmp_path, 'trials = 2\nbatch = 2\nsampler = "random"\nwiden = 0\n', space,
                           "[methods.sgd]\n[methods.adamw]\n" + GROKFAST_SGD))
    fake = Fake()
    monkeypatch.setattr(tune_mod, "run_sweep", fake)
    tune_mod.search(spec, log=quiet)
    trials = trials_of(spec)
    assert {label: {frozenset(p) for _, p in trials[(label, 0)]} for label in ("sgd", "adamw", "gf_sgd")} == {
        "sgd": {frozenset({"optimizer.lr"})}, "adamw": {frozenset({"optimizer.lr", "beta1"})},
        "gf_sgd": {frozenset({"optimizer.lr"})}}
    assert all("betas" not in cfg["optimizer"] for cfg in fake.configs.values() if cfg["optimizer"]["name"] != "adamw")


def test_an_optional_dimension_on_an_inert_key_is_lacking(tmp_path):
    space = LR_REL + '"optimizer.momentum" = { low = 0.5, high = 0.99, log = false, optional = true }\n'
    spec = load_tune(write(tmp_path, "trials = 2\n", space, "[methods.sgd]\n[methods.grokfast]\n" + GROKFAST_SGD))
    assert {c.label: [d.field for d in tune_mod.dimensions(spec, c)] for c in spec.contenders} == {
        "sgd": ["optimizer.lr", "optimizer.momentum"], "grokfast": ["optimizer.lr"],  # Adam base: momentum ignored
        "gf_sgd": ["optimizer.lr", "optimizer.momentum"]}


def _steps(name: str, hyper: dict) -> list:
    """Eight steps of method ``name`` on a tiny 2-layer net from fixed data: the parameters after them (RAdam
    reads eps and the second moment from its sixth step on)."""
    import torch

    from egalitarian.methods import build_optimizer

    torch.manual_seed(0)
    w1, b1, w2 = (torch.nn.Parameter(torch.randn(*s)) for s in ((4, 3), (4,), (2, 4)))
    x = torch.randn(5, 3)
    opt = build_optimizer([("layers.0.weight", w1), ("layers.0.bias", b1), ("layers.1.weight", w2)], name, **hyper)
    for _ in range(8):
        opt.zero_grad()
        (w2 @ torch.tanh(w1 @ x.T + b1[:, None])).sin().sum().backward()
        opt.step()
    return [p.detach().clone() for p in (w1, b1, w2)]


def _other(key: str, value):
    """A different valid value of a hyperparameter."""
    if key == "momentum_position":
        return "before" if value == "after" else "after"
    if key == "betas":
        return [0.5, 0.6]
    if key == "eps":
        return 0.1
    if key == "rank":
        return 2
    if isinstance(value, int) and not isinstance(value, bool):
        return value + 3
    return 0.5 if value == 0 else value * 0.5


def _settings(name: str):
    """Settings that move the inert keys around: each base, the rsvd backend (rank 1, so its sketch matters), the
    rms scale, momentum on and off."""
    from itertools import product

    from egalitarian.methods import OPTIMIZERS

    d = OPTIMIZERS[name].defaults
    axes = [[{"base": b} for b in ("adam", "adamw", "radam", "sgd", "rmsprop")] if "base" in d else [{}],
            [{}, {"backend": "rsvd", "rank": 1}] if "backend" in d and "rank" in d else [{}],
            [{}, {"scale": "rms"}] if "scale" in d else [{}],
            [{"momentum": 0.0}, {"momentum": 0.9}] if "momentum_position" in d else [{}]]
    for parts in product(*axes):
        yield {k: v for p in parts for k, v in p.items()}


def test_inert_hyperparameters_leave_every_step_unchanged():
    """For every method and settings: changing a key :func:`inert_hyperparameters` names leaves eight steps
    bit-identical, and changing one it names under other settings (momentum, betas, eps, rank, ...) changes them
    where it does not name it: the rule is measured on the optimizers, not restated."""
    from egalitarian.methods import OPTIMIZERS, inert_hyperparameters

    somewhere = set()
    checked = 0
    for name in OPTIMIZERS:
        for settings in _settings(name):
            somewhere |= inert_hyperparameters(name, settings)
    assert {"momentum", "betas", "eps", "rank", "power_iters", "seed", "rms_target", "momentum_position"} <= somewhere
    for name in OPTIMIZERS:
        defaults = OPTIMIZERS[name].defaults
        for settings in _settings(name):
            inert = inert_hyperparameters(name, settings)
            ref = _steps(name, settings)
            for key in sorted(somewhere & set(defaults)):
                changed = _steps(name, {**settings, key: _other(key, {**defaults, **settings}[key])})
                same = all(a.equal(b) for a, b in zip(ref, changed, strict=True))
                assert same == (key in inert), (name, settings, key)
                checked += 1
    assert checked > 100
    assert inert_hyperparameters("grokfast") == {"momentum"}  # Adam base
    assert inert_hyperparameters("grokfast", {"base": "sgd"}) == {"betas", "eps"}
    assert inert_hyperparameters("egd_adamw") == {"momentum", "rank", "power_iters", "seed"}  # a variant's rule
    assert inert_hyperparameters("muon") == set() == inert_hyperparameters("sgd")


@pytest.mark.parametrize(
    ("tune", "space", "fragments"),
    [
        ("trials = 3\nstudies = 0\n", LR, ["tune.studies = 0", "integer >= 1"]),
        ('trials = 3\nstages = "twice"\n', LR, ["tune.stages = 'twice'", "coarse-refine"]),
        ('trials = 3\nstages = "coarse-refine"\n', '[space]\n"schedule" = { choices = [{ "scheduler.name" = '
         '"constant" }] }\n', ["space.schedule", "first dimension"]),
        ('trials = 3\nsampler = "grid"\n', '[space]\n"optimizer.lr" = { low = 0.1, high = 10.0, points = 3, '
         'off = true }\n', ["space.optimizer.lr.off", "grid"]),
        ("trials = 3\n", '[space]\n"optimizer.betas" = { low = 0.1, high = 1.0 }\n',
         ["space.optimizer.betas", "no such field", "optional = true"]),
        ("trials = 3\n", '[space]\n"optimizer.lr" = { choices = [] }\n', ["space.optimizer.lr.choices", "non-empty"]),
        ("trials = 3\n", '[space]\n"optimizer.lr" = { low = 0.1, high = 1.0 }\n"optimizer.betas" = { low = 0.1, '
         'high = 1.0, optional = true }\n', ["space.optimizer.betas", "no method of this spec has it"]),
        ("trials = 3\n", '[space]\n"x" = { choices = [{ "scheduler.name" = "nosuch" }] }\n',
         ["space.x", "nosuch"]),
        ("trials = 3\nwiden = -1\n", LR, ["tune.widen = -1", "integer >= 0"]),
        ('trials = 3\nwiden = "yes"\n', LR, ["tune.widen = 'yes'", "integer >= 0"]),
        ("trials = 3\n", '[space]\n"m" = { fields = [], low = 0.5, high = 0.9, log = false }\n',
         ["space.m.fields = []", "non-empty list"]),
        ("trials = 3\n", '[space]\n"m" = { fields = ["optimizer.betas.x"], low = 0.5, high = 0.9, log = false, '
         'optional = true }\n', ["space.m.fields = 'optimizer.betas.x'", "SECTION.FIELD.INDEX"]),
        ("trials = 3\n", '[space]\n"m" = { fields = ["optimizer.lr.0"], low = 0.5, high = 0.9, log = false }\n',
         ["space.m = 'optimizer.lr.0'", "an element needs a list"]),
        ("trials = 3\n", '[space]\n"m" = { fields = ["optimizer.betas.0"], low = 0.5, high = 0.9, log = false }\n',
         ["space.m.fields = ['optimizer.betas.0']", "none of these fields", "optional = true"]),
        ("trials = 3\n", '[space]\n"optimizer.momentum" = { low = 0.5, high = 0.99, log = false, limit_high = 0.9 }\n',
         ["space.optimizer.momentum.limit_high = 0.9", ">= high = 0.99"]),
        ("trials = 3\n", '[space]\n"optimizer.lr" = { low = 0.1, high = 1.0, limit_low = "x" }\n',
         ["space.optimizer.lr.limit_low = 'x'", "finite number"]),
    ],
)
def test_malformed_search_designs_exit_2_with_one_line(tmp_path, capsys, tune, space, fragments):
    code = main(["tune", str(write(tmp_path, tune, space))])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    for f in fragments:
        assert f in err, (f, err)


def test_report_set_applies_to_the_reporting_runs_only(tmp_path, monkeypatch):
    """``[report_set]``: the held-out runs evaluate every step while the tuning runs keep the base cadence (the
    board's resolution), and the leaderboard says so."""
    fake = Fake()
    monkeypatch.setattr(tune_mod, "run_sweep", fake)
    path = write(tmp_path, 'trials = 2\nsampler = "random"\n',
                 '[report_set]\n"train.eval_unit" = "step"\n"train.eval_every" = 1\n'
                 '[space]\n"optimizer.lr" = { low = 0.1, high = 10.0, log = true, relative = true }\n',
                 "[methods.sgd]\n")
    rows = tune_mod.tune(path, log=quiet)
    seeds = {cfg["train"]["seed"]: (cfg["train"]["eval_unit"], cfg["train"]["eval_every"])
             for cfg in fake.configs.values()}
    assert {seeds[s] for s in (0, 1)} == {("epoch", 1)}  # tuning seeds: the base cadence
    assert {seeds[s] for s in (10, 11, 12, 13, 14)} == {("step", 1)}  # reporting seeds: every step
    assert len(rows) == 1
    text = (tmp_path / "store-leaderboard.md").read_text()
    assert "evaluation every 1 epoch(s)" in text and "Reporting runs evaluate every 1 step(s)." in text


@pytest.mark.parametrize("every, refine, res, tied", [(100, False, 100, True), (5, False, 5, False),
                                                      (100, True, 1, False)])
def test_leaderboard_states_the_resolution_and_ties_within_it(tmp_path, monkeypatch, every, refine, res, tied):
    """One grid point, lr 0.3 for both methods: by the fake's formula egd takes 10 + seed steps (held-out median
    22 over seeds 10..14) and sgd round(10 + 100·log10(2/0.3) + seed) = 102..106 (median 104), 82 apart: a tie
    when the reporting runs evaluate every 100 steps, not when they evaluate every 5, nor when they evaluate every
    100 but replay the crossing step by step (train.refine_grok: resolution 1 step)."""
    monkeypatch.setattr(tune_mod, "run_sweep", Fake())
    path = write(tmp_path, 'trials = 1\nsampler = "grid"\n',
                 f'[report_set]\n"train.eval_unit" = "step"\n"train.eval_every" = {every}\n'
                 + ('"train.refine_grok" = true\n' if refine else "")
                 + '[space]\n"optimizer.lr" = { low = 0.3, high = 3.0, log = true, points = 1 }\n')
    rows = tune_mod.tune(path, log=quiet)
    assert [(e["method"], e["steps"]["median"]) for e in rows] == [("egd", 22), ("sgd", 104)]
    assert [e["resolution"] for e in rows] == [res, res]
    assert rows[1]["tie_with_leader"] is tied
    text = (tmp_path / "store-leaderboard.md").read_text()
    assert ("step by step (train.refine_grok)" in text) is refine
    assert f"known to within {res} steps" in text
    assert text.rstrip().endswith(f"tied with the leader (egd) within it: {'sgd' if tied else 'none'}.")


# ------------------------------------------------------------------------------------------------ status

def test_status_says_how_far_a_search_is_by_hand(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, 'stages = "coarse-refine"\ntrials = 2\nbatch = 2\nstudies = 2\nwiden = 0\n', LR)
    assert main(["tune", str(path), "--status"]) == 2  # nothing has run: one line naming the store
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "store.sqlite" in err and "nothing has run yet" in err
    monkeypatch.setattr(tune_mod, "run_sweep", Fake(fail_on_call=2))  # stage 1 runs; killed as stage 2 starts
    with pytest.raises(KeyboardInterrupt):
        tune_mod.tune(path, log=quiet)
    assert main(["tune", str(path), "--status"]) == 0
    out = capsys.readouterr().out
    grid = [0.5 * 10 ** (i / 2) for i in range(-4, 5)]  # 0.01..100 times the own lr 0.5, 9 points
    assert "sweep t-tuning: 36 done\n" in out  # 9 lrs x 2 seeds x 2 methods, shared by the studies
    for method in ("sgd", "egd"):
        best = min(grid, key=lambda lr: steps_of(lr, method, 0) + steps_of(lr, method, 1))
        median = (steps_of(best, method, 0) + steps_of(best, method, 1)) / 2
        for k in (0, 1):  # stage 1 told (9 of 9 + 2 trials), stage 2's two trials asked and under way
            assert f"| {method} | {k} | 9/11 | 2 | 2 | {median:g} | lr {best:.3g} |" in out
    monkeypatch.setattr(tune_mod, "run_sweep", Fake())
    tune_mod.tune(path, log=quiet)
    out = (main(["tune", str(path), "--status"]), capsys.readouterr().out)[1]
    assert out.count(" | 11/11 | 0 | 2 | ") == 4  # 2 methods x 2 studies, every trial told
    report = next(line for line in out.splitlines() if line.startswith("sweep t-report: "))
    assert report.endswith(" done") and "widening round 0 (the spec's ranges)" in out

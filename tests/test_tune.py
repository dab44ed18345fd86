"""``egd tune``: the spec's checks, budget parity, seeded and resumable search, censoring in the ranking.

The search tests replace the sweep executor by a fake one that finishes each run with a synthetic outcome
(steps to the threshold as a known function of the learning rate), so the logic is checked without training;
one test at the end runs the real executor end to end on a tiny task.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import egalitarian.tune as tune_mod
from egalitarian.cli import main
from egalitarian.sweep import Store
from egalitarian.tune import CENSORED, TuneSpec, load_tune, score

pytest.importorskip("optuna")

BASE = """
[base]
name = "tiny"
method = "sgd"
[base.task]
name = "modular"
p = 7
[base.model]
name = "mlp"
hidden = 8
[base.methods.sgd]
name = "sgd"
lr = 0.5
[base.methods.egd]
name = "egd"
lr = 0.5
[base.train]
max_epochs = 2
batch_size = 0
progress = "off"
"""

TUNE = """
[tune]
name = "t"
trials = 5
seed = 3
batch = 2
tuning_seeds = [0, 1]
reporting_seeds = [10, 11, 12, 13, 14]
baselines = ["sgd"]
"""

SPACE = """
[space]
"optimizer.lr" = { low = 0.01, high = 100.0, log = true, relative = true }
"""

METHODS = """
[methods.sgd]
[methods.egd]
[methods.egd_all]
method = "egd"
set = { "optimizer.whiten" = "all" }
"""


def spec_file(tmp_path: Path, tune: str = TUNE, space: str = SPACE, methods: str = METHODS, extra: str = "") -> Path:
    path = tmp_path / "spec.toml"
    text = BASE + tune + f'store = "{tmp_path / "store.sqlite"}"\n' + space + methods + extra
    path.write_text(text)
    return path


class FakeExecutor:
    """Stands in for run_sweep: finishes every pending run with steps = 10 + 100·|log10(lr / best)|, where the
    best lr differs per method; runs at lr > 20 'diverge' (not grokked); counts what it executed."""

    BEST = {"sgd": 2.0, "egd": 0.3}

    def __init__(self, fail_on_call: int | None = None):
        self.executed: list[str] = []
        self.calls = 0
        self.fail_on_call = fail_on_call

    def __call__(self, sweep, workers=None, backend="local", address=None, progress=None):
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise KeyboardInterrupt  # killed in the middle of the search: nothing of this round is finished
        with Store(sweep.store) as st:
            st.add(sweep.name, sweep.runs)
            todo = [r["id"] for r in st.runs([r.id for r in sweep.runs]) if r["status"] == "pending"]
            by_id = {r.id: r for r in sweep.runs}
            for rid in todo:
                cfg = by_id[rid].config
                lr = cfg["optimizer"]["lr"]
                steps = 10 + 100 * abs(math.log10(lr / self.BEST[cfg["optimizer"]["name"]]))
                steps = round(steps + cfg["train"]["seed"])  # seeds differ a little
                grokked = lr <= 20
                summary = {"grokked": grokked, "status": "grokked" if grokked else "budget",
                           "grok": {"step": steps, "epoch": steps, "seconds": steps / 100} if grokked else None,
                           "steps": 1000, "epochs": 1000, "seconds": 10.0, "final_test_acc": 1.0 if grokked else 0.1}
                st.claim([rid], "fake")
                st.finish(rid, "fake", summary, [])
                self.executed.append(rid)
            return st.counts([r.id for r in sweep.runs])


def _trials(spec):
    import optuna

    storage = f"sqlite:///{spec.study_path.resolve()}"
    out = {}
    for c in spec.contenders:
        study = optuna.load_study(study_name=f"{spec.name}/{c.label}", storage=storage)
        out[c.label] = [(t.number, t.state.name, dict(t.params)) for t in study.trials]
    return out


def test_every_method_gets_the_same_budget_and_space(tmp_path, monkeypatch):
    fake = FakeExecutor()
    monkeypatch.setattr(tune_mod, "run_sweep", fake)
    spec = load_tune(spec_file(tmp_path))
    studies = tune_mod.search(spec, log=lambda *a, **k: None)
    trials = _trials(spec)
    assert {k: len(v) for k, v in trials.items()} == {"sgd": 5, "egd": 5, "egd_all": 5}
    assert all(state == "COMPLETE" for v in trials.values() for _, state, _ in v)
    for v in trials.values():  # the same searched range (factors of each method's own lr) for everyone
        assert all(0.01 <= p["optimizer.lr"] <= 100 for _, _, p in v)
    # each trial ran once per tuning seed, nothing twice
    assert len(fake.executed) == len(set(fake.executed)) <= 3 * 5 * 2
    assert set(studies) == {"sgd", "egd", "egd_all"}


@pytest.mark.slow
def test_the_sampler_is_seeded(tmp_path, monkeypatch):
    monkeypatch.setattr(tune_mod, "run_sweep", FakeExecutor())
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    spec_a, spec_b = load_tune(spec_file(a)), load_tune(spec_file(b))
    tune_mod.search(spec_a, log=lambda *x, **k: None)
    tune_mod.search(spec_b, log=lambda *x, **k: None)
    assert _trials(spec_a) == _trials(spec_b)
    c = tmp_path / "c"
    c.mkdir()
    spec_c = load_tune(spec_file(c, tune=TUNE.replace("seed = 3", "seed = 4")))
    tune_mod.search(spec_c, log=lambda *x, **k: None)
    assert _trials(spec_c) != _trials(spec_a)


@pytest.mark.slow
def test_a_resumed_search_runs_nothing_twice_and_stays_in_budget(tmp_path, monkeypatch):
    spec = load_tune(spec_file(tmp_path))
    killed = FakeExecutor(fail_on_call=2)  # the second round is killed after its trials were asked
    monkeypatch.setattr(tune_mod, "run_sweep", killed)
    with pytest.raises(KeyboardInterrupt):
        tune_mod.search(spec, log=lambda *a, **k: None)
    states = [s for v in _trials(spec).values() for _, s, _ in v]
    assert states.count("RUNNING") == 3 * 2  # asked, not told
    again = FakeExecutor()
    monkeypatch.setattr(tune_mod, "run_sweep", again)
    tune_mod.search(spec, log=lambda *a, **k: None)
    trials = _trials(spec)
    assert {k: len(v) for k, v in trials.items()} == {"sgd": 5, "egd": 5, "egd_all": 5}  # none beyond the budget
    assert all(s == "COMPLETE" for v in trials.values() for _, s, _ in v)
    assert not set(killed.executed) & set(again.executed)  # finished runs were not run again
    third = FakeExecutor()
    monkeypatch.setattr(tune_mod, "run_sweep", third)
    tune_mod.search(spec, log=lambda *a, **k: None)
    assert third.calls == 0 and third.executed == []  # a finished search does nothing


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["tpe", "random"])
@pytest.mark.parametrize("killed_on", [1, 2])
def test_an_interrupted_search_asks_what_an_uninterrupted_one_asks(tmp_path, monkeypatch, sampler, killed_on):
    # A new process's sampler starts from its seed; resumed naively it drew the first trials' values again
    # (every method's first learning rate was tried twice).  Killed in any round and resumed, the search must
    # end with exactly the trials of a search that was never interrupted, and no trial twice.
    tune = TUNE.replace("batch = 2", f'batch = 2\nsampler = "{sampler}"\nstartup_trials = 2')
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    whole, broken = load_tune(spec_file(a, tune=tune)), load_tune(spec_file(b, tune=tune))
    monkeypatch.setattr(tune_mod, "run_sweep", FakeExecutor())
    tune_mod.search(whole, log=lambda *x, **k: None)
    monkeypatch.setattr(tune_mod, "run_sweep", FakeExecutor(fail_on_call=killed_on))
    with pytest.raises(KeyboardInterrupt):
        tune_mod.search(broken, log=lambda *x, **k: None)
    monkeypatch.setattr(tune_mod, "run_sweep", FakeExecutor())
    tune_mod.search(broken, log=lambda *x, **k: None)
    assert _trials(broken) == _trials(whole)
    for trials in _trials(broken).values():
        values = [p["optimizer.lr"] for _, _, p in trials]
        assert len(set(values)) == len(values) == 5
    import optuna

    study = optuna.load_study(study_name=f"{broken.name}/sgd", storage=f"sqlite:///{broken.study_path.resolve()}")
    assert tune_mod.replay(broken, study.trials)[1] == []  # every trial is one the rule asks
    first = study.trials[0]  # a study resumed the old way: its third trial repeats the first one's values
    old = optuna.create_study(direction="minimize")
    for t in study.trials[:2] + [first] + study.trials[3:]:
        old.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=t.value))
    assert 2 in tune_mod.replay(broken, old.trials)[1]


def test_leaderboard_from_the_best_trials(tmp_path, monkeypatch):
    monkeypatch.setattr(tune_mod, "run_sweep", FakeExecutor())
    spec = load_tune(spec_file(tmp_path, tune=TUNE.replace("trials = 5", "trials = 12")))
    studies = tune_mod.search(spec, log=lambda *a, **k: None)
    winners = tune_mod.best(spec, studies)
    board = tune_mod.report(spec, winners)
    by = {e["method"]: e for e in board}
    # the fake's optimum: sgd lr 2.0, egd lr 0.3; the best found is near it, and its steps are the fake's formula
    for m, best_lr in (("sgd", 2.0), ("egd", 0.3)):
        lr = by[m]["values"]["optimizer.lr"]
        assert abs(math.log10(lr / best_lr)) < 0.5, (m, lr)
        expected = sorted(round(10 + 100 * abs(math.log10(lr / best_lr)) + s) for s in spec.reporting_seeds)
        assert by[m]["steps"]["median"] == expected[2] and by[m]["grokked"] == 5
    assert by["sgd"]["speedup"]["sgd"]["ratio"] == 1.0
    text = tune_mod.leaderboard_markdown(spec, board)
    assert "12 trials each" in text and "optimizer.lr log-uniform 0.01..100 × the method's own value" in text


def test_censored_trials_rank_after_every_success_by_accuracy():
    spec = TuneSpec(name="x", store=Path("s.sqlite"), base={}, contenders=[], space=[],
                                             trials=1)

    def row(steps, acc=1.0, status="done"):
        grok = {"step": steps, "epoch": steps, "seconds": 1.0} if steps else None
        return {"status": status, "summary": {"grokked": bool(steps), "grok": grok, "steps": 5000, "epochs": 5000,
                                              "status": "grokked" if steps else "budget", "final_test_acc": acc}}

    fast, slow = score(spec, [row(100), row(300)]), score(spec, [row(4000), row(4999)])
    half = score(spec, [row(100), row(None, acc=0.6)])  # one of two seeds censored: the median is censored
    never_good, never_bad = score(spec, [row(None, acc=0.9)] * 2), score(spec, [row(None, acc=0.2)] * 2)
    failed = score(spec, [row(100), row(None, status="failed")])
    assert fast == 200 and slow == 4499.5
    assert fast < slow < never_good < never_bad and slow < half
    assert half == pytest.approx(CENSORED + 1 - 0.8) and never_good == pytest.approx(CENSORED + 0.1)
    assert failed >= CENSORED


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda t, s, m: (t, s, m + "[methods.nosuch]\n"), ["methods.nosuch", "method", "'nosuch'"]),
        (lambda t, s, m: (t, s.replace("optimizer.lr", "optimizer.lrr"), m), ["space.optimizer.lrr", "no such field"]),
        (lambda t, s, m: (t, s.replace("low = 0.01", "low = 1000.0"), m), ["space.optimizer.lr.low = 1000.0",
                                                                           "must be < high"]),
        (lambda t, s, m: (t, s.replace("low = 0.01", "low = 0.0"), m), ["space.optimizer.lr.low = 0.0", "log"]),
        (lambda t, s, m: (t.replace("trials = 5", "trials = 0"), s, m), ["tune.trials = 0", "integer >= 1"]),
        (lambda t, s, m: (t.replace("reporting_seeds = [10", "reporting_seeds = [1"), s, m),
         ["tune.reporting_seeds", "disjoint from tuning_seeds", "[1]"]),
        (lambda t, s, m: (t + "colour = 1\n", s, m), ["tune.colour = 1", "unknown key"]),
        (lambda t, s, m: (t, s.replace("relative = true", "relative = false"),
                          m.replace('set = { "optimizer.whiten" = "all" }', 'set = { "optimizer.lr" = 3.0 }')),
         ["methods.egd_all.set", "searched"]),
        (lambda t, s, m: (t.replace('baselines = ["sgd"]', 'baselines = ["adam"]'), s, m), ["tune.baselines"]),
        (lambda t, s, m: (t + 'sampler = "grid"\n', s, m), ["space.optimizer.lr.points", "grid"]),
    ],
)
def test_malformed_specs_exit_2_with_one_line(tmp_path, capsys, edit, fragments):
    t, s, m = edit(TUNE, SPACE, METHODS)
    code = main(["tune", str(spec_file(tmp_path, t, s, m))])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    for f in fragments:
        assert f in err, (f, err)


def test_a_grid_needs_trials_equal_to_its_size(tmp_path, capsys):
    space = '[space]\n"optimizer.lr" = { low = 0.1, high = 10.0, log = true, points = 3 }\n'
    tune = TUNE.replace("trials = 5", "trials = 4") + 'sampler = "grid"\n'
    assert main(["tune", str(spec_file(tmp_path, tune, space))]) == 2
    assert "tune.trials = 4: must equal the grid's size, 3 points" in capsys.readouterr().err
    assert tune_mod.Dimension("x", 0.1, 10.0, points=3).grid() == [0.1, 1.0, 10.0]


@pytest.mark.slow
def test_end_to_end_with_the_real_executor(tmp_path, capsys):
    tune = TUNE.replace("trials = 5", "trials = 2").replace("tuning_seeds = [0, 1]", "tuning_seeds = [0]")
    tune = tune.replace("reporting_seeds = [10, 11, 12, 13, 14]", "reporting_seeds = [1]")
    path = spec_file(tmp_path, tune, methods="[methods.sgd]\n[methods.egd]\n")
    assert main(["tune", str(path), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "| method | best hyperparameters |" in out and "smoke test, not a result" in out
    board = (tmp_path / "store-leaderboard.md").read_text()
    assert "| sgd |" in board and "| egd |" in board
    with Store(tmp_path / "store.sqlite", create=False) as st:
        runs = st.runs()
    assert len(runs) <= 2 * 2 + 2 and all(r["status"] == "done" for r in runs)
    assert main(["tune", str(path)]) == 0  # again: nothing to run
    with Store(tmp_path / "store.sqlite", create=False) as st:
        assert [r["attempts"] for r in st.runs()] == [r["attempts"] for r in runs]


def test_a_relative_range_is_centred_on_each_methods_own_value(tmp_path):
    methods = METHODS + '[methods.sgd_slow]\nmethod = "sgd"\nset = { "optimizer.lr" = 0.05 }\n'
    spec = load_tune(spec_file(tmp_path, methods=methods))
    by = {c.label: c for c in spec.contenders}
    # the recipe's tables say lr 0.5 for sgd and egd; sgd_slow is centred on its own 0.05; factor 2 -> 2x that
    assert tune_mod.trial_values(spec, by["sgd"], {"optimizer.lr": 2.0}) == {"optimizer.lr": 1.0}
    assert tune_mod.trial_values(spec, by["sgd_slow"], {"optimizer.lr": 2.0}) == {"optimizer.lr": 0.1}
    runs = tune_mod.plan(spec, by["egd_all"], {"optimizer.lr": 0.25}, [0, 1])
    assert [r.config["optimizer"]["lr"] for r in runs] == [0.25, 0.25]
    assert all(r.config["optimizer"]["whiten"] == "all" and r.config["optimizer"]["name"] == "egd" for r in runs)
    assert [r.config["train"]["seed"] for r in runs] == [0, 1] and runs[0].label == "method=egd_all optimizer.lr=0.25"


def test_a_folder_named_like_the_base_recipe_does_not_shadow_it(tmp_path):
    """An exported board's folder (experiments/24-fair-boards/mod-add-p97/) sits beside its spec, whose base is the
    recipe of the same name: a relative base is a file, never a directory."""
    from egalitarian.sweep import load_sweep

    (tmp_path / "mod-add-p97").mkdir()
    spec = tmp_path / "t.toml"
    spec.write_text('base = "mod-add-p97"\n[tune]\nname = "t"\ntrials = 2\n[space]\n'
                    '"optimizer.lr" = { low = 0.01, high = 1.0 }\n[methods.sgd]\n')
    assert load_tune(spec).base["name"] == "mod-add-p97"
    sweep = tmp_path / "s.toml"
    sweep.write_text('base = "mod-add-p97"\n[sweep]\nname = "s"\n[grid]\nseed = [0]\n')
    assert load_sweep(sweep).runs[0].config["task"]["p"] == 97  # the recipe, (a + b) mod 97

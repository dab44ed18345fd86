"""``train.refine_grok``: a coarse evaluation that first finds the grok threshold is replayed, from the state kept at
the evaluation before it, with an evaluation after every step, so the grok step is exact.

The reference for every run is the same config evaluating every step (evaluation changes no training state, so
both take the same steps): the refined grok step is computed here, by hand, from that run's test-accuracy curve.
The task is sparse parity of one bit (tests/test_train.py): 64 training samples, batches of 16 (4 steps an epoch),
EGD at lr 0.02, whose test accuracy first reaches 0.95 after a few dozen steps.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal

import pytest
import torch
from test_train import assert_same, load_ckpt, parity_cfg, read_rows

import egalitarian.train as T
from egalitarian.build import build_run
from egalitarian.cli import main
from egalitarian.config import OMITTED_WHEN_DEFAULT, TRAIN_DEFAULTS, load_config, resolve, train_settings
from egalitarian.errors import ConfigError
from egalitarian.methods import OPTIMIZERS
from egalitarian.rundir import MetricRow
from egalitarian.sweep import expand
from egalitarian.train import RunStopped, train

OPT = {"name": "egd", "lr": 0.02}
SPE = 4  # steps per epoch: 64 training samples in batches of 16
EPOCHS = 20
THR = 0.95  # train.grok_threshold's default


def cfg(**train):
    return parity_cfg(OPT, max_epochs=EPOCHS, **train)


def curve(run_dir, split="test"):
    """``{step: accuracy}`` of a run's metrics.csv (parsed here)."""
    return {s: float(v) for s, _, sp, m, v in read_rows(run_dir / "metrics.csv") if (sp, m) == (split, "acc")}


def evaluated_steps(unit, every, last=EPOCHS * SPE):
    """The steps a run evaluating every ``every`` epochs or steps evaluates at: 0, the multiples, the budget's end."""
    n = every * (SPE if unit == "epoch" else 1)
    return sorted({*range(0, last + 1, n), last})


def by_hand(per_step, coarse_steps):
    """(s0, s1, t): the first coarse evaluation at or above the threshold (s1), the one before it (s0), and the first
    step after s0 at or above it on the per-step curve (t): the step a refined run must report."""
    s1 = next(s for s in coarse_steps if per_step[s] >= THR)
    s0 = max(s for s in coarse_steps if s < s1)
    t = next(s for s in range(s0 + 1, s1 + 1) if per_step[s] >= THR)
    return s0, s1, t


def timeless(summary):
    """A summary without wall-clock seconds (which no two runs share)."""
    out = {k: v for k, v in summary.items() if "seconds" not in k}
    for k in ("memorized", "grok", "switched_off"):
        out[k] = out[k] and {"step": out[k]["step"], "epoch": out[k]["epoch"]}
    if "refined" in out:
        out["refined"] = {k: v for k, v in out["refined"].items() if k != "discarded_seconds"}
    return out


@pytest.fixture(scope="module")
def per_step(tmp_path_factory):
    """The reference: every step evaluated, the whole budget (train_eval -> run directory)."""
    root = tmp_path_factory.mktemp("per-step")
    for train_eval in ("running", "full"):
        train(cfg(eval_unit="step", eval_every=1, stop_after_grok=False, train_eval=train_eval), root / train_eval)
    return lambda train_eval="running": root / train_eval


# --------------------------------------------------------------------------------- the grok step, end to end


@pytest.mark.parametrize("unit, every, train_eval", [("step", 7, "running"), ("epoch", 1, "running"),
                                                     ("epoch", 3, "full")])
def test_the_refined_grok_step_is_the_first_per_step_crossing_after_the_last_evaluation_below(
        tmp_path, per_step, unit, every, train_eval):
    ref = per_step(train_eval)
    acc = curve(ref)
    s0, s1, t = by_hand(acc, evaluated_steps(unit, every))
    common = dict(eval_unit=unit, eval_every=every, train_eval=train_eval, stop_after_grok=False)
    coarse = train(cfg(**common), tmp_path / "coarse")
    refined = train(cfg(refine_grok=True, **common), tmp_path / "refined")
    assert coarse["grok"]["step"] == s1 and "refined" not in coarse
    assert refined["grok"]["step"] == t and refined["grok"]["epoch"] == t // SPE
    assert {k: v for k, v in refined["refined"].items() if k != "discarded_seconds"} == {
        "from_step": s0, "to_step": s1, "exact": True}
    assert refined["refined"]["discarded_seconds"] > 0
    # the metrics: the coarse run's, with the per-step run's evaluations of the replayed steps s0 + 1 .. t between
    rows_c, rows_p = read_rows(tmp_path / "coarse" / "metrics.csv"), read_rows(ref / "metrics.csv")
    expected = ([r for r in rows_c if r[0] <= s0] + [r for r in rows_p if s0 < r[0] <= t]
                + [r for r in rows_c if r[0] > t])
    assert read_rows(tmp_path / "refined" / "metrics.csv") == expected
    # memorized: the first of the refined run's evaluations with train accuracy >= 0.99 (exact within the replay)
    train_acc = curve(ref, "train")
    seen = sorted({r[0] for r in expected})
    assert refined["memorized"]["step"] == next(s for s in seen if train_acc.get(s, 0.0) >= 0.99)
    # the parameters after the whole budget: the same steps were taken, bit for bit
    final = load_ckpt(ref)["model"]
    assert_same(load_ckpt(tmp_path / "refined")["model"], final)
    assert_same(load_ckpt(tmp_path / "coarse")["model"], final)
    assert refined["steps"] == coarse["steps"] == EPOCHS * SPE


def _cadence(acc, t):
    """A step cadence n that misses t (t % n != 0) and whose first evaluation after t is at or above the
    threshold, so the refined run must find the per-step run's grok step and the coarse run a later one."""
    for n in range(2, 16):
        if t % n and acc[math.ceil(t / n) * n] >= THR:
            return n
    raise AssertionError(f"no cadence from 2 to 15 brackets the crossing at step {t}")


@pytest.mark.parametrize("patience", [0, 2])
def test_refined_equals_every_step_and_patience_counts_from_the_refined_step(tmp_path, per_step, patience):
    acc = curve(per_step())
    t = next(s for s in sorted(acc) if acc[s] >= THR)  # the per-step run's grok step
    n = _cadence(acc, t)
    stops = [s for s in evaluated_steps("step", n) if s > t]  # the evaluations after the refined crossing
    every = train(cfg(eval_unit="step", eval_every=1, patience=patience), tmp_path / "every")
    coarse = train(cfg(eval_unit="step", eval_every=n, patience=patience), tmp_path / "coarse")
    refined = train(cfg(eval_unit="step", eval_every=n, patience=patience, refine_grok=True), tmp_path / "refined")
    assert every["grok"]["step"] == refined["grok"]["step"] == t
    assert coarse["grok"]["step"] == math.ceil(t / n) * n != t
    assert every["steps"] == t + patience
    assert refined["steps"] == (stops[patience - 1] if patience else t)  # patience: evaluations at the cadence
    assert refined["stop_reason"] == "grokked" and refined["status"] == "grokked"


def test_eval_every_step_with_refine_changes_nothing(tmp_path):
    base = cfg(eval_unit="step", eval_every=1, patience=3)
    a = train(base, tmp_path / "a")
    b = train({**base, "train": {**base["train"], "refine_grok": True}}, tmp_path / "b")
    assert "refined" not in b and timeless(a) == timeless(b)
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    assert_same(load_ckpt(tmp_path / "a")["model"], load_ckpt(tmp_path / "b")["model"])
    config = lambda d: json.loads((d / "config.json").read_text())["config"]
    assert config(tmp_path / "b")["train"] == {**config(tmp_path / "a")["train"], "refine_grok": True}


def test_a_replay_that_does_not_reproduce_the_crossing_keeps_the_coarse_one(tmp_path, per_step, monkeypatch):
    """Non-determinism, made here: the first measurement at a coarse step still below the threshold says 1.0.  The
    replay's own measurements stay below, so that step keeps the coarse measurement: grok there, not exact."""
    acc = curve(per_step())
    coarse_steps = evaluated_steps("epoch", 1)
    fake = next(s for s in coarse_steps if s >= 2 * SPE and all(acc[k] < THR for k in range(s - SPE + 1, s + 1)))
    real, faked = T.measure, []

    def measure(run, st, *args):
        m = real(run, st, *args)
        if st.step == fake and not faked:
            faked.append(st.step)
            m["test_acc"] = 1.0
        return m

    monkeypatch.setattr(T, "measure", measure)
    s = train(cfg(refine_grok=True), tmp_path)
    assert s["grok"]["step"] == fake and s["steps"] == fake
    assert s["refined"]["exact"] is False
    assert (s["refined"]["from_step"], s["refined"]["to_step"]) == (fake - SPE, fake)
    test_acc = curve(tmp_path)
    assert test_acc[fake] == 1.0  # the coarse measurement is the one recorded
    assert [test_acc[k] for k in range(fake - SPE + 1, fake)] == [acc[k] for k in range(fake - SPE + 1, fake)]


# ------------------------------------------------------------------------------------------ stop and resume

COARSE = dict(eval_every=3, checkpoint_every=1, checkpoint_seconds=1e-9)  # every 12 steps; a checkpoint is due
# after every step: before the grok it waits for an evaluation


class Killed(Exception):
    """Stands for kill -9: the run ends where it is, nothing saved."""


def _uninterrupted(tmp_path):
    s = train(cfg(refine_grok=True, **COARSE), tmp_path / "one-go")
    # the config's trajectory: the replay has steps before its crossing and ends before the coarse one
    assert s["refined"]["from_step"] + 1 < s["grok"]["step"] < s["refined"]["to_step"], s["refined"]
    return s, read_rows(tmp_path / "one-go" / "metrics.csv"), load_ckpt(tmp_path / "one-go")["model"]


def _in_replay(step):
    return step % (3 * SPE) != 0  # a step the coarse cadence does not evaluate


def test_a_kill_during_the_replay_resumes_to_the_same_run(tmp_path):
    one_go, rows, params = _uninterrupted(tmp_path)

    def kill(step, metrics):
        if _in_replay(step):
            raise Killed

    run = tmp_path / "killed"
    with pytest.raises(Killed):
        train(cfg(refine_grok=True, **COARSE), run, on_eval=kill)
    assert load_ckpt(run)["loop"]["step"] == one_go["refined"]["from_step"]  # the last evaluation before the grok
    resumed = train(cfg(refine_grok=True, **COARSE), run, resume=True)
    assert timeless(resumed) == timeless(one_go)
    assert read_rows(run / "metrics.csv") == rows
    assert_same(load_ckpt(run)["model"], params)


@pytest.mark.parametrize("where", ["replay", "between evaluations"])
def test_a_signal_before_the_grok_saves_the_last_evaluation_and_resumes_to_the_same_run(tmp_path, monkeypatch,
                                                                                           where):
    one_go, rows, params = _uninterrupted(tmp_path)
    s0 = one_go["refined"]["from_step"]
    sent: list[int] = []

    def send(step):
        if not sent:
            sent.append(step)
            os.kill(os.getpid(), signal.SIGTERM)

    on_eval = None
    if where == "replay":
        on_eval = lambda step, metrics: send(step) if _in_replay(step) else None
    else:  # two steps after the evaluation at s0, on the way to the coarse crossing
        real = T.batch_step

        def batch_step(run, st, *args):
            ok = real(run, st, *args)
            if st.step == s0 + 2:
                send(st.step)
            return ok

        monkeypatch.setattr(T, "batch_step", batch_step)
    run = tmp_path / "stopped"
    with pytest.raises(RunStopped) as e:
        train(cfg(refine_grok=True, **COARSE), run, handle_signals=True, on_eval=on_eval)
    assert sent and e.value.summary["status"] == "interrupted"
    assert e.value.summary["steps"] == load_ckpt(run)["loop"]["step"] == s0
    assert read_rows(run / "metrics.csv") == [r for r in rows if r[0] <= s0]
    monkeypatch.undo()
    resumed = train(cfg(refine_grok=True, **COARSE), run, resume=True)
    assert timeless(resumed) == timeless(one_go)
    assert read_rows(run / "metrics.csv") == rows
    assert_same(load_ckpt(run)["model"], params)


def test_a_snapshot_restores_the_run_labels_data_order_and_rngs():
    """Keep a snapshot mid-epoch, take steps across an epoch start with a label shuffle and draw from torch's RNG,
    restore: the same steps again give the same parameters, labels, loop state and random numbers, bit for bit."""
    c = resolve(parity_cfg(OPT, shuffle_labels_at=[2]), OPTIMIZERS)
    tc = train_settings(c)
    device = torch.device("cpu")
    run = build_run(c, device)
    run.data.y_train = run.data.y_train.clone()
    batches = T.Batches.of(run.data.n_train, tc)
    gen = torch.Generator().manual_seed(0)
    st, rows = T.LoopState(), []

    def steps(k):
        for _ in range(k):
            if st.batch == 0:
                T.begin_epoch(st, run.data, gen, batches, [2], tc["shuffle_seed"])
            assert T.batch_step(run, st, batches, tc, contextlib.nullcontext, device)
        rows.append(MetricRow(st.step, st.epoch, "test", "acc", 0.0))
        state = copy.deepcopy(T.train_state(run, gen, st))  # a copy: train_state holds the live tensors
        state["loop"]["train_seconds"] = 0.0  # wall clock: the only part that may differ
        return state, run.data.y_train.clone(), torch.rand(3), list(rows)

    steps(6)  # one epoch and a half: the running sums and the permutation are mid-epoch
    snap = T.keep_snapshot(run, gen, st, rows, run.data.y_train, device)
    first = steps(5)  # into epoch 2 (the shuffle) and on
    assert st.label_shuffles == [{"epoch": 2, "step": 8}]
    st = T.restore_snapshot(snap, run, gen, rows, run.data.y_train, device)
    assert st.step == 6 and len(rows) == 1 and st.label_shuffles == []
    assert_same(steps(5), first)
    st = T.restore_snapshot(snap, run, gen, rows, run.data.y_train, device)  # a snapshot restores more than once
    assert_same(steps(5), first)


# --------------------------------------------------------------------------------------------- the config


def _resolve_train(**train):
    return resolve({"task": {"name": "parity"}, "model": {"name": "mlp"}, "optimizer": {"name": "sgd"},
                    "train": train})


def test_off_is_left_out_of_the_resolved_config_and_run_ids_are_unchanged():
    assert TRAIN_DEFAULTS["refine_grok"] is False and "refine_grok" in OMITTED_WHEN_DEFAULT
    assert _resolve_train(refine_grok=False) == _resolve_train()
    assert "refine_grok" not in _resolve_train()["train"]
    assert _resolve_train(refine_grok=True)["train"]["refine_grok"] is True
    # ids computed before the field existed (tests/test_label_shuffle.py: mod-add-p97 and parity-k3, EGD, seed 0)
    for recipe, expected in (("mod-add-p97", "ae9351be88a44426"), ("parity-k3", "8be97c82074e9d86")):
        base = load_config(recipe)
        (run,) = expand(base, {"seed": [0]}, [{"method": "egd"}], {})
        (off,) = expand(base, {"seed": [0]}, [{"method": "egd"}], {"train.refine_grok": False})
        (on,) = expand(base, {"seed": [0]}, [{"method": "egd"}], {"train.refine_grok": True})
        assert run.id == off.id == expected != on.id


@pytest.mark.parametrize("value", [1, 0, "true", [True]])
def test_a_value_that_is_not_a_bool_is_a_config_error_naming_the_field(value):
    with pytest.raises(ConfigError) as e:
        _resolve_train(refine_grok=value)
    assert str(e.value).startswith(f"train.refine_grok = {value!r}: must be of type bool"), str(e.value)


def test_the_switch_off_rule_is_refused_with_it():
    with pytest.raises(ConfigError) as e:
        _resolve_train(refine_grok=True, switch_off_threshold=0.9, switch_off_split="test")
    assert str(e.value).startswith("train.refine_grok = True: cannot be combined with switch_off_threshold > 0")
    _resolve_train(refine_grok=False, switch_off_threshold=0.9)  # each alone is fine
    _resolve_train(refine_grok=True, switch_off_threshold=0.0)


def test_cli_lists_the_field_and_refuses_a_bad_value_in_one_line(tmp_path, capsys):
    assert main(["list", "fields"]) == 0
    assert "refine_grok" in capsys.readouterr().out
    toml = tmp_path / "tiny.toml"
    toml.write_text('[task]\nname = "modular"\np = 7\n[model]\nname = "mlp"\nhidden = 8\n[optimizer]\nname = "sgd"\n')
    code = main(["run", "--config", str(toml), "--set", "train.refine_grok=1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("egd: error: train.refine_grok = 1: must be of type bool")

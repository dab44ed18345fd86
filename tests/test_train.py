"""The training loop: events, run directory, budgets, bit-identical resume, stopping rules, switch-off, NaN."""

from __future__ import annotations

import copy
import csv
import json
import math

import pytest
import torch

from egalitarian.build import make_task
from egalitarian.errors import ConfigError
from egalitarian.grokking import update_events
from egalitarian.models import MLP
from egalitarian.train import RunStopped, pick_device, train

P, FRAC = 11, 0.5
N_TRAIN = int(P * P * FRAC)  # 121 pairs, half of them: 60 training samples
MODULAR = {"name": "modular", "p": P, "op": "add", "train_frac": FRAC}
# Sparse parity of one bit among 6: a 6 -> 16 -> 1 MLP generalises within a few epochs (a run that groks).
PARITY = {"name": "parity", "n": 6, "k": 1, "n_train": 64, "n_test": 64}


def make_cfg(optimizer=None, task=None, loss=None, hidden=32, **train):
    cfg = {
        "task": dict(task or MODULAR),
        "model": {"name": "mlp", "hidden": hidden},
        "optimizer": dict(optimizer or {"name": "egd", "lr": 0.5}),
        "train": {"threads": 1, "progress": "off", "batch_size": 16, "max_epochs": 3, **train},
    }
    if loss is not None:
        cfg["loss"] = {"name": loss}
    return cfg


def parity_cfg(optimizer=None, **train):
    return make_cfg(optimizer or {"name": "egd", "lr": 0.05}, task=PARITY, loss="mse", hidden=16, **train)


def read_rows(path) -> list[tuple[int, int, str, str, str]]:
    """metrics.csv parsed here (not with the package's reader); values kept as the written text (bitwise)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == ["step", "epoch", "split", "metric", "value"]
        return [(int(s), int(e), sp, m, v) for s, e, sp, m, v in reader]


def series(rows, split, metric):
    return [(s, e, float(v)) for s, e, sp, m, v in rows if sp == split and m == metric]


def load_ckpt(run_dir):
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)


def assert_same(a, b, path="") -> None:
    """Recursive bitwise equality of (nested) state dicts."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


# ------------------------------------------------------------------------------------------- update_events


def _replay(train_accs, test_accs, **thresholds):
    events: dict = {"memorized": None, "grokked": None}
    for i, (tr, te) in enumerate(zip(train_accs, test_accs, strict=True)):
        update_events(events, {"step": 10 * i, "epoch": i, "seconds": 0.5 * i}, tr, te, **thresholds)
    return events


def test_update_events_first_crossing_latched():
    train_acc = [0.1, 0.5, 0.98, 0.99, 0.7, 1.0, 1.0, 1.0]
    test_acc = [0.0, 0.1, 0.1, 0.2, 0.3, 0.94, 0.95, 0.5]
    ev = _replay(train_acc, test_acc)
    assert ev["memorized"] == {"step": 30, "epoch": 3, "seconds": 1.5}  # 0.99 counts (≥), 0.98 does not
    assert ev["grokked"] == {"step": 60, "epoch": 6, "seconds": 3.0}  # 0.94 does not, 0.95 does
    # the later dips (train 0.7 at i = 4, test 0.5 at i = 7) moved nothing


def test_update_events_thresholds_are_configurable():
    train_acc = [0.1, 0.6, 0.8, 0.99]
    test_acc = [0.0, 0.5, 0.86, 0.9]
    ev = _replay(train_acc, test_acc, memorize_threshold=0.6, grok_threshold=0.85)
    assert ev["memorized"]["epoch"] == 1 and ev["grokked"]["epoch"] == 2
    ev = _replay(train_acc, test_acc, memorize_threshold=1.0, grok_threshold=0.95)
    assert ev == {"memorized": None, "grokked": None}


def test_update_events_never_crossing_and_missing_train_accuracy():
    ev = _replay([0.5] * 5, [0.1] * 5)
    assert ev == {"memorized": None, "grokked": None}
    events = {"memorized": None, "grokked": None}
    update_events(events, {"step": 0, "epoch": 0, "seconds": 0.0}, None, 1.0)  # no train accuracy at step 0
    assert events["memorized"] is None and events["grokked"]["step"] == 0


def test_update_events_does_not_alias_when():
    events = {"memorized": None, "grokked": None}
    when = {"step": 1, "epoch": 1, "seconds": 0.0}
    update_events(events, when, 1.0, 1.0)
    when["step"] = 99
    assert events["memorized"]["step"] == 1 and events["grokked"]["step"] == 1


# -------------------------------------------------------------------------------------- a run, end to end


def test_end_to_end_run_directory(tmp_path):
    epochs, bs = 4, 16
    cfg = make_cfg(max_epochs=epochs, batch_size=bs, train_eval="full", stop_after_grok=False)
    run = tmp_path / "run"
    summary = train(cfg, run)

    # config.json: resolved config + environment
    written = json.loads((run / "config.json").read_text())
    assert written["config"]["optimizer"] == {"name": "egd", "lr": 0.5}
    assert written["config"]["train"]["max_epochs"] == epochs
    assert written["environment"]["torch"] == torch.__version__
    assert "git_commit" in written["environment"]
    assert (run / "checkpoint.pt").is_file()

    # budget by hand: 60 training pairs, batch 16, last partial batch dropped → 3 steps per epoch
    spe = N_TRAIN // bs
    assert (N_TRAIN, spe) == (60, 3)
    assert summary["steps_per_epoch"] == spe
    assert summary["steps"] == epochs * spe == 12 and summary["epochs"] == epochs
    assert summary["status"] == "budget" and summary["budget_exhausted"] is True
    assert summary["stop_reason"] == "max_epochs"
    assert summary["skipped_steps"] == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 12

    # metrics.csv: one evaluation at step 0 and one after each epoch, train and test, acc and loss
    rows = read_rows(run / "metrics.csv")
    evals = [(s, e) for s, e, sp, m, v in rows if (sp, m) == ("test", "acc")]
    assert evals == [(spe * e, e) for e in range(epochs + 1)]
    assert len(rows) == 4 * (epochs + 1)
    for s, e in evals:
        got = sorted((sp, m) for s2, e2, sp, m, v in rows if (s2, e2) == (s, e))
        assert got == [("test", "acc"), ("test", "loss"), ("train", "acc"), ("train", "loss")]

    # the recorded accuracies and losses, recomputed here from the model itself
    data = make_task("modular", p=P, op="add", train_frac=FRAC)
    assert data.n_train == N_TRAIN
    torch.manual_seed(0)  # train.seed: the model-init seed
    initial = MLP(2 * P, 32, P)
    model = MLP(2 * P, 32, P)
    model.load_state_dict(load_ckpt(run)["model"])
    for net, step in ((initial, 0), (model, 12)):
        with torch.no_grad():
            for split, x, y in (("test", data.x_test, data.y_test), ("train", data.x_train, data.y_train)):
                out = net(x)
                acc = (out.argmax(1) == y).double().mean().item()
                loss = torch.nn.functional.cross_entropy(out, y).item()
                rec = {m: float(v) for s, e, sp, m, v in rows if s == step and sp == split}
                assert rec["acc"] == pytest.approx(acc, abs=1e-6)
                assert rec["loss"] == pytest.approx(loss, rel=1e-5)
    assert summary["final_test_acc"] == pytest.approx(float(series(rows, "test", "acc")[-1][2]))


def test_running_train_eval_has_no_train_row_at_step_zero(tmp_path):
    summary = train(make_cfg(max_epochs=2, train_eval="running", stop_after_grok=False), tmp_path)
    rows = read_rows(tmp_path / "metrics.csv")
    assert [s for s, e, _ in series(rows, "test", "acc")] == [0, 3, 6]
    assert [s for s, e, _ in series(rows, "train", "acc")] == [3, 6]
    assert summary["steps"] == 6


@pytest.mark.parametrize(
    "batch_size,drop_last,steps_per_epoch",
    [
        (16, True, 3),  # 60 // 16
        (16, False, 4),  # ceil(60 / 16)
        (7, True, 8),  # 60 // 7
        (7, False, 9),  # ceil(60 / 7)
        (15, True, 4),  # divides exactly: both the same
        (15, False, 4),
        (0, True, 1),  # full batch
        (0, False, 1),
        (100, True, 1),  # larger than the training set: full batch
    ],
)
def test_steps_per_epoch(tmp_path, batch_size, drop_last, steps_per_epoch):
    epochs = 2
    cfg = make_cfg(
        {"name": "sgd", "lr": 0.1},
        max_epochs=epochs,
        batch_size=batch_size,
        drop_last=drop_last,
        stop_after_grok=False,
    )
    summary = train(cfg, tmp_path)
    assert summary["steps_per_epoch"] == steps_per_epoch
    assert summary["steps"] == epochs * steps_per_epoch and summary["epochs"] == epochs
    rows = read_rows(tmp_path / "metrics.csv")
    assert [s for s, _, _ in series(rows, "test", "acc")] == [0, steps_per_epoch, 2 * steps_per_epoch]


def test_step_budget_ends_mid_epoch_with_a_final_evaluation(tmp_path):
    summary = train(make_cfg(max_steps=5, max_epochs=0, stop_after_grok=False), tmp_path)
    assert summary["steps"] == 5 and summary["epochs"] == 1  # 3 steps per epoch: epoch 1 done, 2 steps into 2
    assert summary["stop_reason"] == "max_steps"
    rows = read_rows(tmp_path / "metrics.csv")
    assert [(s, e) for s, e, _ in series(rows, "test", "acc")] == [(0, 0), (3, 1), (5, 1)]


def test_step_budget_min_with_epoch_budget(tmp_path):
    summary = train(make_cfg(max_steps=100, max_epochs=2, stop_after_grok=False), tmp_path)
    assert summary["steps"] == 6  # min(100, 2 × 3)
    assert summary["stop_reason"] == "max_epochs"


def test_evaluation_every_k_steps(tmp_path):
    train(make_cfg(max_steps=7, max_epochs=0, eval_unit="step", eval_every=2, stop_after_grok=False), tmp_path)
    rows = read_rows(tmp_path / "metrics.csv")
    assert [s for s, _, _ in series(rows, "test", "acc")] == [0, 2, 4, 6, 7]


def test_evaluation_every_k_epochs(tmp_path):
    train(make_cfg(max_epochs=5, eval_every=2, stop_after_grok=False), tmp_path)
    rows = read_rows(tmp_path / "metrics.csv")
    assert [e for _, e, _ in series(rows, "test", "acc")] == [0, 2, 4, 5]  # + the budget's end


# ---------------------------------------------------------------------------------------------------- resume


RESUME_OPTIMIZERS = [
    {"name": "egd", "lr": 0.1, "momentum": 0.9, "whiten": ["layers.0.weight"]},
    {"name": "adamw", "lr": 3e-3, "weight_decay": 0.1},
    {"name": "egd_adamw", "lr": 3e-3, "weight_decay": 0.1},
]


def _counting(calls):
    return lambda step, metrics: calls.append(step)


@pytest.mark.parametrize("optimizer", RESUME_OPTIMIZERS, ids=lambda o: o["name"])
def test_resume_at_an_epoch_boundary_is_bit_identical(tmp_path, optimizer):
    n = 3
    base = dict(batch_size=16, checkpoint_every=1, stop_after_grok=False)
    one_go, split = tmp_path / "a", tmp_path / "b"
    train(make_cfg(optimizer, max_epochs=2 * n, **base), one_go)
    first = train(make_cfg(optimizer, max_epochs=n, **base), split, resume=True)  # nothing to resume yet
    assert first["steps"] == 3 * n
    calls: list[int] = []
    second = train(make_cfg(optimizer, max_epochs=2 * n, **base), split, resume=True, on_eval=_counting(calls))
    assert calls == [12, 15, 18]  # it continued: only epochs 4..6 were trained and evaluated
    assert second["steps"] == 18 and second["epochs"] == 2 * n

    a, b = load_ckpt(one_go), load_ckpt(split)
    assert_same(a["model"], b["model"], "model")
    assert_same(a["optimizer"], b["optimizer"], "optimizer")
    assert len(a["optimizer"]["state"] if "state" in a["optimizer"] else a["optimizer"]["base"]["state"]) > 0
    assert read_rows(one_go / "metrics.csv") == read_rows(split / "metrics.csv")


def test_resume_comparison_is_sensitive_to_data_order(tmp_path):
    """The check above would notice a wrong data order: another shuffle seed gives other parameters."""
    opt = RESUME_OPTIMIZERS[0]
    train(make_cfg(opt, max_epochs=2, stop_after_grok=False), tmp_path / "a")
    train(make_cfg(opt, max_epochs=2, shuffle_seed=1, stop_after_grok=False), tmp_path / "b")
    wa, wb = load_ckpt(tmp_path / "a")["model"], load_ckpt(tmp_path / "b")["model"]
    assert not torch.equal(wa["layers.0.weight"], wb["layers.0.weight"])


@pytest.mark.parametrize("encoding", ["onehot", "index"])
@pytest.mark.parametrize("optimizer", RESUME_OPTIMIZERS[:2], ids=lambda o: o["name"])
def test_resume_mid_epoch_is_bit_identical(tmp_path, optimizer, encoding):
    base = dict(batch_size=16, stop_after_grok=False)
    one_go, split = tmp_path / "a", tmp_path / "b"
    task = {**MODULAR, "encoding": encoding}  # "index": the recipes' input (gather/scatter in the first layer)
    train(make_cfg(optimizer, task, max_epochs=6, **base), one_go)
    first = train(make_cfg(optimizer, task, max_steps=7, max_epochs=6, **base), split)
    assert (first["steps"], first["epochs"]) == (7, 2)  # one batch into epoch 3 (3 steps per epoch)
    assert load_ckpt(split)["loop"]["batch"] == 1
    calls: list[int] = []
    train(make_cfg(optimizer, task, max_epochs=6, **base), split, resume=True, on_eval=_counting(calls))
    assert calls == [9, 12, 15, 18]

    a, b = load_ckpt(one_go), load_ckpt(split)
    assert_same(a["model"], b["model"], "model")
    assert_same(a["optimizer"], b["optimizer"], "optimizer")
    rows_a, rows_b = read_rows(one_go / "metrics.csv"), read_rows(split / "metrics.csv")
    # the split run has one extra evaluation, where its first budget ended (step 7); otherwise identical
    extra = [r for r in rows_b if r[0] == 7]
    assert sorted((sp, m) for _, _, sp, m, _ in extra) == [
        ("test", "acc"),
        ("test", "loss"),
        ("train", "acc"),
        ("train", "loss"),
    ]
    assert [r for r in rows_b if r[0] != 7] == rows_a


def test_resume_with_changed_math_is_refused(tmp_path):
    train(make_cfg(max_epochs=1), tmp_path)
    changed = make_cfg({"name": "egd", "lr": 0.25}, max_epochs=2)
    with pytest.raises(ConfigError) as e:
        train(changed, tmp_path, resume=True)
    assert "optimizer" in str(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(ConfigError, match=r"train\.seed"):
        train(make_cfg(max_epochs=2, seed=1), tmp_path, resume=True)
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        train(make_cfg(max_epochs=2, batch_size=8), tmp_path, resume=True)
    # budget and bookkeeping may change
    assert train(make_cfg(max_epochs=2, checkpoint_seconds=5.0), tmp_path, resume=True)["epochs"] == 2


def test_resume_refusal_names_the_changed_field(tmp_path):
    train(make_cfg(max_epochs=1), tmp_path)
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        train(make_cfg({"name": "egd", "lr": 0.25}, max_epochs=2), tmp_path, resume=True)


def test_resuming_a_finished_budget_run_trains_nothing(tmp_path):
    train(make_cfg(max_epochs=2, stop_after_grok=False), tmp_path)
    before = load_ckpt(tmp_path)
    rows = read_rows(tmp_path / "metrics.csv")
    calls: list[int] = []
    s = train(make_cfg(max_epochs=2, stop_after_grok=False), tmp_path, resume=True, on_eval=_counting(calls))
    assert calls == [] and s["steps"] == 6 and s["status"] == "budget"
    assert_same(before["model"], load_ckpt(tmp_path)["model"])
    assert read_rows(tmp_path / "metrics.csv") == rows


def test_resuming_a_run_that_stopped_after_grokking_trains_nothing(tmp_path):
    cfg = parity_cfg(max_epochs=50)
    first = train(cfg, tmp_path)
    assert first["status"] == "grokked" and first["epochs"] < 50
    before = load_ckpt(tmp_path)["model"]
    again = train(cfg, tmp_path, resume=True)
    assert again["status"] == "grokked"
    assert again["steps"] == first["steps"]
    assert_same(before, load_ckpt(tmp_path)["model"])


# ----------------------------------------------------------------------------------------- stop after grok


def _first(values, threshold):
    return next(e for _, e, v in values if v >= threshold)


def test_stop_after_grok_with_patience(tmp_path):
    budget = 50
    runs = {}
    for k in (0, 2):
        summary = train(parity_cfg(max_epochs=budget, patience=k), tmp_path / f"k{k}")
        runs[k] = (summary, read_rows(tmp_path / f"k{k}" / "metrics.csv"))
    s0, rows0 = runs[0]
    g = _first(series(rows0, "test", "acc"), 0.95)  # first evaluation at or above grok_threshold
    assert 0 < g < budget - 5
    for k, (summary, rows) in runs.items():
        assert summary["status"] == "grokked" and summary["grokked"] is True
        assert summary["stop_reason"] == "grokked"
        assert summary["grok"]["epoch"] == g
        assert summary["epochs"] == g + k  # k more evaluations (one per epoch) after the grokking one
        assert len(series(rows, "test", "acc")) == g + 1 + k
        m = _first(series(rows, "train", "acc"), 0.99)
        assert summary["memorized"]["epoch"] == m
        assert summary["delay_epochs"] == g - m
    assert runs[2][1][: len(rows0)] == rows0  # same trajectory, just longer


def test_grokked_at_the_initial_evaluation_trains_nothing(tmp_path):
    summary = train(parity_cfg(max_epochs=5, grok_threshold=0.01), tmp_path)
    assert summary["status"] == "grokked" and summary["steps"] == 0
    assert summary["grok"]["step"] == 0
    assert len(series(read_rows(tmp_path / "metrics.csv"), "test", "acc")) == 1


def test_grokked_without_stopping_runs_the_budget(tmp_path):
    summary = train(parity_cfg(max_epochs=10, stop_after_grok=False), tmp_path)
    assert summary["epochs"] == 10 and summary["grokked"] is True and summary["status"] == "grokked"
    assert summary["stop_reason"] == "max_epochs"  # the loop ran out of budget, after grokking


# ------------------------------------------------------------------------------------------------ switch-off


def test_switch_off_at_step_zero_turns_egd_into_sgd(tmp_path):
    lr = 0.05
    common = dict(max_epochs=4, stop_after_grok=False)
    on = train(parity_cfg({"name": "egd", "lr": lr}, **common), tmp_path / "egd")
    off = train(
        parity_cfg({"name": "egd", "lr": lr}, switch_off_threshold=0.05, switch_off_split="test", **common),
        tmp_path / "off",
    )
    sgd = train(parity_cfg({"name": "sgd", "lr": lr}, **common), tmp_path / "sgd")
    assert on["switched_off"] is None and sgd["switched_off"] is None
    assert off["switched_off"] == {"step": 0, "epoch": 0, "seconds": off["switched_off"]["seconds"]}
    groups = load_ckpt(tmp_path / "off")["optimizer"]["param_groups"]
    assert groups and all(g["whiten"] is False for g in groups)
    assert any(g["whiten"] is True for g in load_ckpt(tmp_path / "egd")["optimizer"]["param_groups"])
    w_off = load_ckpt(tmp_path / "off")["model"]
    w_sgd = load_ckpt(tmp_path / "sgd")["model"]
    w_on = load_ckpt(tmp_path / "egd")["model"]
    for k in w_sgd:
        torch.testing.assert_close(w_off[k], w_sgd[k], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(w_on["layers.0.weight"], w_sgd["layers.0.weight"], atol=1e-3)


def test_switch_off_on_the_validation_split(tmp_path):
    task = {**PARITY, "val_frac": 0.25}
    cfg = make_cfg(
        {"name": "egd", "lr": 0.05},
        task=task,
        loss="mse",
        hidden=16,
        max_epochs=2,
        stop_after_grok=False,
        switch_off_threshold=0.05,
        switch_off_split="val",
    )
    summary = train(cfg, tmp_path)
    assert summary["switched_off"]["step"] == 0
    rows = read_rows(tmp_path / "metrics.csv")
    assert len(series(rows, "val", "acc")) == 3
    assert summary["steps_per_epoch"] == 48 // 16  # 64 − int(64 · 0.25) training samples


def test_switch_off_on_val_without_a_validation_split_is_a_config_error(tmp_path):
    cfg = parity_cfg(switch_off_threshold=0.5, switch_off_split="val")
    with pytest.raises(ConfigError, match="switch_off_split"):
        train(cfg, tmp_path)


def test_switch_off_mid_run(tmp_path):
    cfg = parity_cfg(max_epochs=6, stop_after_grok=False, switch_off_threshold=0.85, switch_off_split="test")
    summary = train(cfg, tmp_path)
    rows = read_rows(tmp_path / "metrics.csv")
    e = _first(series(rows, "test", "acc"), 0.85)
    assert e > 0
    assert summary["switched_off"]["epoch"] == e
    assert all(g["whiten"] is False for g in load_ckpt(tmp_path)["optimizer"]["param_groups"])


# ------------------------------------------------------------------------------------------------ non-finite


def test_nonfinite_loss_stops_with_the_last_good_state(tmp_path):
    sgd = {"name": "sgd", "lr": 1e30}
    with pytest.raises(RunStopped) as e:
        train(make_cfg(sgd, max_epochs=5), tmp_path / "nan")
    s = e.value.summary
    assert s["status"] == "nonfinite" and s["steps"] == 1  # step 1 blew the weights up; step 2's loss is inf
    assert s["stop_reason"] == "nonfinite"
    assert json.loads((tmp_path / "nan" / "summary.json").read_text())["status"] == "nonfinite"
    ck = load_ckpt(tmp_path / "nan")
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    # the saved state is the one after that single good step
    train(make_cfg(sgd, max_steps=1, max_epochs=5), tmp_path / "one")
    assert_same(ck["model"], load_ckpt(tmp_path / "one")["model"])


def test_nonfinite_at_the_first_step_keeps_the_initial_weights(tmp_path):
    cfg = make_cfg({"name": "sgd", "lr": 0.1}, max_epochs=2)
    cfg["model"]["init_scale"] = 1e30
    with pytest.raises(RunStopped) as e:
        train(cfg, tmp_path)
    assert e.value.summary["steps"] == 0
    torch.manual_seed(0)
    initial = MLP(2 * P, 32, P, init_scale=1e30).state_dict()
    assert_same(load_ckpt(tmp_path)["model"], initial)


def test_nonfinite_skip_completes_the_run_when_the_skips_are_allowed(tmp_path):
    sgd = {"name": "sgd", "lr": 1e30}
    summary = train(make_cfg(sgd, max_epochs=5, nonfinite="skip", max_skip_fraction=1.0), tmp_path / "skip")
    assert summary["status"] == "budget" and summary["steps"] == 15
    # after the first step every loss is inf, every later step is skipped and the weights stay put
    assert summary["skipped_steps"] == 14
    train(make_cfg(sgd, max_steps=1, max_epochs=5), tmp_path / "one")
    assert_same(load_ckpt(tmp_path / "skip")["model"], load_ckpt(tmp_path / "one")["model"])


def test_nonfinite_skip_fails_the_run_once_too_many_steps_are_skipped(tmp_path):
    # 3 steps per epoch x 5 epochs = a budget of 15 steps; the default max_skip_fraction 0.1 allows 1.5 of them.
    # Step 1 blows the weights up and steps 2, 3, ... are skipped: after step 3, 2 skipped > 1.5, so the run
    # would end with more than 10% skipped whatever follows; it stops there, status nonfinite.
    sgd = {"name": "sgd", "lr": 1e30}
    with pytest.raises(RunStopped, match=r"skipped 2 of 3 steps .* train.max_skip_fraction = 0.1") as e:
        train(make_cfg(sgd, max_epochs=5, nonfinite="skip"), tmp_path / "skip")
    s = e.value.summary
    assert (s["status"], s["stop_reason"], s["steps"], s["skipped_steps"]) == ("nonfinite", "too_many_skipped", 3, 2)
    assert json.loads((tmp_path / "skip" / "summary.json").read_text())["skipped_steps"] == 2
    # 0.2 allows 3 skipped steps of 15: the 4th (step 5) ends the run
    with pytest.raises(RunStopped) as e:
        train(make_cfg(sgd, max_epochs=5, nonfinite="skip", max_skip_fraction=0.2), tmp_path / "skip2")
    assert (e.value.summary["steps"], e.value.summary["skipped_steps"]) == (5, 4)


def test_nonfinite_skip_checks_the_fraction_at_the_end_of_a_run_cut_short(tmp_path):
    # every step is skipped (the initial outputs overflow); max_seconds ends the run after its first step, when
    # 1 skipped step is below 0.1 x 15 = 1.5 of the budget but 1 of the 1 step taken: more than 0.1 of them
    cfg = make_cfg({"name": "sgd", "lr": 0.1}, max_epochs=5, nonfinite="skip", max_seconds=1e-9)
    cfg["model"]["init_scale"] = 1e30
    with pytest.raises(RunStopped, match="skipped 1 of 1 steps") as e:
        train(cfg, tmp_path)
    assert (e.value.summary["status"], e.value.summary["stop_reason"]) == ("nonfinite", "too_many_skipped")


# ------------------------------------------------------------------------- early stops: wall clock, at chance


def test_max_seconds_stops_censored_and_resumes(tmp_path):
    # a limit every step exceeds: the loop's seconds start at 0 and pass 1 ns during the first step
    cfg = make_cfg(max_epochs=3, max_seconds=1e-9, stop_after_grok=False)
    s = train(cfg, tmp_path)
    assert s["steps"] == 1 and s["epochs"] == 0
    assert s["status"] == "budget" and s["stop_reason"] == "max_seconds"
    assert s["grokked"] is False and s["budget_exhausted"] is True  # censored
    rows = read_rows(tmp_path / "metrics.csv")
    assert [st for st, _, _ in series(rows, "test", "acc")] == [0, 1]  # the last step is evaluated
    assert json.loads((tmp_path / "summary.json").read_text())["stop_reason"] == "max_seconds"
    # resuming with the same limit trains nothing; without one, the run continues to its epoch budget
    calls: list[int] = []
    again = train(cfg, tmp_path, resume=True, on_eval=_counting(calls))
    assert calls == [] and again["steps"] == 1 and again["stop_reason"] == "max_seconds"
    done = train(make_cfg(max_epochs=3, stop_after_grok=False), tmp_path, resume=True)
    assert done["steps"] == 9 and done["status"] == "budget" and done["stop_reason"] == "max_epochs"
    rows = read_rows(tmp_path / "metrics.csv")
    assert [st for st, _, _ in series(rows, "test", "acc")] == [0, 1, 3, 6, 9]  # 3 steps per epoch


def _chance_stop(train_accs, test_accs, memorize, threshold, patience):
    """By hand: the index of the evaluation at which the at-chance rule stops, or None.  From the first
    evaluation with train accuracy >= memorize on, count consecutive ones with test accuracy < threshold."""
    memorized, count = False, 0
    for i, (tr, te) in enumerate(zip(train_accs, test_accs, strict=True)):
        memorized = memorized or tr >= memorize
        if memorized:
            count = count + 1 if te < threshold else 0
            if count >= patience:
                return i
    return None


def _accs(rows):
    return [v for _, _, v in series(rows, "train", "acc")], [v for _, _, v in series(rows, "test", "acc")]


def test_at_chance_stop_with_the_default_threshold(tmp_path):
    # mod-add p = 11 memorizes (train accuracy >= 0.9) while test accuracy stays low; chance is 1/11, the
    # default threshold twice that
    common = dict(max_epochs=15, train_eval="full", stop_after_grok=False, memorize_threshold=0.9)
    train(make_cfg(**common), tmp_path / "ref")
    ref = read_rows(tmp_path / "ref" / "metrics.csv")
    expected = _chance_stop(*_accs(ref), 0.9, 2 / P, 3)
    assert expected is not None and expected < 15
    s = train(make_cfg(chance_patience=3, **common), tmp_path / "run")
    assert s["epochs"] == expected  # evaluation i is at epoch i
    assert s["status"] == "budget" and s["stop_reason"] == "at_chance" and s["grokked"] is False
    rows = read_rows(tmp_path / "run" / "metrics.csv")
    assert rows == ref[: len(rows)]  # the same trajectory, stopped early
    # resuming with the same patience trains nothing; with the rule off it runs to the budget
    calls: list[int] = []
    again = train(make_cfg(chance_patience=3, **common), tmp_path / "run", resume=True, on_eval=_counting(calls))
    assert calls == [] and again["stop_reason"] == "at_chance" and again["epochs"] == expected
    done = train(make_cfg(**common), tmp_path / "run", resume=True)
    assert done["epochs"] == 15 and done["stop_reason"] == "max_epochs"
    assert read_rows(tmp_path / "run" / "metrics.csv") == ref


def test_at_chance_counts_consecutive_evaluations_and_resets(tmp_path):
    # parity k = 1: test accuracy climbs to 1 within a few epochs; memorized (>= 0.7) at the first evaluations
    common = dict(max_epochs=8, train_eval="full", stop_after_grok=False, memorize_threshold=0.7)
    train(parity_cfg(**common), tmp_path / "ref")
    ref = read_rows(tmp_path / "ref" / "metrics.csv")
    train_accs, test_accs = _accs(ref)
    cases = [(0.9, 3), (0.8, 3), (0.9, 4), (0.7, 1)]
    outcomes = []
    for i, (threshold, patience) in enumerate(cases):
        expected = _chance_stop(train_accs, test_accs, 0.7, threshold, patience)
        outcomes.append(expected)
        s = train(parity_cfg(chance_patience=patience, chance_threshold=threshold, **common), tmp_path / str(i))
        if expected is None:
            assert s["epochs"] == 8 and s["stop_reason"] == "max_epochs"
        else:
            assert s["epochs"] == expected and s["stop_reason"] == "at_chance"
            assert s["status"] == ("grokked" if s["grokked"] else "budget")
    assert any(e is not None for e in outcomes) and any(e is None for e in outcomes)  # both kinds were tested


def test_chance_threshold_by_hand():
    from types import SimpleNamespace

    from egalitarian.train import chance_threshold

    tc = {"chance_threshold": 0.0}
    assert chance_threshold(tc, SimpleNamespace(target="class", num_outputs=97)) == 2 / 97
    assert chance_threshold(tc, SimpleNamespace(target="class", num_outputs=3)) == 2 / 3
    assert chance_threshold(tc, SimpleNamespace(target="class", num_outputs=2)) == 0.6  # 2 × 1/2 would be 1
    assert chance_threshold(tc, SimpleNamespace(target="sign", num_outputs=1)) == 0.6
    assert chance_threshold({"chance_threshold": 0.3}, SimpleNamespace(target="class", num_outputs=97)) == 0.3


# ------------------------------------------------------------------------------------------------- denormals

DENORMAL = 1e-40  # below float32's smallest normal number, 1.18e-38


def _denormal_times_one() -> float:
    return float(torch.tensor(DENORMAL, dtype=torch.float32) * 1)


def test_denormals_are_flushed_during_a_run_and_the_setting_restored(tmp_path):
    if not torch.set_flush_denormal(False):  # off before the run (and: does this CPU support flushing?)
        pytest.skip("this CPU cannot flush denormals")
    assert _denormal_times_one() != 0.0
    seen: list[float] = []
    s = train(make_cfg(max_epochs=2, stop_after_grok=False), tmp_path,
              on_eval=lambda step, m: seen.append(_denormal_times_one()))
    assert s["steps"] == 6 and math.isfinite(s["final_test_loss"])  # it still trains
    assert seen == [0.0, 0.0, 0.0]  # flushed inside the run, at every evaluation
    assert _denormal_times_one() != 0.0  # restored: off again
    # a caller who flushes already keeps flushing
    try:
        torch.set_flush_denormal(True)
        train(make_cfg(max_epochs=1, stop_after_grok=False))
        assert _denormal_times_one() == 0.0
    finally:
        torch.set_flush_denormal(False)


def test_denormals_setting_is_restored_when_the_run_fails(tmp_path):
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    with pytest.raises(RunStopped):
        train(make_cfg({"name": "sgd", "lr": 1e30}, max_epochs=2), tmp_path)
    assert _denormal_times_one() != 0.0


# ----------------------------------------------------------------------------------------- determinism, device


def test_same_config_twice_is_bitwise_identical(tmp_path):
    cfg = make_cfg({"name": "egd", "lr": 0.3, "momentum": 0.5}, max_epochs=3, stop_after_grok=False)
    s1 = train(copy.deepcopy(cfg), tmp_path / "1")
    s2 = train(copy.deepcopy(cfg), tmp_path / "2")
    assert (tmp_path / "1" / "metrics.csv").read_bytes() == (tmp_path / "2" / "metrics.csv").read_bytes()
    timeless = lambda s: {k: v for k, v in s.items() if "seconds" not in k and k not in ("memorized", "grok")}
    assert timeless(s1) == timeless(s2)
    assert_same(load_ckpt(tmp_path / "1")["model"], load_ckpt(tmp_path / "2")["model"])


def test_run_without_a_directory_returns_the_summary():
    summary = train(make_cfg(max_epochs=1, stop_after_grok=False))
    assert summary["steps"] == 3 and math.isfinite(summary["final_test_loss"])


def test_pick_device():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: 'auto' picks it")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        pytest.skip("MPS present")
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="train.device"):
        pick_device("cuda")
    with pytest.raises(ConfigError, match="train.device"):
        pick_device("cuda:1")
    with pytest.raises(ConfigError, match="'tpu9'"):
        pick_device("tpu9")


def test_unavailable_device_in_a_config(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ConfigError, match="train.device"):
        train(make_cfg(device="cuda"), tmp_path)


# ------------------------------------------------------------------------------------ clipping and autocast


def _full_batch_gradient(cfg):
    """The run's initial parameters and their gradient over the whole training split, computed here."""
    from egalitarian.build import build_run
    from egalitarian.config import resolve
    from egalitarian.methods import OPTIMIZERS

    run = build_run(resolve(cfg, OPTIMIZERS))
    names = [n for n, _ in run.model.named_parameters()]
    loss = torch.nn.functional.cross_entropy(run.model(run.data.x_train), run.data.y_train)
    grads = torch.autograd.grad(loss, list(run.model.parameters()))
    p0 = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    return p0, dict(zip(names, grads, strict=True))


def test_clip_grad_norm_by_hand(tmp_path):
    """One full-batch SGD step: g is scaled by c / (‖g‖ + 1e-6) (torch's clip_grad_norm_) when ‖g‖ > c."""
    c, lr = 0.01, 0.5
    cfg = make_cfg({"name": "sgd", "lr": lr}, batch_size=0, max_steps=1, stop_after_grok=False, clip_grad_norm=c)
    p0, g = _full_batch_gradient(cfg)
    norm = math.sqrt(sum(float(v.double().pow(2).sum()) for v in g.values()))  # the global L2 norm
    assert norm > 10 * c  # the clip is active
    train(cfg, tmp_path / "clipped")
    after = load_ckpt(tmp_path / "clipped")["model"]
    for k in p0:
        torch.testing.assert_close(after[k], p0[k] - lr * (c / (norm + 1e-6)) * g[k], rtol=0, atol=1e-7)
    # a bound above the norm changes nothing, bit for bit (and the field is in the resolved config)
    train({**cfg, "train": {**cfg["train"], "clip_grad_norm": 1e6}}, tmp_path / "loose")
    train({**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "clip_grad_norm"}}, tmp_path / "off")
    assert_same(load_ckpt(tmp_path / "loose")["model"], load_ckpt(tmp_path / "off")["model"])
    assert json.loads((tmp_path / "loose" / "config.json").read_text())["config"]["train"]["clip_grad_norm"] == 1e6
    assert "clip_grad_norm" not in json.loads((tmp_path / "off" / "config.json").read_text())["config"]["train"]


def test_clipping_leaves_the_whitened_step_and_scales_the_rest(tmp_path):
    """EGD without momentum: the whitened W1 moves by lr·U Vᵀ either way; the biases' SGD step is clipped."""
    egd = {"name": "egd", "lr": 0.1, "whiten": ["layers.0.weight"], "weight_decay": 0.0}
    base = make_cfg(egd, batch_size=0, max_steps=1, stop_after_grok=False)
    train(base, tmp_path / "a")
    train({**base, "train": {**base["train"], "clip_grad_norm": 1e-3}}, tmp_path / "b")
    a, b = load_ckpt(tmp_path / "a")["model"], load_ckpt(tmp_path / "b")["model"]
    torch.testing.assert_close(a["layers.0.weight"], b["layers.0.weight"], rtol=0, atol=1e-6)
    p0, _ = _full_batch_gradient(base)
    bias = next(k for k in p0 if k.endswith("bias"))
    assert (b[bias] - p0[bias]).norm() < 0.1 * (a[bias] - p0[bias]).norm()


def test_clip_grad_norm_must_be_a_finite_number_at_least_zero(tmp_path):
    for value in (-1.0, float("inf"), "big"):
        with pytest.raises(ConfigError, match=r"train\.clip_grad_norm"):
            train(make_cfg(clip_grad_norm=value), tmp_path)


def test_bf16_autocast_trains_in_bfloat16_with_float32_parameters(tmp_path):
    opt = {"name": "adamw", "lr": 3e-2, "weight_decay": 0.0}
    cfg = make_cfg(opt, max_epochs=8, stop_after_grok=False, train_eval="full", autocast="bf16")
    train(cfg, tmp_path / "bf16")
    loss = [v for _, _, v in series(read_rows(tmp_path / "bf16" / "metrics.csv"), "train", "loss")]
    assert all(b < a for a, b in zip(loss, loss[1:], strict=False)) and loss[-1] < 0.6 * loss[0]  # it learns
    ck = load_ckpt(tmp_path / "bf16")
    assert all(v.dtype == torch.float32 for v in ck["model"].values())
    assert all(t.dtype in (torch.float32, torch.int64) or t.ndim == 0 for s in ck["optimizer"]["state"].values()
               for t in s.values() if isinstance(t, torch.Tensor))
    # bfloat16 arithmetic: the same run in float32 measures other losses
    train({**cfg, "train": {**cfg["train"], "autocast": "off"}}, tmp_path / "fp32")
    fp32 = [v for _, _, v in series(read_rows(tmp_path / "fp32" / "metrics.csv"), "train", "loss")]
    assert fp32 != loss and fp32[-1] == pytest.approx(loss[-1], rel=0.05)  # as far as float32 gets


def test_autocast_off_is_the_run_without_the_field(tmp_path):
    cfg = make_cfg({"name": "egd", "lr": 0.3, "momentum": 0.5}, max_epochs=3, stop_after_grok=False)
    train(cfg, tmp_path / "before")
    train({**cfg, "train": {**cfg["train"], "autocast": "off"}}, tmp_path / "off")
    assert (tmp_path / "before" / "metrics.csv").read_bytes() == (tmp_path / "off" / "metrics.csv").read_bytes()
    assert_same(load_ckpt(tmp_path / "before")["model"], load_ckpt(tmp_path / "off")["model"])
    config = lambda d: json.loads((d / "config.json").read_text())["config"]
    assert config(tmp_path / "before") == config(tmp_path / "off")  # "off" is left out: the same run id


def test_autocast_choices_and_devices():
    from egalitarian.train import autocast

    with pytest.raises(ConfigError, match=r"train\.autocast = 'fp16': must be one of off, bf16"):
        train(make_cfg(autocast="fp16"))
    with pytest.raises(ConfigError, match=r"train\.autocast = 'bf16': bfloat16 autocast runs on cpu and cuda"):
        autocast("bf16", torch.device("mps"))
    with autocast("bf16", torch.device("cpu"))():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16

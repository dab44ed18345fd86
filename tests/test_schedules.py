"""Learning-rate schedules: factors by hand, the [scheduler] config section, every optimizer's groups scaled,
the recipe's warm-up tables, and a bit-identical resume in the middle of a warm-up."""

from __future__ import annotations

import math

import pytest
import torch
from test_train import assert_same, load_ckpt, make_cfg, read_rows

from egalitarian.build import accepted_fields, build_run
from egalitarian.cli import main
from egalitarian.config import load_config, resolve
from egalitarian.errors import ConfigError
from egalitarian.methods import OPTIMIZERS, build_optimizer
from egalitarian.models import MLP
from egalitarian.schedules import lambda_lr, lr_factor, resolve_scheduler
from egalitarian.sweep import expand
from egalitarian.train import train

# ------------------------------------------------------------------------------------------ factors by hand


def _factors(section: dict, budget: float, n: int) -> list[float]:
    from egalitarian.schedules import Schedule

    f = Schedule(resolve_scheduler(section), budget)
    return [f(t) for t in range(n)]


def test_linear_warmup_by_hand():
    # W = 4: step t (from 0) has t/4 until t = 4, then 1 (the first step has lr 0, as Grokfast's LambdaLR)
    assert _factors({"name": "linear_warmup", "warmup_steps": 4}, 100, 7) == [0, 0.25, 0.5, 0.75, 1, 1, 1]
    # Grokfast's own lambda, `1 if update > 10 else update / 10`, at every step to 30
    grokfast = [1 if u > 10 else u / 10 for u in range(30)]
    assert _factors({"name": "linear_warmup", "warmup_steps": 10}, 100, 30) == grokfast


def test_constant_by_hand():
    assert _factors({"name": "constant"}, 100, 4) == [1, 1, 1, 1]
    assert _factors({"name": "constant", "warmup_steps": 2}, 100, 4) == [0, 0.5, 1, 1]


def test_cosine_by_hand():
    # W = 2, T = 6, m = 0.1: warm-up 0, 1/2; then s = t - 2 over T - W = 4 steps: m + (1 - m)(1 + cos(pi s/4))/2
    got = _factors({"name": "cosine", "warmup_steps": 2, "total_steps": 6, "min_factor": 0.1}, 1000, 9)
    half_sqrt2 = math.sqrt(2) / 2
    want = [0.0, 0.5, 1.0, 0.1 + 0.45 * (1 + half_sqrt2), 0.55, 0.1 + 0.45 * (1 - half_sqrt2), 0.1, 0.1, 0.1]
    assert got == pytest.approx(want, abs=1e-15)
    # total_steps = 0: the run's budget (8 steps): no warm-up, s/8, cos(pi/2) = 0 at t = 4: factor 1/2
    got = _factors({"name": "cosine"}, 8, 10)
    assert got[0] == 1 and got[4] == pytest.approx(0.5, abs=1e-15) and got[8] == 0 and got[9] == 0


def test_step_by_hand():
    # W = 1, step_size 2, gamma 0.5: 0; then 1, 1, 0.5, 0.5, 0.25 (counted from the end of the warm-up)
    got = _factors({"name": "step", "warmup_steps": 1, "step_size": 2, "gamma": 0.5}, 100, 6)
    assert got == [0, 1, 1, 0.5, 0.5, 0.25]
    assert _factors({"name": "step", "step_size": 3}, 100, 7) == [1, 1, 1, 0.1, 0.1, 0.1, pytest.approx(0.01)]


def test_lr_factor_is_the_schedule():
    assert lr_factor(3, "linear_warmup", warmup_steps=6) == 0.5
    assert lr_factor(5, "cosine", total_steps=10) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------- the config


def _base(**extra) -> dict:
    return {"task": {"name": "modular", "p": 7}, "model": {"name": "mlp", "hidden": 8},
            "optimizer": {"name": "sgd", "lr": 0.1}, **extra}


def test_the_section_is_resolved_only_when_present():
    assert "scheduler" not in resolve(_base())
    out = resolve(_base(scheduler={"name": "cosine"}))
    assert out["scheduler"] == {"name": "cosine", "warmup_steps": 0, "total_steps": 0, "min_factor": 0.0}
    assert resolve(_base(scheduler={"name": "step", "step_size": 5}))["scheduler"] == {
        "name": "step", "warmup_steps": 0, "step_size": 5, "gamma": 0.1}
    assert resolve(_base(scheduler={"name": "linear_warmup", "warmup_steps": 3}))["scheduler"] == {
        "name": "linear_warmup", "warmup_steps": 3}
    assert accepted_fields("scheduler", "cosine") == ["name", "warmup_steps", "total_steps", "min_factor"]


@pytest.mark.parametrize(
    ("section", "fragments"),
    [
        ({}, ["scheduler.name is missing", "constant, linear_warmup, cosine, step"]),
        ({"name": "exp"}, ["scheduler.name = 'exp': unknown schedule"]),
        ({"name": "cosine", "gamma": 0.5}, ["scheduler.gamma = 0.5: not a field of schedule 'cosine'",
                                           "allowed: name, warmup_steps, total_steps, min_factor"]),
        ({"name": "constant", "warmup_steps": 2.5}, ["scheduler.warmup_steps = 2.5: must be of type int"]),
        ({"name": "constant", "warmup_steps": True}, ["scheduler.warmup_steps = True: must be of type int"]),
        ({"name": "constant", "warmup_steps": -1}, ["scheduler.warmup_steps = -1: must be >= 0"]),
        ({"name": "linear_warmup"}, ["scheduler.warmup_steps = 0: must be >= 1 for linear_warmup"]),
        ({"name": "cosine", "min_factor": 1.5}, ["scheduler.min_factor = 1.5: must be in [0, 1]"]),
        ({"name": "cosine", "min_factor": "low"}, ["scheduler.min_factor = 'low': must be of type float"]),
        ({"name": "cosine", "total_steps": -3}, ["scheduler.total_steps = -3: must be >= 0"]),
        ({"name": "cosine", "warmup_steps": 5, "total_steps": 5}, ["scheduler.total_steps = 5: must exceed"]),
        ({"name": "step"}, ["scheduler.step_size is missing: schedule 'step' needs step_size"]),
        ({"name": "step", "step_size": 0}, ["scheduler.step_size = 0: must be >= 1"]),
        ({"name": "step", "step_size": 2, "gamma": 0.0}, ["scheduler.gamma = 0.0: must be in (0, 1]"]),
        ({"name": "step", "step_size": 2, "gamma": 2}, ["scheduler.gamma = 2: must be in (0, 1]"]),
    ],
)
def test_bad_fields_name_the_field(section, fragments):
    with pytest.raises(ConfigError) as e:
        resolve(_base(scheduler=section))
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


def test_a_section_that_is_not_a_table():
    with pytest.raises(ConfigError, match="scheduler = 'cosine': must be a table"):
        resolve(_base(scheduler="cosine"))


def test_a_method_table_carries_its_schedule_and_scheduler_fields_win():
    cfg = _base(methods={"warm": {"name": "sgd", "lr": 0.1, "scheduler": {"name": "linear_warmup",
                                                                         "warmup_steps": 10}},
                         "plain": {"name": "sgd", "lr": 0.1}})
    out = resolve({**cfg, "method": "warm"})
    assert out["scheduler"] == {"name": "linear_warmup", "warmup_steps": 10}
    assert out["optimizer"] == {"name": "sgd", "lr": 0.1}
    assert "scheduler" not in resolve({**cfg, "method": "plain"})
    out = resolve({**cfg, "method": "warm", "scheduler": {"warmup_steps": 3}})
    assert out["scheduler"] == {"name": "linear_warmup", "warmup_steps": 3}
    bad = _base(methods={"w": {"name": "sgd", "scheduler": 10}}, method="w")
    with pytest.raises(ConfigError, match="methods.w.scheduler = 10"):
        resolve(bad)


def test_the_grokfast_recipe_has_warmup_tables_and_its_other_tables_are_unchanged():
    recipe = load_config("transformer-modmult-p97")
    for method in ("adam", "egd_adam", "egd_rsvd36_adam", "grokfast"):
        plain = resolve({**recipe, "method": method}, OPTIMIZERS)
        warm = resolve({**recipe, "method": f"{method}_warmup"}, OPTIMIZERS)
        assert "scheduler" not in plain
        assert warm["scheduler"] == {"name": "linear_warmup", "warmup_steps": 10}
        assert warm["optimizer"] == plain["optimizer"]  # the same hyperparameters, plus the warm-up
        del warm["scheduler"]
        assert {**warm, "name": plain["name"]} == plain


def test_sweeps_accept_scheduler_fields_and_name_wrong_ones():
    runs = expand(_base(scheduler={"name": "cosine"}), {"scheduler.warmup_steps": [0, 5]})
    assert [r.config["scheduler"]["warmup_steps"] for r in runs] == [0, 5] and runs[0].id != runs[1].id
    with pytest.raises(ConfigError, match="scheduler.gamma = 0.5: not a field of schedule 'cosine'"):
        expand(_base(scheduler={"name": "cosine"}), {"scheduler.gamma": [0.5]})


def test_list_fields_shows_the_scheduler(capsys):
    assert main(["list", "fields"]) == 0
    out = capsys.readouterr().out
    block = out.split("[scheduler]", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    rows = {ln.split()[0]: ln.split()[1] for ln in block if ln.startswith("  ") and ln[2] != " "}
    assert rows == {"name": "required", "warmup_steps": "0", "total_steps": "0", "min_factor": "0.0",
                    "step_size": "required", "gamma": "0.1"}


# ------------------------------------------------------------------------------- every optimizer's groups


def _model() -> MLP:
    torch.manual_seed(0)
    return MLP(in_dim=6, out_dim=3, hidden=8)


@pytest.mark.parametrize("name", ["sgd", "adamw", "egd", "egd_adam", "grokfast", "muon", "perp_adamw"])
def test_every_param_group_is_scaled_from_its_own_lr(name):
    model = _model()
    opt = build_optimizer(list(model.named_parameters()), name)
    base = [g["lr"] for g in opt.param_groups]
    if name == "muon":  # MuonWithAdamW: Muon groups at lr, AdamW groups at adamw_lr, both scheduled
        assert {g["use_muon"] for g in opt.param_groups} == {True, False}
        assert sorted(set(base)) == [OPTIMIZERS["muon"].defaults["adamw_lr"], OPTIMIZERS["muon"].defaults["lr"]]
    sched = lambda_lr(opt, {"name": "linear_warmup", "warmup_steps": 4}, 100)
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    by_hand = [0, 0.25, 0.5, 0.75, 1, 1]
    for t, factor in enumerate(by_hand):
        assert [g["lr"] for g in opt.param_groups] == [b * factor for b in base], t
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_an_lr_zero_first_step_leaves_sgd_parameters_unchanged_and_the_second_is_a_quarter(tmp_path):
    """In a run: step 0 of a 4-step warm-up has lr 0, step 1 has lr/4 (full batch SGD, checked by hand)."""
    cfg = make_cfg({"name": "sgd", "lr": 0.5}, batch_size=0, max_steps=1, stop_after_grok=False)
    cfg["scheduler"] = {"name": "linear_warmup", "warmup_steps": 4}
    train(cfg, tmp_path / "one")
    init = build_run(resolve(cfg, OPTIMIZERS))
    p0 = {k: v.detach().clone() for k, v in init.model.state_dict().items()}
    assert_same(load_ckpt(tmp_path / "one")["model"], p0)
    # the gradient at p0 over the whole training split, by hand
    loss = torch.nn.functional.cross_entropy(init.model(init.data.x_train), init.data.y_train)
    grads = dict(zip([n for n, _ in init.model.named_parameters()],
                     torch.autograd.grad(loss, list(init.model.parameters())), strict=True))
    train({**cfg, "train": {**cfg["train"], "max_steps": 2}}, tmp_path / "two")
    after = load_ckpt(tmp_path / "two")["model"]
    for k, p in p0.items():
        torch.testing.assert_close(after[k], p - 0.5 * 0.25 * grads[k], rtol=0, atol=1e-7)
    groups = load_ckpt(tmp_path / "two")["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == [0.5 * 0.5] * len(groups)  # ready for step 2: t/4 = 1/2


# --------------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("optimizer", [{"name": "adamw", "lr": 3e-3, "weight_decay": 0.1},
                                       {"name": "egd", "lr": 0.1, "momentum": 0.9, "whiten": ["layers.0.weight"]}],
                         ids=lambda o: o["name"])
def test_resume_mid_warmup_is_bit_identical(tmp_path, optimizer):
    base = dict(batch_size=16, stop_after_grok=False)
    warm = {"name": "linear_warmup", "warmup_steps": 10}

    def cfg(**train_fields):
        return {**make_cfg(optimizer, **base, **train_fields), "scheduler": warm}

    one_go, split = tmp_path / "a", tmp_path / "b"
    train(cfg(max_epochs=6), one_go)
    first = train(cfg(max_steps=4, max_epochs=6), split)  # 4 of the 10 warm-up steps, one batch into epoch 2
    assert first["steps"] == 4 and load_ckpt(split)["scheduler"]["last_epoch"] == 4
    train(cfg(max_epochs=6), split, resume=True)

    a, b = load_ckpt(one_go), load_ckpt(split)
    assert_same(a["model"], b["model"], "model")
    assert_same(a["optimizer"], b["optimizer"], "optimizer")
    assert_same(a["scheduler"], b["scheduler"], "scheduler")
    assert a["scheduler"]["last_epoch"] == 18
    rows_a, rows_b = read_rows(one_go / "metrics.csv"), read_rows(split / "metrics.csv")
    assert [r for r in rows_b if r[0] != 4] == rows_a  # the split run's extra evaluation: where it stopped

    # the comparison sees the schedule: the same run without it ends elsewhere
    train(make_cfg(optimizer, max_epochs=6, **base), tmp_path / "c")
    assert not torch.equal(load_ckpt(tmp_path / "c")["model"]["layers.0.weight"], a["model"]["layers.0.weight"])


def test_a_cosine_that_follows_the_budget_refuses_another_budget_on_resume(tmp_path):
    cfg = {**make_cfg(max_epochs=2, stop_after_grok=False), "scheduler": {"name": "cosine"}}
    train(cfg, tmp_path)
    longer = {**cfg, "train": {**cfg["train"], "max_epochs": 4}}
    with pytest.raises(ConfigError, match=r"schedule differs \(total_steps 6 -> 12\)"):
        train(longer, tmp_path, resume=True)
    # an explicit total_steps does not follow the budget: a longer budget continues the same schedule
    fixed = {**cfg, "scheduler": {"name": "cosine", "total_steps": 12}}
    train(fixed, tmp_path / "f")
    s = train({**fixed, "train": {**fixed["train"], "max_epochs": 4}}, tmp_path / "f", resume=True)
    assert s["steps"] == 12

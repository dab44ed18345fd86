"""Config parsing/validation, every shipped recipe, and the ``egd`` command line (in-process and installed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

import egalitarian
from egalitarian.build import build_model, make_task
from egalitarian.cli import main
from egalitarian.config import (
    TRAIN_DEFAULTS,
    apply_overrides,
    load_config,
    load_toml,
    parse_value,
    resolve,
    section_kwargs,
    train_settings,
)
from egalitarian.errors import ConfigError
from egalitarian.losses import get_loss, l2_penalty
from egalitarian.methods import OPTIMIZERS, build_optimizer
from egalitarian.tasks import TASKS

RECIPE_DIR = Path(egalitarian.__file__).parent / "recipes"
RECIPES = sorted(RECIPE_DIR.glob("*.toml"))


def _base() -> dict:
    return {
        "task": {"name": "modular", "p": 7},
        "model": {"name": "mlp", "hidden": 16},
        "optimizer": {"name": "sgd", "lr": 0.1},
    }


def _raises(cfg: dict, *fragments: str) -> str:
    with pytest.raises(ConfigError) as e:
        resolve(cfg)
    msg = str(e.value)
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


# ------------------------------------------------------------------------------------------ apply_overrides


def test_apply_overrides_parses_toml_values_on_dotted_paths():
    cfg = {"optimizer": {"name": "egd", "lr": 0.7}, "train": {"max_epochs": 5}}
    out = apply_overrides(
        cfg,
        [
            "optimizer.lr=0.5",
            "train.drop_last=true",
            'optimizer.backend="svd"',
            "optimizer.whiten=layers.0.weight",
            "model.hidden=[1, 2]",
            "train.max_epochs = 7",
            "a.b.c.d=3",
            "name=x=y",
        ],
    )
    assert out["optimizer"]["lr"] == 0.5 and type(out["optimizer"]["lr"]) is float
    assert out["train"]["drop_last"] is True
    assert out["optimizer"]["backend"] == "svd"
    assert out["optimizer"]["whiten"] == "layers.0.weight"  # a bare word is a string
    assert out["model"]["hidden"] == [1, 2]
    assert out["train"]["max_epochs"] == 7 and type(out["train"]["max_epochs"]) is int
    assert out["a"] == {"b": {"c": {"d": 3}}}
    assert out["name"] == "x=y"  # only the first '=' splits
    assert out["optimizer"]["name"] == "egd"  # untouched keys survive
    assert cfg == {"optimizer": {"name": "egd", "lr": 0.7}, "train": {"max_epochs": 5}}  # input not modified


def test_parse_value_by_hand():
    assert parse_value("1e-3") == 0.001
    assert parse_value("false") is False
    assert parse_value("'a b'") == "a b"
    assert parse_value("mod-add-p97") == "mod-add-p97"
    assert parse_value("[0.9, 0.98]") == [0.9, 0.98]


def test_apply_overrides_errors():
    with pytest.raises(ConfigError, match="train.max_epochs"):
        apply_overrides({}, ["train.max_epochs"])
    with pytest.raises(ConfigError, match="FIELD=VALUE"):
        apply_overrides({}, ["optimizer.lr 0.5"])
    with pytest.raises(ConfigError, match="empty field"):
        apply_overrides({}, ["train..lr=1"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"train": {"seed": 1}}, ["train.seed.x=1"])


# --------------------------------------------------------------------------------------------------- resolve


def test_resolve_fills_defaults_and_does_not_modify_its_input():
    cfg = _base()
    out = resolve(cfg)
    assert cfg == _base()
    # the fields added after run ids existed are left out while at their default (the early stops: off, 0;
    # the skipped-step limit: 0.1), so old ids stay the same
    off = {"max_seconds": 0.0, "chance_patience": 0, "chance_threshold": 0.0, "max_skip_fraction": 0.1,
           "clip_grad_norm": 0.0, "autocast": "off", "tensorboard": "", "shuffle_labels_at": [], "refine_grok": False}
    assert {k: TRAIN_DEFAULTS[k] for k in off} == off
    assert out["train"] == {k: v for k, v in TRAIN_DEFAULTS.items() if k not in off}
    assert train_settings(out) == TRAIN_DEFAULTS
    assert out["loss"] == {"name": "cross_entropy"}
    assert out["diagnostics"] == []
    assert TRAIN_DEFAULTS["batch_size"] == 512 and TRAIN_DEFAULTS["drop_last"] is True
    assert TRAIN_DEFAULTS["memorize_threshold"] == 0.99 and TRAIN_DEFAULTS["grok_threshold"] == 0.95
    assert section_kwargs(out, "task") == {"p": 7}


def test_resolve_unknown_section():
    _raises({**_base(), "trian": {"seed": 1}}, "trian", "unknown config section")


def test_resolve_unknown_train_field():
    _raises({**_base(), "train": {"max_epoch": 5}}, "train.max_epoch", "5", "unknown field", "max_epochs")


@pytest.mark.parametrize(
    "field,value",
    [("batch_size", "big"), ("batch_size", True), ("batch_size", 1.5), ("drop_last", 1), ("grok_threshold", "high"),
     ("clip_grad_norm", "x"), ("tensorboard", 1), ("tensorboard", False)],
)
def test_resolve_wrong_type(field, value):
    _raises({**_base(), "train": {field: value}}, f"train.{field}", repr(value), "type")


def test_resolve_keeps_the_early_stops_when_they_are_on():
    on = {"max_seconds": 30, "chance_patience": 4, "chance_threshold": 0.2}
    out = resolve({**_base(), "train": on})
    assert {k: out["train"][k] for k in on} == on and train_settings(out)["max_seconds"] == 30
    # each one alone: the others stay out
    out = resolve({**_base(), "train": {"chance_patience": 2, "max_seconds": 0.0}})
    assert out["train"]["chance_patience"] == 2 and "max_seconds" not in out["train"]
    assert "chance_threshold" not in out["train"]


def test_resolve_keeps_the_trainer_options_when_they_are_on():
    on = {"clip_grad_norm": 1.0, "autocast": "bf16", "tensorboard": "tb"}
    for key, value in on.items():
        out = resolve({**_base(), "train": {key: value}})
        assert out["train"][key] == value and not set(on) - {key} & set(out["train"])
    assert "scheduler" not in resolve(_base())


def test_resolve_int_is_accepted_for_a_float_field():
    out = resolve({**_base(), "train": {"checkpoint_seconds": 5, "grok_threshold": 1}})
    assert out["train"]["checkpoint_seconds"] == 5 and out["train"]["grok_threshold"] == 1


@pytest.mark.parametrize(
    "field,value",
    [
        ("eval_every", 0),
        ("grok_threshold", 1.5),
        ("grok_threshold", 0.0),
        ("memorize_threshold", -0.1),
        ("batch_size", -1),
        ("patience", -2),
        ("switch_off_threshold", 2.0),
        ("checkpoint_seconds", 0.0),
        ("eval_batch_size", 0),
        ("max_seconds", -1.0),
        ("max_seconds", float("inf")),
        ("chance_patience", -1),
        ("chance_threshold", 1.0),
        ("chance_threshold", -0.5),
        ("clip_grad_norm", -1.0),
        ("clip_grad_norm", float("nan")),
    ],
)
def test_resolve_out_of_range(field, value):
    _raises({**_base(), "train": {field: value}}, f"train.{field}", repr(value))


@pytest.mark.parametrize(
    "field,value", [("eval_unit", "batch"), ("nonfinite", "ignore"), ("progress", "yes"), ("switch_off_split", "x"),
                    ("autocast", "fp16")]
)
def test_resolve_choices(field, value):
    _raises({**_base(), "train": {field: value}}, f"train.{field}", repr(value), "must be one of")


def test_resolve_needs_a_budget():
    _raises({**_base(), "train": {"max_steps": 0, "max_epochs": 0}}, "max_epochs", "max_steps")
    assert resolve({**_base(), "train": {"max_steps": 10, "max_epochs": 0}})["train"]["max_steps"] == 10


@pytest.mark.parametrize("section", ["task", "model", "optimizer"])
def test_resolve_needs_section_names(section):
    cfg = _base()
    del cfg[section]["name"]
    _raises(cfg, f"{section}.name")


def test_resolve_diagnostics_must_be_a_list_of_names():
    _raises({**_base(), "diagnostics": "spectrum"}, "diagnostics")


@pytest.mark.parametrize(
    "section,value,extra",
    [("loss", "mse", {}), ("train", 5, {}), ("optimizer", "adamw", {"method": "a", "methods": {"a": {"name": "sgd"}}})],
)
def test_resolve_section_that_is_not_a_table(section, value, extra):
    cfg = {**_base(), **extra, section: value}
    _raises(cfg, section, repr(value))


def test_method_selection():
    cfg = _base()
    del cfg["optimizer"]
    cfg["name"] = "toy"
    cfg["methods"] = {"sgd": {"name": "sgd", "lr": 0.1}, "fast": {"name": "egd", "lr": 0.3, "whiten": "all"}}
    cfg["method"] = "fast"
    out = resolve(cfg)
    assert out["optimizer"] == {"name": "egd", "lr": 0.3, "whiten": "all"}
    assert out["name"] == "toy-fast"
    assert "methods" not in out and "method" not in out
    # keys given in [optimizer] win over the method table
    out = resolve({**cfg, "optimizer": {"lr": 0.9}})
    assert out["optimizer"] == {"name": "egd", "lr": 0.9, "whiten": "all"}
    # no method: the first table
    out = resolve({k: v for k, v in cfg.items() if k != "method"})
    assert out["optimizer"] == {"name": "sgd", "lr": 0.1} and out["name"] == "toy-sgd"
    _raises({**cfg, "method": "slow"}, "method = 'slow'", "sgd", "fast")
    _raises({**_base(), "method": "egd"}, "method = 'egd'", "[methods.egd]")


def _two_methods() -> dict:
    cfg = _base()
    del cfg["optimizer"]
    cfg["name"] = "toy"
    cfg["methods"] = {"sgd": {"name": "sgd", "lr": 0.1}, "fast": {"name": "egd", "lr": 0.3}}
    return cfg


def test_an_optimizer_name_that_differs_from_the_chosen_method_is_refused():
    cfg = _two_methods()
    msg = _raises({**cfg, "method": "sgd", "optimizer": {"name": "muon"}})
    assert msg == ("optimizer.name = 'muon': differs from the method 'sgd' chosen by method = 'sgd'; "
                   "use --method or set methods.sgd.name")
    # the table's key and its method name differ: both are named
    msg = _raises({**cfg, "method": "fast", "optimizer": {"name": "sgd", "lr": 0.5}})
    assert msg == ("optimizer.name = 'sgd': differs from the method 'egd' chosen by method = 'fast'; "
                   "use --method or set methods.fast.name")
    _raises({**cfg, "optimizer": {"name": "adamw"}}, "chosen by method = 'sgd'")  # the first table, implicitly
    # the same name is no conflict; other keys still win
    out = resolve({**cfg, "method": "fast", "optimizer": {"name": "egd", "lr": 0.5}})
    assert out["optimizer"] == {"name": "egd", "lr": 0.5} and out["name"] == "toy-fast"
    # a table without a name takes [optimizer]'s
    out = resolve({**cfg, "methods": {"x": {"lr": 0.2}}, "method": "x", "optimizer": {"name": "sgd"}})
    assert out["optimizer"] == {"name": "sgd", "lr": 0.2}


def test_a_method_without_a_table_runs_with_the_registry_defaults():
    cfg = {**_two_methods(), "method": "muon"}
    out = resolve(cfg, OPTIMIZERS)
    assert out["optimizer"] == {"name": "muon"} and out["name"] == "toy-muon"
    assert resolve({**cfg, "optimizer": {"lr": 0.01}}, OPTIMIZERS)["optimizer"] == {"name": "muon", "lr": 0.01}
    with pytest.raises(ConfigError) as e:
        resolve({**cfg, "optimizer": {"name": "sgd"}}, OPTIMIZERS)
    assert str(e.value).startswith("optimizer.name = 'sgd': differs from the method 'muon' chosen by method = 'muon'")
    assert "[methods.muon]" in str(e.value)
    with pytest.raises(ConfigError) as e:
        resolve({**cfg, "method": "bogus"}, OPTIMIZERS)
    msg = str(e.value)
    assert msg.startswith("method = 'bogus': no [methods.bogus] table; allowed: a table of this config (sgd, fast)")
    assert "egd_adamw" in msg and "\n" not in msg
    # without the registry's names, only the config's tables are methods
    _raises(cfg, "method = 'muon'", "sgd, fast")
    # a shipped recipe: every registered method runs on it
    recipe = {**load_config("mod-add-p97"), "method": "adamw"}
    out = resolve(recipe, OPTIMIZERS)
    assert out["optimizer"] == {"name": "adamw"} and out["name"] == "mod-add-p97-adamw"


# ------------------------------------------------------------------------------------------------- load_toml


def test_load_toml_missing_and_malformed(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as e:
        load_toml(missing)
    assert str(missing) in str(e.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("[task\nname = 'modular'\n")
    with pytest.raises(ConfigError) as e:
        load_toml(bad)
    assert str(bad) in str(e.value) and "TOML" in str(e.value)
    good = tmp_path / "good.toml"
    good.write_text("[train]\nmax_epochs = 3\nlr = 0.5\n")
    assert load_toml(good) == {"train": {"max_epochs": 3, "lr": 0.5}}


# --------------------------------------------------------------------------------------------------- recipes


def _recipe_cases():
    cases = []
    for path in RECIPES:
        with path.open("rb") as f:
            raw = tomllib.load(f)
        for method in raw.get("methods", {}):
            cases.append(pytest.param(path, method, id=f"{path.stem}:{method}"))
        if "methods" not in raw:
            cases.append(pytest.param(path, None, id=path.stem))
    return cases


def _shrink_task(task: dict) -> dict:
    task = dict(task)
    if task["name"] == "modular":
        task["p"] = 11
    elif task["name"] == "parity":
        task.update(n_train=64, n_test=32)
    elif task["name"] == "mnist":
        pytest.importorskip("sklearn")
        if task.get("path") is None:  # Fashion-MNIST has no stand-in: its recipes build and step on the digits
            task.update(source="digits", dataset="mnist", n_train=100, n_test=50)
    return task


def test_there_are_recipes_and_every_one_has_methods():
    assert len(RECIPES) >= 10
    for path in RECIPES:
        raw = load_toml(path)
        assert raw.get("methods"), path.name
        assert raw.get("method") in raw["methods"], path.name  # the default method exists


@pytest.mark.parametrize("path,method", _recipe_cases())
def test_every_recipe_method_builds_and_steps(path, method):
    raw = load_toml(path)
    if method is not None:
        raw["method"] = method
    cfg = resolve(raw)
    assert cfg["task"]["name"] in TASKS
    assert cfg["optimizer"]["name"] in OPTIMIZERS
    cfg["task"] = _shrink_task(cfg["task"])
    if "rank" in cfg["optimizer"]:  # p = 11 makes W1 (512, 22): a recipe's rank 128 would exceed every min(m, n)
        cfg["optimizer"]["rank"] = min(cfg["optimizer"]["rank"], 16)
    data = make_task(cfg["task"]["name"], **section_kwargs(cfg, "task"))
    torch.manual_seed(0)
    model = build_model(cfg, data)
    loss_fn = get_loss(cfg["loss"]["name"])
    wd = cfg["loss"].get("weight_decay", 0.0)
    opt = build_optimizer(list(model.named_parameters()), cfg["optimizer"]["name"], **section_kwargs(cfg, "optimizer"))
    before = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(data.n_train, generator=g)[:16]
    xb, yb = data.x_train[idx], data.y_train[idx]
    for _ in range(2):
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        if wd:
            loss = loss + l2_penalty([p for p in model.parameters() if p.ndim >= 2], wd)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize(
    "model,encoding,message",
    [("mlp", "tokens", "model.name = 'mlp': needs feature inputs"), ("transformer", "index", "needs a token task")],
)
def test_model_and_encoding_must_match(model, encoding, message):
    data = make_task("modular", p=7, encoding=encoding)
    cfg = {"model": {"name": model, "hidden": 8} if model == "mlp" else {"name": model}}
    with pytest.raises(ConfigError, match=message):
        build_model(cfg, data)


# ------------------------------------------------------------------------------------------------------- CLI


TINY = """\
name = "tiny"

[task]
name = "modular"
p = 7
op = "add"
train_frac = 0.5

[model]
name = "mlp"
hidden = 16

[optimizer]
name = "sgd"
lr = 0.5

[train]
batch_size = 8
max_epochs = 2
threads = 1
progress = "off"
"""


def _error_line(capsys, argv) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("egd: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_cli_list_tasks(capsys):
    assert main(["list", "tasks"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert set(names) == {"modular", "parity", "mnist", "cifar10", "stdlib_bytes"}
    line = next(ln for ln in out.splitlines() if ln.startswith("modular"))
    assert "Modular arithmetic" in line


def test_cli_list_optimizers(capsys):
    assert main(["list", "optimizers"]) == 0
    out = capsys.readouterr().out
    starts = {line.split()[0] for line in out.splitlines() if line and not line[0].isspace()}
    assert starts == set(OPTIMIZERS)
    assert '"lr": 0.7' in out  # egd's default learning rate is shown
    assert "defaults:" in out


def test_cli_list_recipes(capsys):
    assert main(["list", "recipes"]) == 0
    out = capsys.readouterr().out
    by_name = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert set(by_name) == {p.stem for p in RECIPES}
    for path in RECIPES:
        with path.open("rb") as f:
            methods = tomllib.load(f)["methods"]
        for m in methods:
            assert m in by_name[path.stem]


def test_cli_run_with_overrides(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    out_dir = tmp_path / "runs" / "tiny"
    code = main(
        [
            "run",
            "--config",
            str(cfg),
            "--set",
            "train.max_epochs=3",
            "--set",
            "optimizer.lr=0.25",
            "--out",
            str(out_dir),
        ]
    )
    stdout = capsys.readouterr().out
    assert code == 0
    assert "status:" in stdout and str(out_dir) in stdout
    summary = json.loads((out_dir / "summary.json").read_text())
    written = json.loads((out_dir / "config.json").read_text())["config"]
    assert written["optimizer"]["lr"] == 0.25
    assert written["train"]["max_epochs"] == 3
    n_train = int(7 * 7 * 0.5)  # 24 pairs; batch 8, drop_last → 3 steps per epoch
    assert summary["steps_per_epoch"] == n_train // 8 == 3
    assert summary["epochs"] == 3 and summary["steps"] == 9
    assert (out_dir / "metrics.csv").is_file() and (out_dir / "checkpoint.pt").is_file()


def test_cli_run_with_method(tmp_path, capsys):
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        TINY.replace(
            '[optimizer]\nname = "sgd"\nlr = 0.5\n',
            '[methods.a]\nname = "sgd"\nlr = 0.5\n[methods.b]\nname = "egd"\nlr = 0.5\n',
        )
    )
    out_dir = tmp_path / "r"
    assert main(["run", "--config", str(cfg), "--method", "b", "--out", str(out_dir)]) == 0
    capsys.readouterr()
    written = json.loads((out_dir / "config.json").read_text())["config"]
    assert written["optimizer"]["name"] == "egd" and written["name"] == "tiny-b"
    line = _error_line(capsys, ["run", "--config", str(cfg), "--method", "c", "--out", str(tmp_path / "r2")])
    assert line.startswith("egd: error: method = 'c': no [methods.c] table; allowed: a table of this config (a, b)")


def test_cli_run_refuses_a_label_that_is_not_what_runs(tmp_path, capsys):
    line = _error_line(capsys, ["run", "--config", "mod-add-p97", "--method", "sgd", "--set", "optimizer.name=muon",
                                "--out", str(tmp_path / "r")])
    assert line == ("egd: error: optimizer.name = 'muon': differs from the method 'sgd' chosen by method = 'sgd'; "
                    "use --method or set methods.sgd.name")
    assert not (tmp_path / "r").exists()


def test_cli_run_any_registered_method_says_it_uses_the_registry_defaults(tmp_path, capsys):
    cfg = tmp_path / "m.toml"
    cfg.write_text(TINY.replace('[optimizer]\nname = "sgd"\nlr = 0.5\n', '[methods.a]\nname = "sgd"\nlr = 0.5\n'))
    out_dir = tmp_path / "r"
    assert main(["run", "--config", str(cfg), "--method", "muon", "--set", "train.max_epochs=1",
                 "--out", str(out_dir)]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [f"egd: note: {cfg} has no [methods.muon] table; muon runs with the registry's "
                                "defaults (egd list optimizers)"]
    written = json.loads((out_dir / "config.json").read_text())["config"]
    assert written["optimizer"] == {"name": "muon"} and written["name"] == "tiny-muon"
    # an unknown name: exit 2 naming `method`, and no note
    line = _error_line(capsys, ["run", "--config", str(cfg), "--method", "bogus", "--out", str(tmp_path / "r2")])
    assert line.startswith("egd: error: method = 'bogus': no [methods.bogus] table")


@pytest.fixture
def tiny_toml(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY)
    return p


def test_cli_unknown_recipe(capsys, tmp_path):
    line = _error_line(capsys, ["run", "--config", "mod-add-p98", "--out", str(tmp_path / "r")])
    assert "mod-add-p98" in line and "mod-add-p97" in line


def test_cli_unknown_optimizer(capsys, tiny_toml, tmp_path):
    line = _error_line(
        capsys, ["run", "--config", str(tiny_toml), "--set", "optimizer.name=adamx", "--out", str(tmp_path / "r")]
    )
    assert "optimizer.name" in line and "adamx" in line


def test_cli_unknown_field(capsys, tiny_toml, tmp_path):
    line = _error_line(
        capsys, ["run", "--config", str(tiny_toml), "--set", "train.epochs=3", "--out", str(tmp_path / "r")]
    )
    assert "train.epochs" in line
    line = _error_line(
        capsys, ["run", "--config", str(tiny_toml), "--set", "model.width=3", "--out", str(tmp_path / "r")]
    )
    assert "model.width" in line


def test_cli_bad_value(capsys, tiny_toml, tmp_path):
    line = _error_line(
        capsys, ["run", "--config", str(tiny_toml), "--set", "train.eval_every=0", "--out", str(tmp_path / "r")]
    )
    assert "train.eval_every" in line and "0" in line


def test_cli_malformed_toml(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nmax_epochs = 3\n")
    line = _error_line(capsys, ["run", "--config", str(bad), "--out", str(tmp_path / "r")])
    assert str(bad) in line


def test_cli_missing_file(capsys, tmp_path):
    missing = tmp_path / "missing.toml"
    line = _error_line(capsys, ["run", "--config", str(missing), "--out", str(tmp_path / "r")])
    assert str(missing) in line


def test_cli_set_without_equals(capsys, tiny_toml, tmp_path):
    line = _error_line(
        capsys, ["run", "--config", str(tiny_toml), "--set", "train.max_epochs", "--out", str(tmp_path / "r")]
    )
    assert "train.max_epochs" in line


def test_cli_unwritable_output_directory(capsys, tiny_toml, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = blocker / "run"
    line = _error_line(capsys, ["run", "--config", str(tiny_toml), "--out", str(out)])
    assert str(out) in line
    assert blocker.read_text() == "not a directory"


def test_cli_set_a_whole_section_to_a_word(capsys, tiny_toml, tmp_path):
    line = _error_line(capsys, ["run", "--config", str(tiny_toml), "--set", "loss=mse", "--out", str(tmp_path / "r")])
    assert "loss" in line


def test_cli_resume(capsys, tiny_toml, tmp_path):
    out = tmp_path / "r"
    assert main(["run", "--config", str(tiny_toml), "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 6  # 2 epochs × (24 // 8)
    assert main(["run", "--config", str(tiny_toml), "--set", "train.max_epochs=4", "--out", str(out), "--resume"]) == 0
    capsys.readouterr()
    assert json.loads((out / "summary.json").read_text())["steps"] == 12
    line = _error_line(
        capsys,
        ["run", "--config", str(tiny_toml), "--set", "optimizer.lr=0.1", "--set", "train.max_epochs=5"]
        + ["--out", str(out), "--resume"],
    )
    assert "optimizer" in line and "resume" in line


def test_cli_nonfinite_exits_3(capsys, tiny_toml, tmp_path):
    code = main(["run", "--config", str(tiny_toml), "--set", "optimizer.lr=1e30", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 3
    assert "non-finite" in err and "Traceback" not in err


def _egd_executable() -> str | None:
    here = Path(sys.executable).parent / ("egd.exe" if os.name == "nt" else "egd")
    if here.exists():
        return str(here)
    return shutil.which("egd")


@pytest.mark.slow
def test_console_script_lists_recipes():
    exe = _egd_executable()
    if exe is None:
        pytest.skip("the egd console script is not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([exe, "list", "recipes"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert names == {p.stem for p in RECIPES}


@pytest.mark.slow
def test_console_script_bad_input_exits_2(tmp_path):
    exe = _egd_executable()
    if exe is None:
        pytest.skip("the egd console script is not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [exe, "run", "--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("egd: error:") and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("section", "field", "value", "allowed"),
    [
        ("model", "hidden", 0, "must be a positive integer"),
        ("model", "activation", "swish", "must be one of"),
        ("task", "p", 1, "must be"),
        ("optimizer", "lr", -1.0, "must be a number > 0"),
        ("optimizer", "weight_decay", -0.5, "must be a number >= 0"),
        ("loss", "weight_decay", -1.0, "must be a number >= 0"),
    ],
)
def test_the_config_layer_names_the_config_path(section, field, value, allowed):
    """Library classes name their own arguments; building from a config puts the section in front, once."""
    from egalitarian.build import build_run

    cfg = _base()
    cfg.setdefault(section, {"name": "cross_entropy"})[field] = value
    with pytest.raises(ConfigError) as e:
        build_run(resolve(cfg))
    assert str(e.value).startswith(f"{section}.{field} = {value!r}: ") and allowed in str(e.value), str(e.value)

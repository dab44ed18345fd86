"""egd reproduce: one registry of artifacts, each made by plan → run → analyse → write; every table expands into
valid runs; the cells are formatted as documented."""

from __future__ import annotations

import inspect

import pytest

from egalitarian.cli import build_parser, main
from egalitarian.errors import ConfigError
from egalitarian.report import markdown_table
from egalitarian.reproduce import ARTIFACTS, SEEDS_ALLOWED, names, parse_seeds, reproduce
from egalitarian.reproduce.paper_tables import TABLES, _cell, build_sweep

EVERY = ["table2", "table3", "table4", "table5", "table6", "table7", "table8", "fig6", "appf"]


def test_the_registry_holds_every_artifact_of_the_paper_and_each_has_the_four_steps():
    assert names() == EVERY
    for a in ARTIFACTS.values():
        steps = a.steps()
        for step, arity in (("plan", 2), ("run", 1), ("analyse", 2), ("write", 2)):
            assert len(inspect.signature(getattr(steps, step)).parameters) == arity, (a.name, step)
    assert {a.name for a in ARTIFACTS.values() if a.module == "paper_tables"} == set(TABLES)
    assert ARTIFACTS["table8"].datasets == ARTIFACTS["table8"].steps().DATASETS  # declared where the command lists it


def test_help_and_an_unknown_name_list_every_artifact(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reproduce", "--help"])
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("artifacts (NAME):\n")[1].splitlines() if line[2:3].strip()]
    assert listed == EVERY
    assert main(["reproduce", "table99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"egd: error: NAME = 'table99': allowed: {', '.join(EVERY)}"]


@pytest.mark.parametrize("name, args, message", [
    ("table2", ["--dataset", "cifar10"], "--dataset = 'cifar10': only table8 takes --dataset"),
    ("fig6", ["--dataset", "cifar10"], "--dataset = 'cifar10': only table8 takes --dataset"),
    ("table5", ["--seeds", "3"], "--seeds = '3': table5 takes only --quick and --out"),
    ("fig6", ["--workers", "2"], "--workers = 2: fig6 takes only --quick and --out"),
])
def test_an_option_the_artifact_does_not_take_exits_2_naming_who_takes_it(tmp_path, capsys, name, args, message):
    assert main(["reproduce", name, "--out", str(tmp_path), *args]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"egd: error: {message}"]
    assert list(tmp_path.iterdir()) == []  # refused before anything was made


def test_markdown_table_by_hand():
    assert markdown_table(["a", "b"], [[1, "x"], ["", None]]) == "| a | b |\n|---|---|\n| 1 | x |\n|  | None |"
    assert markdown_table(("only",), []) == "| only |\n|---|"


@pytest.mark.parametrize("name", sorted(TABLES))
@pytest.mark.parametrize("quick", [False, True])
def test_every_table_expands(tmp_path, name, quick):
    table = TABLES[name]
    sweep, where = build_sweep(name, 2, quick, tmp_path)
    settings = table.quick_settings if quick else list(table.settings)
    methods = table.quick_methods if quick else table.methods
    assert len(sweep.runs) == len(settings) * len(methods) * 2  # settings × methods × seeds
    assert set(where.values()) == {(s, m) for s in settings for m in methods}
    assert len({r.id for r in sweep.runs}) == len(sweep.runs)
    labels = {where[r.id]: r.label for r in sweep.runs}
    assert len(set(labels.values())) == len(labels)  # one label per (setting, method), seeds excluded
    assert table.baseline in methods
    for r in sweep.runs:
        assert r.config["train"]["threads"] == 1
        if quick:
            for key, value in table.quick_set.items():
                section, field = key.split(".")
                assert r.config[section][field] == value


def test_cells_by_hand():
    m = {"median": 120.5, "q25": 115.75, "q75": 125.25}
    assert _cell(m, 2, 2, 300) == "120.5 [115.75, 125.25]"
    assert _cell(m, 2, 3, 300) == "120.5 [115.75, 125.25]; 1 > 300"
    assert _cell(None, 0, 2, 300) == "> 300"


def test_unknown_name_and_bad_seeds(tmp_path):
    with pytest.raises(ConfigError, match="NAME = 'table1': allowed: table2, "):
        reproduce("table1", out=tmp_path)
    with pytest.raises(ConfigError, match="--seeds = 0: a count N >= 1"):
        reproduce("table2", seeds=0, out=tmp_path)


@pytest.mark.parametrize(
    "text,seeds",
    [("5", [0, 1, 2, 3, 4]), ("1", [0]), ("5-9", [5, 6, 7, 8, 9]), ("3-3", [3]), (" 2 - 4 ", [2, 3, 4]),
     ("0,3,7", [0, 3, 7]), ("7, 3", [7, 3]), (4, [0, 1, 2, 3]), ([2, 9], [2, 9])],
)
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["0", "-1", "5-", "-5", "9-5", "a", "1.5", "0,0", "3,", ",", "", "1,x", "2-4,6"])
def test_parse_seeds_refuses(text):
    with pytest.raises(ConfigError) as e:
        parse_seeds(text)
    assert str(e.value) == f"--seeds = {text!r}: {SEEDS_ALLOWED}"


def test_the_sweep_runs_carry_the_given_seeds(tmp_path):
    by_count, _ = build_sweep("table4", 2, True, tmp_path)
    by_text, _ = build_sweep("table4", parse_seeds("2"), True, tmp_path)
    assert [r.id for r in by_count.runs] == [r.id for r in by_text.runs]  # a count: the same runs as before
    listed, _ = build_sweep("table4", parse_seeds("0,3,7"), True, tmp_path)
    ranged, _ = build_sweep("table4", parse_seeds("1-2"), True, tmp_path)
    for sweep, seeds in ((by_count, [0, 1]), (listed, [0, 3, 7]), (ranged, [1, 2])):
        assert sweep.store == tmp_path / "table4-quick.sqlite"  # one store, whatever the seeds
        per_method: dict[str, list[int]] = {}
        for r in sweep.runs:
            train = r.config["train"]
            assert train["seed"] == train["shuffle_seed"] == r.params["seed"]
            per_method.setdefault(r.params["method"], []).append(train["seed"])
        assert per_method == {m: seeds for m in TABLES["table4"].quick_methods}
    # the same seed is the same run, whichever way it was asked for
    assert {r.id for r in listed.runs} & {r.id for r in by_count.runs} == {
        r.id for r in by_count.runs if r.params["seed"] == 0}


def test_cli_reproduce_bad_seeds_exits_2(capsys, tmp_path):
    assert main(["reproduce", "table4", "--seeds", "5-", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"egd: error: --seeds = '5-': {SEEDS_ALLOWED}"]


def test_table7_runs_the_official_warmup_at_a_stated_budget(tmp_path):
    # the paper's Table 7 comes from Grokfast's code, whose LambdaLR warms up over 10 updates: every method of the
    # full table has lr·min(1, t/10) at step t, and every method gets the same 20k-step budget
    from egalitarian.schedules import lr_factor

    sweep, where = build_sweep("table7", 2, False, tmp_path)
    assert {m for _, m in where.values()} == {"adam_warmup", "grokfast_warmup", "egd_adam_warmup",
                                               "egd_rsvd36_adam_warmup"}
    for r in sweep.runs:
        assert r.config["train"]["max_steps"] == 20000
        sched = r.config["scheduler"]
        assert [lr_factor(t, **sched) for t in (0, 1, 5, 10, 11, 500)] == [0, 0.1, 0.5, 1, 1, 1]
    # the slow baseline is planned last, so a partial run of the table has the fast methods at every seed
    assert where[sweep.runs[-1].id][1] == "adam_warmup"

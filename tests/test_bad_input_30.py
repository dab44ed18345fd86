"""Issue #30's bad inputs and faults: each exits 2 with one line naming the file or field, the value and what is
allowed (or, for the report, never pools seconds of different thread counts).

The tunes run on the fake executor of tests/test_tune.py (no training); the expected messages name what the test
wrote, and the MD5s are computed here with hashlib from the bytes the test wrote.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

import egalitarian.tune as tune_mod
from egalitarian import data, egd_for, rundir
from egalitarian import io as fio
from egalitarian.cli import main
from egalitarian.errors import ConfigError
from egalitarian.report.core import LoadedRun, group_runs, load_runs, summary_table
from egalitarian.sweep import Store, expand, group_stats, stats_table
from egalitarian.tasks import mnist
from tests.test_data import CANONICAL, small_set, spec_of, write
from tests.test_tune import METHODS, FakeExecutor, spec_file

optuna = pytest.importorskip("optuna")


def error_line(capsys) -> str:
    """The command's stderr, checked to be one line."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("egd: error: "), err
    return err


# ------------------------------------------------------------------- 1. a tune spec changed after its store


def tuned(tmp_path: Path, monkeypatch, capsys, **parts: str) -> Path:
    """A finished tune of the spec (tests/test_tune.py's, with ``parts`` replaced) on the fake executor."""
    monkeypatch.setattr(tune_mod, "run_sweep", FakeExecutor())
    path = spec_file(tmp_path, **parts)
    assert main(["tune", str(path)]) == 0
    capsys.readouterr()
    return path


def edited(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize("old, new, field, study, was", [
    ("high = 100.0", "high = 10.0", "space.optimizer.lr.high = 10.0", "sgd", "100.0"),  # the range narrowed
    ("max_epochs = 2", "max_epochs = 1", "train.max_epochs (method sgd's runs) = 1", "sgd", "2"),  # the budget
    ('"optimizer.whiten" = "all"', '"optimizer.whiten" = "all", "optimizer.momentum" = 0.5',
     "optimizer.momentum (method egd_all's runs) = 0.5", "egd_all", "None"),  # a method's set
    ("trials = 5", "trials = 6", "tune.trials = 6", "sgd", "5"),
])
def test_a_spec_changed_after_its_store_was_made_is_refused(tmp_path, monkeypatch, capsys, old, new, field, study,
                                                           was):
    path = tuned(tmp_path, monkeypatch, capsys)
    after = FakeExecutor()
    monkeypatch.setattr(tune_mod, "run_sweep", after)
    assert main(["tune", str(edited(path, old, new))]) == 2
    err = error_line(capsys)
    assert f"tune spec {str(path)!r}: {field}: study 't/{study}' in {str(tmp_path / 'store.optuna.sqlite')!r} " \
           f"was made with {was};" in err
    assert "give the tune a new name or store" in err and after.calls == 0  # nothing ran, nothing was mixed


def test_a_report_set_added_after_the_store_was_made_is_refused(tmp_path, monkeypatch, capsys):
    path = tuned(tmp_path, monkeypatch, capsys)
    path.write_text(path.read_text() + '[report_set]\n"train.eval_every" = 2\n')
    assert main(["tune", str(path)]) == 2
    assert "train.eval_every (method sgd's reporting runs) = 2: " in error_line(capsys)


def test_what_the_docs_let_change_is_kept(tmp_path, monkeypatch, capsys):
    # docs/TUNING.md: raising tune.studies keeps the finished studies; widen, baselines and the reporting seeds
    # may change (the reporting runs are planned from the spec each time)
    path = tuned(tmp_path, monkeypatch, capsys)
    spec = tune_mod.load_tune(path)
    storage = f"sqlite:///{spec.study_path.resolve()}"
    before = [t.params for t in optuna.load_study(study_name="t/sgd", storage=storage).trials]
    edited(path, "seed = 3", "seed = 3\nstudies = 2\nwiden = 3")
    edited(path, "reporting_seeds = [10, 11, 12, 13, 14]", "reporting_seeds = [10, 11, 12, 13, 14, 15]")
    edited(path, 'baselines = ["sgd"]', "baselines = []")
    assert main(["tune", str(path)]) == 0
    assert [t.params for t in optuna.load_study(study_name="t/sgd", storage=storage).trials] == before
    assert len(optuna.load_study(study_name="t/sgd/study1", storage=storage).trials) == 5


def test_a_store_made_before_the_record_is_trusted_once(tmp_path, monkeypatch, capsys):
    # stores made before 2026-12-06 (the running mod-add board: its space gained a dimension after stage 1) hold
    # studies without the record: the next run adopts the spec as it is then, later changes are refused
    check = tune_mod._check_made_with
    monkeypatch.setattr(tune_mod, "_check_made_with", lambda *a: None)  # the code before the record
    path = tuned(tmp_path, monkeypatch, capsys)
    spec = tune_mod.load_tune(path)
    storage = f"sqlite:///{spec.study_path.resolve()}"
    assert tune_mod.MADE_WITH not in optuna.load_study(study_name="t/sgd", storage=storage).user_attrs
    monkeypatch.setattr(tune_mod, "_check_made_with", check)
    assert main(["tune", str(edited(path, "max_epochs = 2", "max_epochs = 3"))]) == 0  # trusted once
    assert optuna.load_study(study_name="t/sgd", storage=storage).user_attrs[tune_mod.MADE_WITH]["config"][
        "train"]["max_epochs"] == 3
    assert main(["tune", str(edited(path, "max_epochs = 3", "max_epochs = 4"))]) == 2
    assert "train.max_epochs (method sgd's runs) = 4: " in error_line(capsys)


# ------------------------------------------------------------------------------- 2. a bad value in a set


def test_a_bad_value_in_a_methods_set_is_refused_before_the_tune(tmp_path, monkeypatch, capsys):
    fake = FakeExecutor()
    monkeypatch.setattr(tune_mod, "run_sweep", fake)
    methods = METHODS.replace('set = { "optimizer.whiten" = "all" }',
                              'set = { "optimizer.whiten" = "all", "optimizer.momentum" = "abc" }')
    path = spec_file(tmp_path, methods=methods)
    assert main(["tune", str(path)]) == 2
    err = error_line(capsys)
    assert f"tune spec {str(path)!r}: methods.egd_all: optimizer.momentum = 'abc': must be float" in err
    assert fake.calls == 0 and not (tmp_path / "store.sqlite").exists()


# ---------------------------------------------------------------- 3. an unusable store or study file


def test_a_store_in_an_unwritable_place_is_one_line_with_the_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tune_mod, "run_sweep", FakeExecutor())
    path = spec_file(tmp_path)
    edited(path, f'store = "{tmp_path / "store.sqlite"}"', 'store = "/proc/x.sqlite"')  # no file can be made there
    assert main(["tune", str(path)]) == 2
    assert "'/proc/x.optuna.sqlite.lock' cannot be created" in error_line(capsys)
    with pytest.raises(ConfigError, match="results store '/proc/x.sqlite' cannot be opened for writing"):
        Store("/proc/x.sqlite")


def test_a_study_file_replaced_by_garbage_is_one_line_with_the_path(tmp_path, monkeypatch, capsys):
    path = tuned(tmp_path, monkeypatch, capsys)
    study_file = tmp_path / "store.optuna.sqlite"
    study_file.write_bytes(b"not a database\n" * 100)
    assert main(["tune", str(path)]) == 2
    err = error_line(capsys)
    assert f"study file {str(study_file)!r} cannot be used (file is not a database)" in err


# ------------------------------------------------------------ 4. a file where a directory must be


def test_a_file_where_a_directory_must_be_is_named(tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x\n")
    monkeypatch.setenv("EGD_DATA", str(a_file))
    for args in (["data", "mnist"], ["data", "status"]):
        assert main(args) == 2
        err = error_line(capsys)
        assert f"$EGD_DATA = {str(a_file)!r}: is a file; must be a directory" in err and "missing" not in err
    store = tmp_path / "s.sqlite"
    Store(store).close()
    assert main(["export", "tensorboard", str(store), str(a_file)]) == 2
    assert f"DIR {str(a_file)!r} cannot be created: {str(a_file)!r} is a file, not a directory" in error_line(capsys)
    assert main(["reproduce", "fig6", "--quick", "--out", str(a_file / "out")]) == 2
    assert f"--out {str(a_file / 'out')!r} cannot be created: {str(a_file)!r} is a file" in error_line(capsys)
    path = spec_file(tmp_path)
    edited(path, f'store = "{tmp_path / "store.sqlite"}"', f'store = "{a_file / "store.sqlite"}"')
    assert main(["tune", str(path)]) == 2
    assert f"tune.store's directory {str(a_file)!r} cannot be created: {str(a_file)!r} is a file" in error_line(capsys)
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        Store(a_file / "deeper" / "s.sqlite")


# ------------------------------------------------------------------------------ 5. a damaged MNIST file


def test_a_damaged_mnist_file_is_refused_unless_asked_for(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EGD_DATA", str(tmp_path))
    files = small_set(n_train=20, n_test=10)
    monkeypatch.setitem(data.DATASETS, "mnist", spec_of(files))  # these bytes are "the genuine MNIST"
    write(tmp_path / "mnist", files)
    assert mnist(n_train=10).info["genuine"] is True
    damaged = bytearray(files[CANONICAL[0]])
    damaged[100] ^= 0xFF  # one flipped byte: the same size, another MD5
    (tmp_path / "mnist" / CANONICAL[0]).write_bytes(damaged)
    got, want = hashlib.md5(damaged).hexdigest(), hashlib.md5(files[CANONICAL[0]]).hexdigest()
    why = f"{tmp_path / 'mnist' / CANONICAL[0]} has MD5 {got}, the genuine {CANONICAL[0]} {want}"
    with pytest.raises(ConfigError, match=f"^source = 'auto': {re.escape(why)}: a damaged copy"):
        mnist(n_train=10)
    task = mnist(n_train=10, source="idx")  # asked for: trained on, and said which file differs
    assert task.info["genuine"] is False
    assert task.info["data"] == f"mnist-format IDX files, not the genuine mnist ({why})"
    assert main(["run", "--config", "mnist-1k-mlp", "--set", "task.n_train=10", "--set", "train.max_steps=1",
                 "--out", str(tmp_path / "run")]) == 2
    err = error_line(capsys)
    assert f"task.source = 'auto': {why}" in err and "source = 'idx' trains on these anyway" in err
    assert not (tmp_path / "run" / "summary.json").exists()


# --------------------------------------------------------------------- 6. groups that share a label


def _finished_store(path: Path, budgets: list[int], mixed: bool = False) -> None:
    """A store with two sgd runs (seeds 0, 1) per budget, finished on 1 thread (with ``mixed``, seed 1 on 2)."""
    base = {"name": "tiny", "task": {"name": "modular", "p": 7}, "model": {"name": "mlp", "hidden": 8},
            "train": {"batch_size": 0}}
    with Store(path) as st:
        for budget in budgets:
            runs = expand(base, {"seed": [0, 1]}, [{"method": "sgd"}], {"train.max_epochs": budget})
            st.add("s", runs)
            for r in runs:
                st.claim([r.id], "w")
                summary = {"grokked": True, "grok": {"step": 10, "epoch": 10, "seconds": 1.0}, "steps": 20,
                           "epochs": 20, "seconds": 2.0, "final_test_acc": 1.0, "device": "cpu",
                           "threads": 1 + (mixed and r.params["seed"] == 1)}
                st.finish(r.id, "w", summary, [])


def test_groups_of_different_configs_never_share_a_label(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    _finished_store(store, [300, 200])  # a sweep file whose budget was edited between two runs
    with Store(store, create=False) as st:
        labels = [g["label"] for g in group_stats(st.runs())]
    assert sorted(labels) == ["method=sgd (train.max_epochs=200)", "method=sgd (train.max_epochs=300)"]
    assert main(["results", str(store)]) == 0
    assert "method=sgd (train.max_epochs=200)" in capsys.readouterr().out
    assert sorted({r.label for r in load_runs(store)}) == sorted(labels)  # egd report: two groups, not one


# --------------------------------------------------------------------------------- 7. misleading messages


def test_an_unknown_artifact_lists_all_nine(capsys):
    assert main(["reproduce", "table99"]) == 2
    err = error_line(capsys)
    for name in ("table2", "table3", "table4", "table5", "table6", "table7", "table8", "fig6", "appf"):
        assert name in err


def test_an_unknown_method_table_is_blamed_on_itself(tmp_path, capsys):
    path = spec_file(tmp_path, methods=METHODS.replace("[methods.sgd]", "[methods.nope]"))  # baselines = ["sgd"]
    assert main(["tune", str(path)]) == 2
    err = error_line(capsys)
    assert "methods.nope: method = 'nope': no [methods.nope] table" in err and "baselines" not in err


def test_a_second_tune_of_a_store_is_refused_as_a_tune(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tune_mod, "run_sweep", FakeExecutor())
    path = spec_file(tmp_path)
    lock = tmp_path / "store.optuna.sqlite.lock"
    with fio.exclusive(lock, lambda who: ConfigError(who)):  # the first `egd tune`, still running
        assert main(["tune", str(path)]) == 2
    assert "is in use by another `egd tune` (pid " in error_line(capsys)


def test_resume_of_a_run_directory_in_use_says_in_use(tmp_path, capsys):
    out = tmp_path / "run"
    with rundir.lock(out):  # a run training there, no checkpoint written yet
        assert main(["run", "--config", "mod-add-p97", "--out", str(out), "--resume"]) == 2
    assert f"run directory {str(out)!r} is in use by another egd run" in error_line(capsys)
    assert main(["run", "--config", "mod-add-p97", "--out", str(out), "--resume"]) == 2  # free: nothing to resume
    assert "holds no checkpoint.pt" in error_line(capsys)


def test_egd_for_without_a_matrix_to_whiten_says_plain_adamw():
    with pytest.warns(UserWarning, match="has no matrix EGD whitens; .* plain AdamW"):
        egd_for(torch.nn.Sequential(torch.nn.Embedding(10, 4)), lr=1e-3)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        egd_for(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)), lr=1e-3)


# ------------------------------------------------------------------ 8. seconds of different thread counts


def _run(label: str, threads: int, seconds: float) -> LoadedRun:
    summary = {"grok": {"step": 10, "epoch": 1, "seconds": seconds}, "final_test_acc": 1.0, "device": "cpu",
               "threads": threads}
    return LoadedRun(label, 0, summary, [])


def test_the_report_never_pools_seconds_of_different_thread_counts():
    runs = [_run("a", 1, 1.0), _run("a", 2, 0.5), _run("a", 1, 1.2), _run("b", 2, 3.0)]
    groups = group_runs(runs)
    assert {k: len(v) for k, v in groups.items()} == {"a (cpu, 1 thread)": 2, "a (cpu, 2 threads)": 1, "b": 1}
    seconds = {row["group"]: row["seconds to grok"] for row in summary_table(groups)}
    assert seconds == {"a (cpu, 1 thread)": "1.1 [1.0, 1.2]", "a (cpu, 2 threads)": "0.5 [0.5, 0.5]",
                       "b": "3.0 [3.0, 3.0]"}


def test_results_leave_out_seconds_pooled_over_thread_counts(tmp_path):
    store = tmp_path / "s.sqlite"
    _finished_store(store, [300], mixed=True)  # seed 0 on 1 thread, seed 1 on 2 (a sweep resumed with --threads)
    with Store(store, create=False) as st:
        (g,) = group_stats(st.runs())
    assert g["mixed"] == ["cpu, 1 thread", "cpu, 2 threads"] and g["km"]["seconds"] is None
    assert g["km"]["steps"]["median"] == 10  # the other columns stay
    table = stats_table([g], "seconds")
    assert table.endswith("seconds left out where a group's runs ran on different devices or thread counts: "
                          "method=sgd (cpu, 1 thread; cpu, 2 threads)")

"""TensorBoard scalars (train.tensorboard, egd export tensorboard) read back with TensorBoard's own reader, and
the long-format curves export (egd results --curves), each compared with metric rows written here by hand or
with the run's metrics.csv."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_train import make_cfg, read_rows

from egalitarian.cli import main
from egalitarian.errors import ConfigError
from egalitarian.sweep import Store, expand
from egalitarian.train import train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard shows for ``logdir`` (all of them: no reservoir sampling), by tag."""
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def as_stored(value: str | float) -> float:
    """A value as a TensorBoard scalar holds it: float32."""
    return float(np.float32(float(value)))


def expected_from_csv(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for step, _, split, metric, value in read_rows(run_dir / "metrics.csv"):
        out.setdefault(f"{split}/{metric}", []).append((step, as_stored(value)))
    return out


# ------------------------------------------------------------------------------------- train.tensorboard


def test_tensorboard_scalars_are_the_metrics_csv(tmp_path):
    tb = tmp_path / "tb"
    cfg = make_cfg(max_epochs=3, stop_after_grok=False, tensorboard=str(tb))
    cfg["diagnostics"] = ["spectrum"]
    train(cfg, tmp_path / "run")
    got, want = scalars(tb), expected_from_csv(tmp_path / "run")
    assert {"test/acc", "test/loss", "train/acc", "train/loss", "diag/cond.layers.0.weight"} <= set(want)
    assert got == want
    assert [s for s, _ in got["test/acc"]] == [0, 3, 6, 9]  # step = optimizer step (3 per epoch)
    # bookkeeping: the directory is in the resolved config only when set, and a resume may change it
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["train"]["tensorboard"] == str(tb)
    train({**cfg, "train": {**cfg["train"], "max_epochs": 4, "tensorboard": str(tmp_path / "tb2")}},
          tmp_path / "run", resume=True)
    assert scalars(tmp_path / "tb2") == expected_from_csv(tmp_path / "run")  # the earlier rows too


def test_a_resumed_run_hides_what_the_interrupted_one_logged_after_its_checkpoint(tmp_path):
    """A crash after logging epoch 4 but before checkpointing it: the resumed run's TensorBoard shows
    exactly its metrics.csv (purge_step = 0 and the rows so far), not the orphaned epoch-4 points."""
    tb, run = tmp_path / "tb", tmp_path / "run"
    cfg = lambda epochs: make_cfg(max_epochs=epochs, stop_after_grok=False, tensorboard=str(tb))  # noqa: E731
    train(cfg(2), run)
    shutil.copy(run / "checkpoint.pt", tmp_path / "epoch2.pt")
    train(cfg(4), run, resume=True)
    assert [s for s, _ in scalars(tb)["test/acc"]] == [0, 3, 6, 9, 12]
    shutil.copy(tmp_path / "epoch2.pt", run / "checkpoint.pt")  # the state the crashed process last saved
    time.sleep(1.1)  # event files are read in name order, and their names start with the second they were made
    train(cfg(3), run, resume=True)
    got = scalars(tb)
    assert [s for s, _ in got["test/acc"]] == [0, 3, 6, 9]
    assert got == expected_from_csv(run)


def test_without_the_package_tensorboard_is_a_config_error_naming_the_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` raises ImportError
    with pytest.raises(ConfigError, match=r"train\.tensorboard = '.*tb': needs the tensorboard package: "
                                          r"pip install 'egalitarian\[tensorboard\]'"):
        train(make_cfg(tensorboard=str(tmp_path / "tb")), tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()  # nothing was made
    code = main(["run", "--config", "mod-add-p97", "--out", str(tmp_path / "r"), "--set",
                 f"train.tensorboard='{tmp_path / 'tb'}'"])
    assert code == 2 and "pip install 'egalitarian[tensorboard]'" in capsys.readouterr().err


def test_tensorboard_must_be_a_string(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.tensorboard = 1: must be of type str"):
        train(make_cfg(tensorboard=1), tmp_path)


# ---------------------------------------------------------------------------------- a store, filled by hand

BASE = {
    "task": {"name": "modular", "p": 7},
    "model": {"name": "mlp", "hidden": 8},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "train": {"max_epochs": 2, "batch_size": 8},
}

ROWS = {  # (lr, seed) -> the run's metric rows (None: a NaN, as the store reads it back)
    (0.1, 0): [(0, 0, "test", "acc", 0.25), (4, 1, "test", "acc", 0.5), (4, 1, "train", "loss", 1.5)],
    (0.1, 1): [(0, 0, "test", "acc", 0.125), (4, 1, "test", "acc", 0.75)],
    (0.2, 0): [(0, 0, "test", "acc", 0.0), (4, 1, "train", "loss", None)],
}


def _store(path: Path):
    """Sweep "a" (lr × seed; three runs done, one pending) and sweep "b" (lr 0.3, no seed; done)."""
    runs = expand(BASE, {"optimizer.lr": [0.1, 0.2], "seed": [0, 1]})
    other = expand(BASE, {"optimizer.lr": [0.3]})
    with Store(path) as st:
        st.add("a", runs)
        st.add("b", other)
        for r in runs:
            key = (r.params["optimizer.lr"], r.params["seed"])
            if key in ROWS:
                st.claim([r.id], "w")
                st.finish(r.id, "w", {"grokked": False}, ROWS[key])
        st.claim([other[0].id], "w")
        st.finish(other[0].id, "w", {"grokked": False}, [(2, 1, "val", "acc", 1.0)])
    return runs, other


def test_curves_csv_by_hand(tmp_path, capsys):
    runs, other = _store(tmp_path / "s.sqlite")
    out = tmp_path / "curves.csv"
    assert main(["results", str(tmp_path / "s.sqlite"), "--curves", str(out)]) == 0
    assert f"curves: {out}  (8 rows of 4 finished runs)" in capsys.readouterr().out
    ids = {(r.params["optimizer.lr"], r.params["seed"]): (r.id, r.group) for r in runs}
    a0, a1, b0 = ids[(0.1, 0)], ids[(0.1, 1)], ids[(0.2, 0)]
    b = (other[0].id, other[0].group)
    want = [
        "run_id,label,group,optimizer.lr,seed,step,epoch,split,metric,value",
        f"{a0[0]},optimizer.lr=0.1,{a0[1]},0.1,0,0,0,test,acc,0.25",
        f"{a0[0]},optimizer.lr=0.1,{a0[1]},0.1,0,4,1,test,acc,0.5",
        f"{a0[0]},optimizer.lr=0.1,{a0[1]},0.1,0,4,1,train,loss,1.5",
        f"{a1[0]},optimizer.lr=0.1,{a1[1]},0.1,1,0,0,test,acc,0.125",
        f"{a1[0]},optimizer.lr=0.1,{a1[1]},0.1,1,4,1,test,acc,0.75",
        f"{b0[0]},optimizer.lr=0.2,{b0[1]},0.2,0,0,0,test,acc,0.0",
        f"{b0[0]},optimizer.lr=0.2,{b0[1]},0.2,0,4,1,train,loss,nan",
        f"{b[0]},optimizer.lr=0.3,{b[1]},0.3,,2,1,val,acc,1.0",  # sweep "b" has no seed parameter
    ]
    assert out.read_text().splitlines() == want
    assert a0[1] == a1[1] != b0[1]  # the group: the seeds of one setting share it
    rows = list(csv.DictReader(out.open()))
    assert math.isnan(float(rows[6]["value"]))
    assert not list(tmp_path.glob(".curves.csv.*.tmp"))  # written atomically, nothing left over


def test_curves_of_a_sweep_file_are_its_runs_only(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _store(Path("s.sqlite"))
    Path("a.toml").write_text(
        '[base]\ntask = {name = "modular", p = 7}\nmodel = {name = "mlp", hidden = 8}\n'
        'optimizer = {name = "sgd", lr = 0.1}\ntrain = {max_epochs = 2, batch_size = 8}\n'
        '[sweep]\nstore = "s.sqlite"\n[grid]\n"optimizer.lr" = [0.1]\nseed = [0, 1]\n'
    )
    assert main(["results", "a.toml", "--curves", "c.csv"]) == 0
    lines = Path("c.csv").read_text().splitlines()
    assert len(lines) == 1 + 5 and {ln.split(",")[1] for ln in lines[1:]} == {"optimizer.lr=0.1"}


def test_export_tensorboard_one_run_per_finished_run(tmp_path, capsys):
    _store(tmp_path / "s.sqlite")
    out = tmp_path / "tb"
    assert main(["export", "tensorboard", str(tmp_path / "s.sqlite"), str(out)]) == 0
    assert f"tensorboard: 4 runs written to {out}" in capsys.readouterr().out
    dirs = sorted(str(p.relative_to(out)) for p in out.glob("*/*"))
    assert dirs == ["optimizer.lr=0.1/seed=0", "optimizer.lr=0.1/seed=1", "optimizer.lr=0.2/seed=0",
                    "optimizer.lr=0.3/seed=0"]  # sweep "b" sets no seed: its config's train.seed, 0
    got = scalars(out / "optimizer.lr=0.1" / "seed=0")
    assert got == {"test/acc": [(0, 0.25), (4, 0.5)], "train/loss": [(4, 1.5)]}
    got = scalars(out / "optimizer.lr=0.2" / "seed=0")
    assert got["test/acc"] == [(0, 0.0)] and math.isnan(got["train/loss"][0][1])
    assert scalars(out / "optimizer.lr=0.1" / "seed=1")["test/acc"] == [(0, 0.125), (4, 0.75)]
    # again: nothing is rewritten
    assert main(["export", "tensorboard", str(tmp_path / "s.sqlite"), str(out)]) == 0
    text = capsys.readouterr().out
    assert "0 runs written" in text and "4 already there" in text
    assert len(list((out / "optimizer.lr=0.1" / "seed=0").iterdir())) == 1
    assert not list(out.rglob(".export-*"))


def test_export_of_a_trained_run_matches_its_metrics_csv(tmp_path):
    """A run trained the way a sweep worker trains it: the exported scalars are the run's metrics.csv."""
    from egalitarian.sweep.execute import execute_run
    from egalitarian.sweep.export import export_tensorboard

    (run,) = expand(BASE, {"seed": [3]})
    summary, rows = execute_run(run.config, tmp_path / "run")
    with Store(tmp_path / "s.sqlite") as st:
        st.add("x", [run])
        st.claim([run.id], "w")
        st.finish(run.id, "w", summary, rows)
        assert export_tensorboard(st, tmp_path / "tb") == (1, 0)
    assert scalars(tmp_path / "tb" / "(all)" / "seed=3") == expected_from_csv(tmp_path / "run")


def test_export_run_names_are_safe_paths():
    from egalitarian.sweep.export import run_dir_name

    assert run_dir_name("method=egd optimizer.lr=0.5", 0) == "method=egd,optimizer.lr=0.5/seed=0"
    assert run_dir_name('optimizer.whiten=["a/b", "c"]', 2) == "optimizer.whiten=[_a_b_,,_c_]/seed=2"
    assert run_dir_name("(all)", 1) == "(all)/seed=1"


def test_export_without_the_package_is_a_config_error(tmp_path, monkeypatch, capsys):
    _store(tmp_path / "s.sqlite")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert main(["export", "tensorboard", str(tmp_path / "s.sqlite"), str(tmp_path / "tb")]) == 2
    assert "egd export tensorboard: needs the tensorboard package" in capsys.readouterr().err
    assert not (tmp_path / "tb").exists()


# ------------------------------------------------------------------------------- the W&B recipe of the docs


def test_the_wandb_recipe_in_the_docs_logs_every_evaluation(tmp_path, monkeypatch):
    """docs/TRACKING.md's W&B example, run as written against a stand-in `wandb` module (no dependency), on a
    small config: one `log` per evaluation, keys split/metric, step = optimizer step, the values of metrics.csv."""
    import types

    import egalitarian.config

    text = (Path(__file__).parents[1] / "docs" / "TRACKING.md").read_text()
    code = next(block for block in text.split("```python\n")[1:] if "wandb.init" in block).split("```")[0]
    logged, runs = [], []

    class Run:
        def __init__(self, **kwargs):
            self.init, self.summary, self.finished = kwargs, {}, False
            runs.append(self)

        def log(self, data, step):
            logged.append((step, data))

        def finish(self):
            self.finished = True

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: Run(**kw)))
    small = {**make_cfg(max_epochs=2, stop_after_grok=False), "name": "small"}
    monkeypatch.setattr(egalitarian.config, "load_config", lambda name: small)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/TRACKING.md", "exec"), {})
    (run,) = runs
    assert run.finished and run.init["mode"] == "offline" and run.summary["steps"] == 6
    want: dict[int, dict[str, float]] = {}
    for step, _, split, metric, value in read_rows(tmp_path / "runs" / "mod-add-p97-egd-wandb" / "metrics.csv"):
        want.setdefault(step, {})[f"{split}/{metric}"] = float(value)
    assert logged == list(want.items())

"""The shipped spec files (examples/ and the experiments' specs): every sweep file loads and expands, every tune spec
loads and plans a valid run for each of its methods; examples/README.md describes every file of examples/, and the
plain PyTorch example runs; every examples/ path the docs name exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from egalitarian.config import resolve
from egalitarian.methods import OPTIMIZERS
from egalitarian.sweep import load_sweep
from egalitarian.tune import dimensions, load_tune, plan, trial_values
from egalitarian.tuned import load_handcheck, load_robustness, load_transfer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
SPECS = EXAMPLES + sorted((ROOT / "experiments").glob("*/*.toml"))
FOLLOWUP_KINDS = ("robustness", "transfer", "handcheck")
KIND = {p: next((k for k in FOLLOWUP_KINDS if k in doc), "tune" if isinstance(doc.get("tune"), dict) else "sweep")
        for p in SPECS for doc in [tomllib.loads(p.read_text())]}
TUNES = [p for p in SPECS if KIND[p] == "tune"]
FOLLOWUPS = [p for p in SPECS if KIND[p] in FOLLOWUP_KINDS]  # egd robustness / transfer / handcheck specs
SWEEPS = [p for p in SPECS if KIND[p] == "sweep"]


def test_there_are_example_sweeps():
    assert (ROOT / "examples" / "egd-vs-sgd.toml") in EXAMPLES


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_example_sweep_loads(path):
    sweep = load_sweep(path)
    assert sweep.runs and len({r.id for r in sweep.runs}) == len(sweep.runs)


@pytest.mark.parametrize("path", TUNES, ids=[p.name for p in TUNES])
def test_every_example_tune_spec_plans_a_valid_run_per_method(path):
    spec = load_tune(path)
    assert spec.contenders and set(spec.tuning_seeds).isdisjoint(spec.reporting_seeds)
    ids = set()
    for c in spec.contenders:  # each method at the low end of each range it has (1 x its own value if relative)
        params = {d.field: len(d.choices) - 1 if d.choices else 1.0 if d.relative else d.low  # a choice: its last
                  for d in dimensions(spec, c)}
        values = trial_values(spec, c, params)
        (run,) = plan(spec, c, values, spec.tuning_seeds[:1])
        cfg = resolve(run.config, OPTIMIZERS)  # unknown methods, fields or values raise here
        for fld, v in values.items():
            section, key = fld.split(".")
            assert cfg[section][key] == (v if isinstance(v, str) else pytest.approx(v))
        ids.add(run.id)
    assert len(ids) == len(spec.contenders)  # no two methods of a leaderboard are the same run


@pytest.mark.parametrize("path", FOLLOWUPS, ids=[p.name for p in FOLLOWUPS])
def test_every_robustness_transfer_and_handcheck_spec_loads(path):
    {"robustness": load_robustness, "transfer": load_transfer, "handcheck": load_handcheck}[KIND[path]](path)


def test_egd_vs_sgd_is_the_sweep_the_docs_describe():
    sweep = load_sweep(ROOT / "examples" / "egd-vs-sgd.toml")
    assert sweep.name == "egd-vs-sgd" and sweep.store == Path("sweeps/egd-vs-sgd.sqlite")
    assert sweep.baseline == "method=sgd"
    assert sorted({r.label for r in sweep.runs}) == ["method=egd", "method=sgd"] and len(sweep.runs) == 10


def test_examples_readme_describes_every_example():
    readme = (ROOT / "examples" / "README.md").read_text()
    files = [p.name for p in (ROOT / "examples").iterdir() if p.name != "README.md"]
    assert files and sorted(f for f in files if f"]({f})" not in readme) == []


def test_the_plain_pytorch_example_runs_and_learns():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "plain_pytorch.py")], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "EGD" in proc.stdout.splitlines()[0]  # the routing: the hidden matrices went to EGD
    final = float(re.findall(r"test accuracy ([\d.]+)", proc.stdout)[-1])
    assert final > 0.5  # 10 classes: chance is 0.1


def test_every_examples_path_in_the_docs_exists():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "experiments").rglob("*.md")),
            *sorted((ROOT / "examples").glob("*.md")), *sorted((ROOT / "bench").glob("*.md"))]
    named = {m for d in docs for m in re.findall(r"examples/[\w.-]+\.toml", d.read_text())}
    assert named  # the docs do point at examples/
    assert sorted(n for n in named if not (ROOT / n).exists()) == []

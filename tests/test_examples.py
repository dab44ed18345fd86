"""The shipped example files: every sweep file loads and expands; every examples/ path the docs name exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from egalitarian.sweep import load_sweep

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def test_there_are_example_sweeps():
    assert (ROOT / "examples" / "egd-vs-sgd.toml") in EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_sweep_loads(path):
    if "tune" in tomllib.loads(path.read_text()):
        pytest.skip("a tune spec (egd tune), not a sweep file")
    sweep = load_sweep(path)
    assert sweep.runs and len({r.id for r in sweep.runs}) == len(sweep.runs)


def test_egd_vs_sgd_is_the_sweep_the_docs_describe():
    sweep = load_sweep(ROOT / "examples" / "egd-vs-sgd.toml")
    assert sweep.name == "egd-vs-sgd" and sweep.store == Path("sweeps/egd-vs-sgd.sqlite")
    assert sweep.baseline == "method=sgd"
    assert sorted({r.label for r in sweep.runs}) == ["method=egd", "method=sgd"] and len(sweep.runs) == 10


def test_every_examples_path_in_the_docs_exists():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = {m for d in docs for m in re.findall(r"examples/[\w.-]+\.toml", d.read_text())}
    assert named  # the docs do point at examples/
    assert sorted(n for n in named if not (ROOT / n).exists()) == []

"""The package's layering (docs/ARCHITECTURE.md): imports point down, leaves stay leaves.

Each check runs in a fresh interpreter, so what is imported is what the module itself pulls in.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import egalitarian

PKG = Path(egalitarian.__file__).parent

# Lower layers first: a module may import modules of its own layer or lower ones, never higher ones.
LAYERS = [
    {"errors", "io", "progress", "rundir", "linalg", "distributed", "data", "tracking"},
    {"tasks", "models", "losses", "config", "grokking", "transforms", "schedules"},
    {"optim"},
    {"baselines", "routing"},
    {"methods"},
    {"build", "diagnostics"},
    {"train"},
    {"sweep"},
    {"report", "tune", "tuned"},
    {"reproduce", "demo"},
    {"cli"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _top(module: str) -> str:
    """``egalitarian.sweep.spec`` -> ``sweep``; ``egalitarian`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _package_imports(path: Path) -> set[str]:
    """Top-level package modules imported anywhere in ``path`` (also inside functions)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    here = list(rel.parts[:-1])  # the package the module is in (for __init__.py: the package itself)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1] if node.level > 1 else here
                mod = ".".join(base + ([node.module] if node.module else []))
                if not node.module:  # from . import io (a module) or from . import __version__ (an attribute)
                    pkg_dir = PKG.parent.joinpath(*mod.split("."))
                    out |= {_top(f"{mod}.{a.name}") if (pkg_dir / a.name).is_dir()
                            or (pkg_dir / f"{a.name}.py").is_file() else _top(mod) for a in node.names}
                    continue
            else:
                mod = node.module or ""
            if mod.startswith("egalitarian"):
                out.add(_top(mod))
        elif isinstance(node, ast.Import):
            out |= {_top(a.name) for a in node.names if a.name.startswith("egalitarian")}
    return out - {"__init__"}


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "recipes" not in p.parts)


def test_every_module_has_a_layer():
    names = {_top("egalitarian." + ".".join(p.relative_to(PKG).with_suffix("").parts)) for p in _modules()}
    assert names - {"__init__"} <= set(LEVEL), sorted(names - {"__init__"} - set(LEVEL))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path: Path):
    me = _top("egalitarian." + ".".join(path.relative_to(PKG).with_suffix("").parts))
    if me == "__init__":
        return
    up = sorted(m for m in _package_imports(path) if m != me and LEVEL[m] > LEVEL[me])
    assert not up, f"{path.relative_to(PKG)} ({me}, layer {LEVEL[me]}) imports higher layers: {up}"


def test_no_module_imports_the_cli():
    users = [str(p.relative_to(PKG)) for p in _modules() if p.name != "cli.py" and "cli" in _package_imports(p)]
    assert users == []


def _imported_after(code: str) -> set[str]:
    listing = "print(json.dumps(sorted(m for m in sys.modules if m.startswith('egalitarian'))))"
    probe = f"import sys, json\n{code}\n{listing}"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


# Inside the reproduce package: base and the toy model first (the toy model is numpy only, a leaf), then the artifacts'
# modules (table5 reads the stores of paper_tables' sweeps), then the registry.
REPRODUCE_LAYERS = [{"base", "toy_model"}, {"paper_tables", "table8", "appf", "fig6"}, {"table5"}, {"__init__"}]
REPRODUCE_LEVEL = {name: i for i, layer in enumerate(REPRODUCE_LAYERS) for name in layer}


def _reproduce_imports(path: Path) -> set[str]:
    """The modules of the reproduce package that ``path`` (a module of it) imports: ``from .x import``, ``from . import
    x``, ``egalitarian.reproduce.x``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("egalitarian.reproduce."):
            out.add(node.module.split(".")[2])
    return out


@pytest.mark.parametrize("path", sorted((PKG / "reproduce").glob("*.py")), ids=lambda p: p.name)
def test_reproduce_modules_import_down(path: Path):
    me = path.stem
    assert me in REPRODUCE_LEVEL, f"reproduce/{path.name} has no layer in REPRODUCE_LAYERS"
    up = sorted(m for m in _reproduce_imports(path) if m != me and REPRODUCE_LEVEL[m] >= REPRODUCE_LEVEL[me])
    assert not up, f"reproduce/{path.name} imports its own layer or higher ones: {up}"


def test_the_toy_model_is_numpy_only():
    imports = set()
    for node in ast.walk(ast.parse((PKG / "reproduce" / "toy_model.py").read_text())):
        if isinstance(node, ast.ImportFrom):
            imports.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            imports |= {a.name for a in node.names}
    assert imports <= {"__future__", "math", "collections.abc", "numpy", "..errors"}, sorted(imports)


def test_listing_the_artifacts_imports_none_of_them():
    loaded = _imported_after("import egalitarian.cli; egalitarian.cli.build_parser()")
    assert {m for m in loaded if m.startswith("egalitarian.reproduce")} == {"egalitarian.reproduce",
                                                                            "egalitarian.reproduce.base"}
    assert not loaded & {"egalitarian.sweep", "egalitarian.train", "egalitarian.report"}


def test_report_package_does_not_load_the_trainer():
    loaded = _imported_after("import egalitarian.report; from egalitarian.report import load_runs")
    assert "egalitarian.report" in loaded
    assert not loaded & {"egalitarian.train", "egalitarian.build", "egalitarian.methods", "egalitarian.cli"}


@pytest.mark.slow
def test_a_run_without_diagnostics_does_not_import_them(tmp_path: Path):
    code = (
        "from egalitarian.cli import main\n"
        f"assert main(['run', '--config', 'mod-add-p97', '--method', 'sgd', '--out', {str(tmp_path / 'r')!r},"
        " '--set', 'train.max_epochs=1', '--set', 'train.progress=\"off\"']) == 0"
    )
    loaded = _imported_after(code)
    assert "egalitarian.train" in loaded
    assert "egalitarian.diagnostics" not in loaded
    assert (tmp_path / "r" / "summary.json").exists()

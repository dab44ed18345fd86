"""Loading a script that is not a package module (an experiment's or an example's) for its tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def load_script(path: Path, name: str | None = None) -> ModuleType:
    """The module of the Python file ``path``, executed afresh (named ``name``, default the file's stem)."""
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

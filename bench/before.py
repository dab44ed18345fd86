"""The package as it was at a git revision, importable beside today's: ``load("8f8a1af")`` is a module
``egalitarian_at_8f8a1af``, for timing today's code against an earlier one in the same process (A B A B).

The tree ``src/egalitarian`` of that revision is written (``git archive``) to a temporary folder under a new package
name; the package imports itself relatively, so the copy uses its own modules throughout.  Timings only: nothing
here is imported by the package or the tests.
"""

from __future__ import annotations

import atexit
import importlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load(rev: str) -> ModuleType:
    """The package ``egalitarian`` at git revision ``rev`` of this checkout, imported as ``egalitarian_at_<rev>``."""
    name = "egalitarian_at_" + "".join(c if c.isalnum() else "_" for c in rev)
    if name in sys.modules:
        return sys.modules[name]
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "src/egalitarian"],
                         check=True, capture_output=True).stdout
    where = Path(tempfile.mkdtemp(prefix="egd-before-"))
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(where, filter="data")
    (where / "src" / "egalitarian").rename(where / name)
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(where))


def modules(rev: str, *names: str) -> list[ModuleType]:
    """Submodules of the package at ``rev`` (``modules(rev, "build", "config")``)."""
    pkg = load(rev)
    return [importlib.import_module(f"{pkg.__name__}.{n}") for n in names]

"""The torch floor: what a torch without ``torch.optim.Muon`` (before 2.9) still runs, and that the floor is stated
the same everywhere (pyproject, Makefile's floor check, README).

``Muon`` is simulated away (deleted from ``torch.optim`` for the test), so these run on any torch; the floor itself
is run by ``make floor`` (a separate venv with the oldest torch declared).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from egalitarian import baselines
from egalitarian.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_muon(monkeypatch):
    """torch as before 2.9: no ``torch.optim.Muon``."""
    monkeypatch.delattr(torch.optim, "Muon", raising=False)
    monkeypatch.setattr(torch, "__version__", "2.7.1")


def test_muon_without_torch_muon_is_one_line_naming_the_torch_needed(no_muon):
    w = torch.zeros(3, 2, requires_grad=True)
    with pytest.raises(ImportError) as e:
        baselines.MuonWithAdamW([w], [])
    assert str(e.value) == "MuonWithAdamW needs torch >= 2.9 (torch.optim.Muon); this is torch 2.7.1"
    with pytest.raises(ImportError, match=r"^MuonFloat32 needs torch >= 2\.9 \(torch\.optim\.Muon\); this is torch"):
        baselines.MuonFloat32([w])
    # everything else of the module works: a baseline transform in front of SGD
    opt = baselines.grokfast_ema(alpha=0.5, lamb=1.0)
    out, _ = opt.update(torch.ones(2), opt.init(torch.zeros(2)), torch.zeros(2))
    assert out.tolist() == [2.0, 2.0]  # the first step: (1 + λ)·g


def test_the_cli_says_it_in_one_line_and_other_methods_run(no_muon, tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[task]\nname = "modular"\np = 7\n\n[model]\nname = "mlp"\nhidden = 8\n\n'
                   '[optimizer]\nname = "egd"\nlr = 0.5\n\n[train]\nmax_epochs = 1\nthreads = 1\nprogress = "off"\n')
    code = main(["run", "--config", str(cfg), "--set", "optimizer.name=muon", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "MuonWithAdamW needs torch >= 2.9 (torch.optim.Muon); this is torch 2.7.1" in err[0]
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "e")]) == 0  # EGD itself is unaffected


def test_the_package_imports_on_a_torch_without_muon():
    """A fresh interpreter whose torch has no Muon imports every module that names it."""
    code = ("import torch; del torch.optim.Muon; import egalitarian.baselines, egalitarian.methods, egalitarian.cli; "
            "print(egalitarian.methods.OPTIMIZERS['muon'].name)")
    if not hasattr(torch.optim, "Muon"):  # an old torch already: nothing to delete
        code = code.replace("del torch.optim.Muon; ", "")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)  # a hang guard
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "muon"  # still registered: it fails when built, not when listed


def test_the_floor_is_stated_the_same_everywhere():
    pyproject = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'"torch>=([\d.]+)"', pyproject).group(1)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^FLOOR_TORCH\s*:?=\s*([\d.]+)$", makefile, re.M).group(1).startswith(floor)
    pinned = re.search(r"^torch==([\d.]+)", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    readme = (ROOT / "README.md").read_text()
    assert f"torch {floor}" in readme and f"torch {pinned}" in readme  # "tested with torch X (floor) and Y (CI)"
    assert baselines.MUON_TORCH == "2.9"

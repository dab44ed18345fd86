"""examples/lightning_egd.py: EGD and EGD+AdamW under PyTorch Lightning (skipped when lightning is absent)."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

L = pytest.importorskip("lightning")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lightning_egd.py"


@pytest.fixture(scope="module")
def ex():
    spec = importlib.util.spec_from_file_location("lightning_egd", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice (num_workers, litlogger, deprecations) is not ours
        yield


def _fit(ex, optimizer: str, lr: float, epochs: int, ckpt: Path | None = None, resume: Path | None = None, **kw):
    torch.manual_seed(0)
    data = ex.loader()
    model = ex.EGDClassifier(optimizer, lr=lr, warmup=5, total_steps=2 * len(data), **kw)
    trainer = ex.make_trainer(epochs)
    trainer.fit(model, train_dataloaders=data, ckpt_path=str(resume) if resume else None)
    if ckpt is not None:
        trainer.save_checkpoint(str(ckpt))
    return model, trainer, data


@pytest.mark.parametrize("optimizer,lr", [("egd", 0.05), ("egd-adamw", 1e-2)])
def test_lightning_trains_with_egd_and_its_schedule(ex, optimizer, lr):
    model, trainer, data = _fit(ex, optimizer, lr, epochs=2)
    opt = trainer.optimizers[0]
    assert type(opt).__name__ == {"egd": "EGD", "egd-adamw": "Preconditioned"}[optimizer]
    x, y = data.dataset.tensors
    torch.manual_seed(0)
    start = ex.EGDClassifier(optimizer, lr=lr)
    with torch.no_grad():
        before = float(torch.nn.functional.cross_entropy(start(x), y))
        after = float(torch.nn.functional.cross_entropy(model(x), y))
    assert after < 0.8 * before
    # the scheduler stepped every batch: at the end of the cosine the lr is 0
    steps = 2 * len(data)
    assert trainer.global_step == steps
    assert opt.param_groups[0]["lr"] == pytest.approx(lr * ex.warmup_cosine(5, steps)(steps), abs=1e-12)


@pytest.mark.parametrize("optimizer,lr,kw", [("egd", 0.05, {"scale": "muon"}), ("egd-adamw", 1e-2, {})])
def test_lightning_checkpoint_resumes_bit_identically(ex, optimizer, lr, kw, tmp_path):
    straight, _, _ = _fit(ex, optimizer, lr, epochs=2, **kw)
    ckpt = tmp_path / "epoch1.ckpt"
    _fit(ex, optimizer, lr, epochs=1, ckpt=ckpt, **kw)
    resumed, _, _ = _fit(ex, optimizer, lr, epochs=2, resume=ckpt, **kw)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_example_main_runs(ex, capsys):
    loss = ex.main(["--max-epochs", "2", "--clip", "1.0"])
    assert loss < 1.0
    assert "egd: final train loss" in capsys.readouterr().out

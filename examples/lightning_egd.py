"""EGD in PyTorch Lightning: ``configure_optimizers`` returns an EGD (or EGD+AdamW) optimizer and an LR schedule.

    pip install lightning            # not a dependency of egalitarian; `pip install -e ".[dev]"` has it
    python examples/lightning_egd.py                       # EGD with Nesterov momentum, warm-up + cosine
    python examples/lightning_egd.py --optimizer egd-adamw # EGD+AdamW: whitened gradients into torch's AdamW
    python examples/lightning_egd.py --scale rms --lr 1e-2 # EGD at AdamW's update RMS (Moonlight's convention)

Lightning calls ``optimizer.step(closure)``, which both optimizers accept (the closure runs forward and backward,
as for every torch optimizer); ``Trainer(gradient_clip_val=...)`` clips before it (for a whitened matrix that
changes nothing, see docs/INTEGRATIONS.md); checkpoints hold ``optimizer.state_dict()`` and resume bit-identically.
The task is a small synthetic one (labels of a random teacher network) so that the file runs anywhere in seconds.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from egalitarian import EGD, Preconditioned


def teacher_data(n: int = 1024, dim: int = 16, classes: int = 4, seed: int = 0) -> TensorDataset:
    """Inputs x ~ N(0, I) labelled by a random two-layer teacher network."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen)
    w1, w2 = torch.randn(dim, 32, generator=gen), torch.randn(32, classes, generator=gen)
    return TensorDataset(x, (torch.tanh(x @ w1) @ w2).argmax(dim=1))


def warmup_cosine(warmup: int, total: int):
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return factor


class EGDClassifier(L.LightningModule):
    def __init__(self, optimizer: str = "egd", lr: float = 0.05, momentum: float = 0.9, scale: str = "none",
                 warmup: int = 10, total_steps: int = 200, dim: int = 16, hidden: int = 64, classes: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        matrices = [p for p in self.parameters() if p.ndim >= 2]
        vectors = [p for p in self.parameters() if p.ndim < 2]
        if hp.optimizer == "egd":
            # EGD whitens the matrices' gradients; the biases take the plain (momentum) SGD step.  Any EGD keyword
            # is also a group key: momentum_position="before" is Muon's order, row_blocks=3 a fused QKV matrix.
            opt = EGD([{"params": matrices}, {"params": vectors, "whiten": False}], lr=hp.lr,
                      momentum=hp.momentum, nesterov=hp.momentum > 0, scale=hp.scale)
        elif hp.optimizer == "egd-adamw":
            # EGD+AdamW: the whitened matrix gradients (and the raw bias gradients) go into torch's AdamW
            opt = Preconditioned([{"params": matrices}, {"params": vectors, "precondition": False}],
                                 torch.optim.AdamW, lr=hp.lr, weight_decay=0.01)
        else:
            raise ValueError(f"optimizer = {hp.optimizer!r}: must be 'egd' or 'egd-adamw'")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(hp.warmup, hp.total_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def make_trainer(max_epochs: int, **kwargs) -> L.Trainer:
    """A quiet CPU trainer (no logger files, no progress bar)."""
    defaults = dict(accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(**{**defaults, **kwargs})


def loader(batch_size: int = 64, seed: int = 0) -> DataLoader:
    return DataLoader(teacher_data(seed=seed), batch_size=batch_size, shuffle=False)


def main(argv: Sequence[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optimizer", choices=["egd", "egd-adamw"], default="egd")
    ap.add_argument("--lr", type=float, default=None, help="default: 0.05 for egd, 1e-2 for egd-adamw")
    ap.add_argument("--scale", choices=["none", "muon", "rms"], default="none", help="EGD's step-size convention")
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--clip", type=float, default=None, help="Trainer(gradient_clip_val=...)")
    args = ap.parse_args(argv)
    L.seed_everything(0, verbose=False)
    data = loader()
    lr = args.lr if args.lr is not None else (0.05 if args.optimizer == "egd" else 1e-2)
    model = EGDClassifier(args.optimizer, lr=lr, scale=args.scale, total_steps=args.max_epochs * len(data))
    trainer = make_trainer(args.max_epochs, gradient_clip_val=args.clip)
    trainer.fit(model, train_dataloaders=data)
    with torch.no_grad():
        x, y = data.dataset.tensors
        loss = float(nn.functional.cross_entropy(model(x), y))
        acc = float((model(x).argmax(1) == y).float().mean())
    print(f"{args.optimizer}: final train loss {loss:.4f}, accuracy {acc:.3f}")
    return loss


if __name__ == "__main__":
    main()

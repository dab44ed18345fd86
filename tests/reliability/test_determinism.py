"""Same config and seed → identical metrics and parameters on CPU, bit for bit; a different seed differs."""

from __future__ import annotations

import torch

from egalitarian.train import train


def _cfg(method: dict, seed: int = 0) -> dict:
    return {
        "task": {"name": "modular", "p": 13, "op": "mul", "train_frac": 0.6, "split_seed": seed},
        "model": {"name": "mlp", "hidden": 32},
        "optimizer": method,
        "train": {"batch_size": 16, "max_epochs": 4, "seed": seed, "shuffle_seed": seed, "threads": 1,
                  "progress": "off", "train_eval": "full"},
    }


METHODS = [
    {"name": "egd_rsvd", "lr": 0.3, "rank": 8, "momentum": 0.5},  # a random sketch every step
    {"name": "egd_adamw", "lr": 1e-2},
    {"name": "grokfast", "lr": 1e-2},
    {"name": "muon", "lr": 0.02, "adamw_lr": 1e-2},
]


def test_same_seed_is_bitwise_identical_and_another_seed_is_not(tmp_path):
    for i, method in enumerate(METHODS):
        a, b, c = (tmp_path / f"{i}{k}" for k in "abc")
        train(_cfg(method), a)
        train(_cfg(method), b)
        train(_cfg(method, seed=1), c)
        assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes(), method["name"]
        assert (a / "metrics.csv").read_bytes() != (c / "metrics.csv").read_bytes(), method["name"]
        pa, pb = (torch.load(d / "checkpoint.pt", weights_only=False)["model"] for d in (a, b))
        assert all(torch.equal(pa[k], pb[k]) for k in pa)

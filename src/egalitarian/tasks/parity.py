"""Sparse parity ``Parity(n, k)``: y = ∏_{i∈S} x_i for a hidden subset S of k of the n input bits.

Conventions (those of the EGD paper's official ``main-results/parity.py``)
-------------------------------------------------------------------------
* Inputs ``x ∈ {−1, +1}^n`` are uniform float32; the target is the float32 ±1 product of the secret bits
  (``target = "sign"``, ``num_outputs = 1``). This equals the paper's ``(−1)^{Σ_S x}`` on ``{0, 1}^n`` up
  to relabelling bits.
* Test samples are fresh draws, not a split of one table (official code: 2000 train, 10000 test).
* Randomness comes from one ``torch.Generator().manual_seed(seed)``, used in this order: the secret (only for
  ``secret="random"``), then the training inputs, then the test inputs.
* ``secret="first"`` takes bits ``0..k-1`` (as the official code); ``"random"`` draws k distinct indices
  (stored sorted in ``info["secret"]``).
* With ``val_frac > 0`` the last ``int(n_train * val_frac)`` training draws become validation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError, check_choice, check_fraction, check_int
from .base import TaskData, val_count, with_val_split

SECRETS = ("first", "random")


def _draw(m: int, n: int, generator: torch.Generator) -> Tensor:
    """`m` uniform samples from {−1, +1}^n as float32."""
    return (torch.randint(0, 2, (m, n), generator=generator) * 2 - 1).float()


def parity(n: int = 50, k: int = 4, n_train: int = 2000, n_test: int = 10000, secret: str = "first", seed: int = 0,
           val_frac: float = 0.0) -> TaskData:
    """Sparse parity of k secret bits among n uniform ±1 bits, fresh test draws (EGD paper §5.1).

    Args:
        n: number of input bits (>= 1).
        k: size of the secret subset, 1 <= k <= n.
        n_train, n_test: number of training and test samples (>= 1 each).
        secret: ``"first"`` (bits 0..k-1) or ``"random"`` (k distinct bits drawn with `seed`).
        seed: seed of the generator for the secret and all samples.
        val_frac: fraction of the training samples moved to a validation split, in [0, 1).
    """
    n = check_int("n", n, low=1, error=ConfigError)
    k = check_int("k", k, low=1, high=n, error=ConfigError)
    n_train = check_int("n_train", n_train, low=1, error=ConfigError)
    n_test = check_int("n_test", n_test, low=1, error=ConfigError)
    secret = check_choice("secret", secret, SECRETS, ConfigError)
    seed = check_int("seed", seed, low=0, error=ConfigError)
    val_frac = check_fraction("val_frac", val_frac, low_inclusive=True, error=ConfigError)
    val_count(n_train, val_frac)  # fail before drawing if the validation split would be empty

    generator = torch.Generator().manual_seed(seed)
    if secret == "first":
        subset = list(range(k))
    else:
        subset = sorted(torch.randperm(n, generator=generator)[:k].tolist())
    x_train = _draw(n_train, n, generator)
    x_test = _draw(n_test, n, generator)
    y_train = x_train[:, subset].prod(dim=1)
    y_test = x_test[:, subset].prod(dim=1)
    info = {"n": n, "k": k, "n_train": n_train, "n_test": n_test, "secret_mode": secret, "secret": subset,
            "seed": seed, "val_frac": val_frac}
    return with_val_split(x_train, y_train, x_test, y_test, val_frac, input_dim=n, num_outputs=1, vocab_size=None,
                          target="sign", info=info)

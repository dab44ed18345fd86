"""Modular-arithmetic operation tables ``c = a ∘ b (mod p)`` (Power et al. 2022, "Grokking").

Conventions
-----------
* The dataset is the *full* table of ordered pairs, ``a ∈ [0, p)`` and ``b ∈ [b_min, p)``, in row-major order
  (``a`` slowest, like ``torch.cartesian_prod``). Division always uses ``b ∈ [1, p)`` (p·(p−1) equations,
  9312 for p = 97), and ``b_min = 1`` reproduces the Grokfast transformer table for any operation.
* Split: one permutation from ``torch.Generator().manual_seed(split_seed)``; the first
  ``n_train = int(N * train_frac)`` permuted pairs train (the EGD paper's code convention), the rest test.
  With ``val_frac > 0`` the last ``int(n_train * val_frac)`` of the training part become validation.
  All splits are disjoint and together cover every pair exactly once.
* Encodings:
  - ``"onehot"``: float32 ``(N, 2p)`` = one-hot(a) ‖ one-hot(b), the input of the EGD paper's 2-layer MLP.
  - ``"index"``: int64 ``(N, 2)`` = ``[a, p + b]``, the positions of the two ones of that vector.  The MLP
    computes exactly the same function from it, without multiplying by 2p − 2 zeros (the paper recipes use it).
  - ``"tokens"``: int64 ``(N, 4)`` = ``[a, OP, b, EQ]`` with ``OP = p`` and ``EQ = p + 1`` (vocabulary p + 2),
    the Power et al. / Grokfast decoder input; the model predicts ``c`` from the last position.
  - ``"tokens3"``: int64 ``(N, 3)`` = ``[a, b, EQ]`` with ``EQ = p`` (vocabulary p + 1), Nanda et al.'s (2023)
    input.
* Labels are int64 classes ``c ∈ [0, p)``; ``info["pairs_train"]`` etc. hold the int64 ``(n, 2)`` pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import ConfigError, check, check_choice, check_fraction, check_int
from .base import TaskData, val_count

Op = Callable[[Tensor, Tensor, int], Tensor]


def _div(a: Tensor, b: Tensor, p: int) -> Tensor:
    """``a · b⁻¹ mod p`` with Fermat inverses ``b⁻¹ = b^(p−2) mod p`` (p prime, b ≠ 0)."""
    inverse = torch.tensor([pow(v, p - 2, p) for v in range(p)], dtype=torch.int64)
    return (a * inverse[b]) % p


# Operands are already reduced to [0, p), so no intermediate exceeds p³ (no int64 overflow for any
# table that fits in memory).
OPS: dict[str, Op] = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,  # torch's % takes the sign of the divisor, like Python's
    "mul": lambda a, b, p: (a * b) % p,
    "div": _div,
    "x2+y2": lambda a, b, p: (a * a + b * b) % p,
    "x2+xy+y2": lambda a, b, p: (a * a + a * b + b * b) % p,
    "x3+xy": lambda a, b, p: ((a * a % p) * a + a * b) % p,
    "x2-y2": lambda a, b, p: (a * a - b * b) % p,
}

ENCODINGS = ("onehot", "index", "tokens", "tokens3")


def is_prime(n: int) -> bool:
    """Trial-division primality test (p is small: the table has p² rows)."""
    if n < 2:
        return False
    d = 2
    while d * d <= n:
        if n % d == 0:
            return False
        d += 1
    return True


def encode(pairs: Tensor, p: int, encoding: str) -> Tensor:
    """Encode int64 ``(n, 2)`` pairs ``(a, b)``: one-hot features, their indices, ``[a, OP, b, EQ]`` or
    ``[a, b, EQ]`` tokens."""
    a, b = pairs[:, 0], pairs[:, 1]
    if encoding == "onehot":
        return torch.cat(
            [torch.nn.functional.one_hot(a, p), torch.nn.functional.one_hot(b, p)], dim=1
        ).float()
    if encoding == "index":
        return torch.stack([a, p + b], dim=1)
    if encoding == "tokens3":
        return torch.stack([a, b, torch.full_like(a, p)], dim=1)
    op_token = torch.full_like(a, p)
    eq_token = torch.full_like(a, p + 1)
    return torch.stack([a, op_token, b, eq_token], dim=1)


def modular(p: int = 97, op: str = "add", train_frac: float = 0.5, split_seed: int = 0, encoding: str = "onehot",
            val_frac: float = 0.0, b_min: int = 0) -> TaskData:
    """Modular arithmetic c = a ∘ b mod p on the full table, disjoint train/test split (Power et al. 2022).

    Args:
        p: modulus (>= 2; prime for ``op="div"``).
        op: one of `OPS`.
        train_frac: fraction of the table used for training, in (0, 1); ``n_train = int(N * train_frac)``.
        split_seed: seed of the split permutation.
        encoding: ``"onehot"`` (MLP input, dim 2p), ``"index"`` (the same input as int64 ``[a, p + b]``, the
            positions of its two ones: :class:`~egalitarian.models.MLP` computes the identical function
            faster), ``"tokens"`` (``[a, p, b, p+1]``, vocabulary p + 2) or ``"tokens3"`` (``[a, b, p]``,
            vocabulary p + 1).
        val_frac: fraction of the training part moved to a validation split, in [0, 1).
        b_min: 0 or 1, the smallest right operand (division always uses 1).
    """
    p = check_int("p", p, low=2, error=ConfigError)
    op = check_choice("op", op, tuple(OPS), ConfigError)
    check(op != "div" or is_prime(p), "op", op, f"needs a prime p, got p = {p}", ConfigError)
    train_frac = check_fraction("train_frac", train_frac, low_inclusive=False, error=ConfigError)
    split_seed = check_int("split_seed", split_seed, low=0, error=ConfigError)
    encoding = check_choice("encoding", encoding, ENCODINGS, ConfigError)
    val_frac = check_fraction("val_frac", val_frac, low_inclusive=True, error=ConfigError)
    b_min = check_int("b_min", b_min, low=0, high=1, error=ConfigError)
    if op == "div":
        b_min = 1

    pairs = torch.cartesian_prod(torch.arange(p), torch.arange(b_min, p))
    labels = OPS[op](pairs[:, 0], pairs[:, 1], p)
    n_total = len(pairs)
    n_train = int(n_total * train_frac)
    check(0 < n_train < n_total, "train_frac", train_frac,
          f"leaves an empty {'train' if n_train == 0 else 'test'} split (table of {n_total} pairs)", ConfigError)
    n_val = val_count(n_train, val_frac)

    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(split_seed))
    idx = {
        "train": perm[: n_train - n_val],
        "val": perm[n_train - n_val : n_train],
        "test": perm[n_train:],
    }
    xs = {k: encode(pairs[i], p, encoding) for k, i in idx.items()}
    ys = {k: labels[i] for k, i in idx.items()}

    info: dict[str, object] = {
        "p": p,
        "op": op,
        "train_frac": train_frac,
        "split_seed": split_seed,
        "encoding": encoding,
        "val_frac": val_frac,
        "b_min": b_min,
        "pairs_train": pairs[idx["train"]],
        "pairs_test": pairs[idx["test"]],
    }
    if n_val:
        info["pairs_val"] = pairs[idx["val"]]
    seq_len, vocab_size = {"tokens": (4, p + 2), "tokens3": (3, p + 1)}.get(encoding, (None, None))
    return TaskData(
        x_train=xs["train"],
        y_train=ys["train"],
        x_test=xs["test"],
        y_test=ys["test"],
        x_val=xs["val"] if n_val else None,
        y_val=ys["val"] if n_val else None,
        input_dim=seq_len or 2 * p,
        num_outputs=p,
        vocab_size=vocab_size,
        target="class",
        info=info,
    )

"""Byte-level language modelling on text that ships with Python: the standard library's own source code.

Data (no download)
------------------
The ``.py`` files at the top level of ``sysconfig.get_paths()["stdlib"]``, sorted by name, concatenated, first
``n_bytes`` bytes (licence: the Python Software Foundation License, which allows this use).  The corpus depends
on the Python version: ``info["data"]`` (copied into ``summary.json``) names the version, the size and the first
12 hex digits of the corpus's SHA-256, so two runs can be checked to have read the same bytes.

Split and windows
-----------------
With ``c`` = ``context`` and the corpus ``b_0 … b_{L-1}`` cut at ``n = int(train_frac · L)``:

* **train**: every window of the first ``n`` bytes, ``x_i = b_i … b_{i+c-1}``, ``y_i = b_{i+1} … b_{i+c}`` for
  ``i = 0 … n - c - 2`` (``n - c - 1`` windows; the trainer's epoch permutation picks them at random).  The
  windows are views into one tensor of the bytes (``Tensor.unfold``), so they take no memory of their own.
* **test**: ``n_test`` windows of the held-out bytes ``b_n … b_{L-1}`` at starts drawn once,
  ``torch.randint(0, L - n - c - 1, (n_test,))`` from a generator seeded with ``window_seed`` (fixed: the
  ``seed`` of a sweep does not move it), the same for every run.

Outputs: ``x`` and ``y`` int64 ``(N, context)`` byte values in ``[0, 256)``; the model predicts every
position's next byte (logits ``(N, context, 256)``), the loss and the accuracy are means over all ``N·context``
predicted bytes (:mod:`egalitarian.losses`).  ``vocab_size = num_outputs = 256``, ``input_dim = context``.
"""

from __future__ import annotations

import hashlib
import platform
import sysconfig
from pathlib import Path

import torch

from ..errors import ConfigError, check, check_fraction, check_int
from .base import TaskData

VOCAB = 256


def stdlib_corpus(n_bytes: int = 2_000_000) -> bytes:
    """The top-level ``.py`` files of the standard library, sorted by name, concatenated, first ``n_bytes``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return b"".join(p.read_bytes() for p in sorted(root.glob("*.py")))[:n_bytes]


def windows(data: torch.Tensor, context: int, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: the ``count`` first windows of ``data`` (default all but the last possible one), ``x[i] =
    data[i : i + context]`` and ``y[i] = data[i + 1 : i + 1 + context]``, as views of ``data``."""
    count = len(data) - context - 1 if count is None else count
    return data[:-1].unfold(0, context, 1)[:count], data[1:].unfold(0, context, 1)[:count]


def stdlib_bytes(
    context: int = 64,
    n_bytes: int = 2_000_000,
    train_frac: float = 0.9,
    n_test: int = 256,
    window_seed: int = 1234,
) -> TaskData:
    """Byte-level language model on the Python stdlib's top-level .py files (no download; next-byte prediction).

    Args:
        context: window length (the model's context), in bytes.
        n_bytes: corpus size, the first bytes of the concatenated files.
        train_frac: the first ``int(train_frac · L)`` bytes train, the rest are held out for the test windows.
        n_test: number of fixed test windows drawn from the held-out bytes.
        window_seed: seed of the test windows' starts (fixed for every run).
    """
    context = check_int("context", context, low=1, error=ConfigError)
    n_bytes = check_int("n_bytes", n_bytes, low=1, error=ConfigError)
    train_frac = check_fraction("train_frac", train_frac, low_inclusive=False, error=ConfigError)
    n_test = check_int("n_test", n_test, low=1, error=ConfigError)
    window_seed = check_int("window_seed", window_seed, low=0, error=ConfigError)
    text = stdlib_corpus(n_bytes)
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    cut = int(train_frac * len(data))
    train, held_out = data[:cut], data[cut:]
    check(min(len(train), len(held_out)) >= context + 2, "n_bytes", n_bytes, f"leaves a part shorter than context "
          f"+ 2 = {context + 2} bytes (train {len(train)}, held out {len(held_out)})", ConfigError)
    x_train, y_train = windows(train, context)
    gen = torch.Generator().manual_seed(window_seed)
    starts = torch.randint(0, len(held_out) - context - 1, (n_test,), generator=gen)
    x_test = torch.stack([held_out[s : s + context] for s in starts.tolist()])
    y_test = torch.stack([held_out[s + 1 : s + 1 + context] for s in starts.tolist()])
    digest = hashlib.sha256(text).hexdigest()[:12]
    return TaskData(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        x_val=None,
        y_val=None,
        input_dim=context,
        num_outputs=VOCAB,
        vocab_size=VOCAB,
        target="class",
        info={
            "data": f"stdlib .py corpus, {len(text)} bytes, sha256 {digest}, Python {platform.python_version()}",
            "sha256": digest,
            "bytes": len(text),
            "train_bytes": len(train),
            "context": context,
            "n_test": n_test,
            "window_seed": window_seed,
        },
    )

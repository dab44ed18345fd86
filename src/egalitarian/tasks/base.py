"""The `TaskData` container and the validation-split helpers shared by the task builders.

Conventions
-----------
* Every builder returns a `TaskData` whose tensors live on the CPU; call `TaskData.to(device)` to move them.
* ``target == "class"``: ``y`` is an int64 class index in ``[0, num_outputs)``.
  ``target == "sign"``: ``y`` is a float32 ±1 scalar per sample and ``num_outputs == 1``.
* Validation failures raise `ConfigError` with a message of the form
  ``<field> = <value!r>: <what is allowed>`` with the builder's own argument name (:mod:`egalitarian.errors`:
  ``check``, ``check_int``, ``check_fraction``, ``check_choice``, ``invalid``);
  :func:`egalitarian.build.make_task` adds ``task.`` in front.
* A validation split is always carved from the *end* of the training part (`split_off_val`): the last
  ``int(n_train * val_frac)`` training samples become validation, so train, validation and test are disjoint.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, check

TARGETS = ("class", "sign")


@dataclass
class TaskData:
    """Train/test (and optional validation) tensors of one task plus what a model needs to know about them."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    x_val: Tensor | None
    y_val: Tensor | None
    input_dim: int  # feature dim (one-hot / MLP encodings) or sequence length (token encoding)
    num_outputs: int  # number of classes, or 1 for a scalar ±1 target
    vocab_size: int | None  # token encodings only
    target: str  # "class" or "sign"
    info: dict[str, Any] = field(default_factory=dict)
    # images only: (channels, height, width) of each row of x, which is stored flattened in C order (an MLP
    # reads it as it is; a convolutional model reshapes it); None for the non-image tasks
    image_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"TaskData.target = {self.target!r}: must be one of {TARGETS}")
        if (self.x_val is None) != (self.y_val is None):
            raise ValueError("TaskData: x_val and y_val must both be tensors or both be None")
        for split, x, y in self._splits():
            if len(x) != len(y):
                raise ValueError(f"TaskData: x_{split} has {len(x)} rows but y_{split} has {len(y)}")
        if self.image_shape is not None and math.prod(self.image_shape) != self.input_dim:
            raise ValueError(f"TaskData: image_shape {self.image_shape} does not hold input_dim = {self.input_dim}")

    def _splits(self) -> list[tuple[str, Tensor, Tensor]]:
        splits = [("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)]
        if self.x_val is not None and self.y_val is not None:
            splits.append(("val", self.x_val, self.y_val))
        return splits

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        return len(self.x_test)

    @property
    def n_val(self) -> int:
        return 0 if self.x_val is None else len(self.x_val)

    def to(self, device: torch.device | str) -> TaskData:
        """A copy with the x/y tensors on `device` (`info` is metadata and stays as it is)."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
            x_val=move(self.x_val),
            y_val=move(self.y_val),
            info=dict(self.info),
        )


def val_count(n_train: int, val_frac: float) -> int:
    """``int(n_train * val_frac)``, the size of the validation split carved from `n_train` training samples.

    Raises `ConfigError` if a positive `val_frac` would leave the validation split empty.
    """
    n_val = int(n_train * val_frac)
    check(val_frac <= 0 or n_val > 0, "val_frac", val_frac,
          f"leaves an empty validation split ({n_train} training samples)", ConfigError)
    return n_val


def split_off_val(
    x: Tensor, y: Tensor, val_frac: float
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Move the last ``val_count(len(x), val_frac)`` samples into a validation split.

    Returns ``(x_train, y_train, x_val, y_val)``; the validation pair is None when ``val_frac == 0``.
    """
    n_val = val_count(len(x), val_frac)
    if n_val == 0:
        return x, y, None, None
    cut = len(x) - n_val
    return x[:cut], y[:cut], x[cut:], y[cut:]


def with_val_split(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, val_frac: float,
                   **fields: Any) -> TaskData:
    """The :class:`TaskData` of a task whose validation split is the end of its training part
    (:func:`split_off_val`); ``fields`` are TaskData's other fields."""
    x_train, y_train, x_val, y_val = split_off_val(x_train, y_train, val_frac)
    return TaskData(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, x_val=x_val, y_val=y_val,
                    **fields)


def image_rows(images: np.ndarray, labels: np.ndarray, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` uint8 images as float32 rows in [0, 1] (``/ 255``, each image flattened in C order) and
    their labels as int64."""
    return torch.from_numpy(images[:n].reshape(n, -1)).float() / 255.0, torch.from_numpy(labels[:n]).long()


def image_task(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, val_frac: float,
               num_classes: int, image_shape: tuple[int, int, int], info: dict[str, Any]) -> TaskData:
    """The :class:`TaskData` of an image classification task (rows of flattened ``image_shape`` images, class
    targets), its validation split the end of its training part (:func:`with_val_split`)."""
    return with_val_split(x_train, y_train, x_test, y_test, val_frac, input_dim=x_train.shape[1],
                          num_outputs=num_classes, vocab_size=None, target="class", image_shape=image_shape,
                          info=info)

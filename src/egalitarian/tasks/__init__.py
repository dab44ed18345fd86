"""Datasets for grokking experiments and a registry of their builders.

Each builder returns a `TaskData` (see `egalitarian.tasks.base`); the first line of its docstring is the
one-line summary shown by ``egd list tasks``. Build a task from a config section with
`egalitarian.build.make_task`, which reports unknown names and parameters as `ConfigError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from ..errors import ConfigError
from .base import TaskData
from .cifar10 import cifar10, read_batch
from .mnist import mnist, read_idx
from .modular import OPS, modular
from .parity import parity
from .text import stdlib_bytes

TASKS: dict[str, Callable[..., TaskData]] = {
    "modular": modular,
    "parity": parity,
    "mnist": mnist,
    "cifar10": cifar10,
    "stdlib_bytes": stdlib_bytes,
}


def task_summary(name: str) -> str:
    """The one-line summary of a registered task (first line of its builder's docstring)."""
    return (inspect.getdoc(TASKS[name]) or "").splitlines()[0]


__all__ = [
    "OPS",
    "TASKS",
    "ConfigError",
    "TaskData",
    "cifar10",
    "mnist",
    "modular",
    "parity",
    "read_batch",
    "read_idx",
    "stdlib_bytes",
    "task_summary",
]

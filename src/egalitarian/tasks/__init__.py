"""Datasets for grokking experiments and a registry of their builders.

Each builder returns a `TaskData` (see `egalitarian.tasks.base`); the first line of its docstring is the
one-line summary shown by ``egd list tasks``. Build a task from a config section with
`egalitarian.build.make_task`, which reports unknown names and parameters as `ConfigError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from egalitarian.errors import ConfigError
from egalitarian.tasks.base import TaskData
from egalitarian.tasks.cifar10 import cifar10, read_batch
from egalitarian.tasks.mnist import mnist, read_idx
from egalitarian.tasks.modular import OPS, modular
from egalitarian.tasks.parity import parity

TASKS: dict[str, Callable[..., TaskData]] = {
    "modular": modular,
    "parity": parity,
    "mnist": mnist,
    "cifar10": cifar10,
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
    "task_summary",
]

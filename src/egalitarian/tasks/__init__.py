"""Datasets for grokking experiments and a registry of their builders.

Each builder returns a `TaskData` (see `egalitarian.tasks.base`); the first line of its docstring is the
one-line summary shown by ``egd list tasks``. Build a task from a config section with
``make_task(name, **params)``, which reports unknown names and parameters as `ConfigError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from egalitarian.errors import ConfigError
from egalitarian.tasks.base import TaskData
from egalitarian.tasks.mnist import mnist, read_idx
from egalitarian.tasks.modular import OPS, modular
from egalitarian.tasks.parity import parity

TASKS: dict[str, Callable[..., TaskData]] = {
    "modular": modular,
    "parity": parity,
    "mnist": mnist,
}


def task_summary(name: str) -> str:
    """The one-line summary of a registered task (first line of its builder's docstring)."""
    return (inspect.getdoc(TASKS[name]) or "").splitlines()[0]


def make_task(name: str, /, **params: Any) -> TaskData:
    """Build task `name` with `params`; unknown names or parameters raise `ConfigError`."""
    if not isinstance(name, str) or name not in TASKS:
        allowed = ", ".join(repr(n) for n in sorted(TASKS))
        raise ConfigError(f"task.name = {name!r}: unknown task, must be one of {allowed}")
    builder = TASKS[name]
    allowed_params = list(inspect.signature(builder).parameters)
    for key, value in params.items():
        if key not in allowed_params:
            raise ConfigError(
                f"task.{key} = {value!r}: unknown parameter for task {name!r}; "
                f"allowed: {', '.join(allowed_params)}"
            )
    return builder(**params)


__all__ = [
    "OPS",
    "TASKS",
    "ConfigError",
    "TaskData",
    "make_task",
    "mnist",
    "modular",
    "parity",
    "read_idx",
    "task_summary",
]

"""Exceptions and the one validation message shape of the package: ``field = value: what is allowed``.

Library code (optimizers, transforms, models, losses, tasks) names its own arguments (``lr = 0: must be > 0``);
the config layer (:mod:`egalitarian.build`) adds the config path in front (``optimizer.lr = 0: must be > 0``)
with :func:`in_section`.
"""

from __future__ import annotations

import re
from typing import Any


class ConfigError(ValueError):
    """Bad user input: message names the field, the value and what is allowed."""


def check(ok: bool, field: str, value: Any, allowed: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error("field = value!r: allowed")`` unless ``ok``."""
    if not ok:
        raise error(f"{field} = {value!r}: {allowed}")


def same_kind(default: Any, value: Any, *, name_lists: bool = False) -> bool:
    """Whether a config value has the kind of its default: bools are not numbers, an int counts as a float
    (not the reverse), a tuple or list default takes a list of numbers; with ``name_lists`` a string default
    also takes a list of strings (e.g. an optimizer's ``whiten`` patterns).  Other defaults (None) take anything."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and (isinstance(default, float) or isinstance(value, int))
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list)) and all(same_kind(0.0, v) for v in value)
    if isinstance(default, str):
        names = name_lists and isinstance(value, list) and all(isinstance(v, str) for v in value)
        return isinstance(value, str) or names
    return True


_FIELD_FIRST = re.compile(r"^[A-Za-z_][\w.\[\]]* (= |is missing)")


def in_section(section: str, error: Exception) -> ConfigError:
    """``error`` as a ConfigError with the config path in front: ``lr = 0: …`` → ``optimizer.lr = 0: …``.

    A message that does not start with a field name keeps its text after ``section: ``.
    """
    msg = str(error)
    if msg.startswith(f"{section}."):
        return ConfigError(msg)
    return ConfigError(f"{section}.{msg}" if _FIELD_FIRST.match(msg) else f"{section}: {msg}")

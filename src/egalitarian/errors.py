"""Exceptions and the one validation message shape of the package: ``field = value: what is allowed``.

:func:`check` raises it for any condition; :func:`check_int`, :func:`check_fraction` and :func:`check_choice` are
the common kinds (a bounded count, a fraction, one of some names) with their standard wording, and return the
value; :func:`invalid` is the exception itself, for an ``except`` block.

Library code (optimizers, transforms, models, losses, tasks) names its own arguments (``lr = 0: must be > 0``);
the config layer (``egalitarian.build``) adds the config path in front (``optimizer.lr = 0: must be > 0``)
with :func:`in_section`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any


class ConfigError(ValueError):
    """Bad user input: message names the field, the value and what is allowed."""


def invalid(field: str, value: Any, allowed: str, error: type[Exception] = ValueError) -> Exception:
    """The exception :func:`check` raises, ``error("field = value!r: allowed")``, for the places that raise it
    themselves (an ``except`` block: ``raise invalid(...) from None``)."""
    return error(f"{field} = {value!r}: {allowed}")


def check(ok: bool, field: str, value: Any, allowed: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error("field = value!r: allowed")`` unless ``ok``."""
    if not ok:
        raise invalid(field, value, allowed, error)


def check_int(field: str, value: Any, *, low: int, high: int | None = None,
              error: type[Exception] = ValueError) -> int:
    """``value`` as an int in ``[low, high]`` (``high`` None: no upper bound); a bool is not a count."""
    ok = isinstance(value, Integral) and not isinstance(value, bool)
    ok = ok and low <= value and (high is None or value <= high)
    check(ok, field, value, f"must be an integer >= {low}" if high is None else
          f"must be an integer in [{low}, {high}]", error)
    return int(value)


def check_fraction(field: str, value: Any, *, low_inclusive: bool, error: type[Exception] = ValueError) -> float:
    """``value`` as a float in ``(0, 1)``, or in ``[0, 1)`` with ``low_inclusive``; bool and NaN are refused."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and not math.isnan(value)
    ok = ok and (value >= 0 if low_inclusive else value > 0) and value < 1
    check(ok, field, value, f"must be a number in {'[' if low_inclusive else '('}0, 1)", error)
    return float(value)


def check_choice(field: str, value: Any, allowed: Sequence[str], error: type[Exception] = ValueError) -> str:
    """``value`` if it is one of the strings ``allowed`` (the message lists them, quoted)."""
    check(isinstance(value, str) and value in allowed, field, value,
          "must be one of " + ", ".join(repr(a) for a in allowed), error)
    return value


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

    A message that does not start with a field name keeps its text after ``section:`` and a space.
    """
    msg = str(error)
    if msg.startswith(f"{section}."):
        return ConfigError(msg)
    return ConfigError(f"{section}.{msg}" if _FIELD_FIRST.match(msg) else f"{section}: {msg}")

"""Learning-rate schedules: a factor on every param group's initial lr, a function of the optimizer step.

A config's optional ``[scheduler]`` section (left out of the resolved config when absent, so run ids made
before it existed stay the same)::

    [scheduler]
    name = "cosine"          # "constant" | "linear_warmup" | "cosine" | "step"
    warmup_steps = 10        # every schedule: linear warm-up from 0 to the base lr
    total_steps = 0          # cosine: where it reaches min_factor × lr (0 = the run's step budget)
    min_factor = 0.0         # cosine

With ``t`` the number of optimizer steps taken so far (the step about to be taken has index ``t``, from 0) and
``W = warmup_steps``, the factor is ``t / W`` while ``t < W`` (so the first step has lr 0: torch's
``LambdaLR`` convention, and Grokfast's ``1 if update > 10 else update / 10``), and from ``t = W`` on, with
``s = t − W`` the steps since the warm-up:

* ``constant``, ``linear_warmup``: 1 (``linear_warmup`` needs ``W >= 1``);
* ``cosine``: ``m + (1 − m)·(1 + cos(π·min(1, s / (T − W))))/2`` with ``m = min_factor``, ``T = total_steps``
  (1 at ``t = W``, ``m`` from ``t = T`` on);
* ``step``: ``gamma ** (s // step_size)``.

The trainer applies it with ``torch.optim.lr_scheduler.LambdaLR`` (:func:`lambda_lr`), which multiplies each
group's ``initial_lr``, so it works for every optimizer of the registry, including EGD, Preconditioned (which
shares its groups with its base) and MuonWithAdamW (its Muon and AdamW groups each keep their own lr).  A step
skipped for a non-finite loss or gradient does not advance the schedule.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError, check, same_kind

SCHEDULES = ("constant", "linear_warmup", "cosine", "step")

REQUIRED = object()
"""The default of a field that has none (``step_size``): the schedule needs it."""

SCHEDULER_FIELDS: tuple[tuple[str, Any, tuple[str, ...], str], ...] = (
    # (field, default, the schedules that take it, what it means): `egd list fields` prints this table
    ("warmup_steps", 0, SCHEDULES, "linear warm-up from 0 to the base lr over this many optimizer steps (step t "
     "has lr·t/warmup_steps; linear_warmup needs >= 1)"),
    ("total_steps", 0, ("cosine",), "the optimizer step at which the cosine reaches min_factor × lr (0 = the run's "
     "step budget; must exceed warmup_steps)"),
    ("min_factor", 0.0, ("cosine",), "the final lr as a fraction of the base lr, in [0, 1]"),
    ("step_size", REQUIRED, ("step",), "optimizer steps between two multiplications by gamma (>= 1; required)"),
    ("gamma", 0.1, ("step",), "the factor applied every step_size steps after the warm-up, in (0, 1]"),
)
"""The ``[scheduler]`` schema besides ``name``: each field, its default, the schedules that take it, its meaning."""


def fields_of(name: str) -> list[str]:
    """The fields schedule ``name`` takes, ``name`` first."""
    return ["name", *(f for f, _, schedules, _ in SCHEDULER_FIELDS if name in schedules)]


def resolve_scheduler(section: Any) -> dict[str, Any]:
    """A ``[scheduler]`` table checked and with its schedule's defaults filled; a ConfigError names the field
    (``scheduler.gamma = 2.0: must be in (0, 1]``)."""
    check(isinstance(section, dict), "scheduler", section, "must be a table ([scheduler] with fields), not a value",
          ConfigError)
    name = section.get("name")
    if name is None:
        raise ConfigError(f"scheduler.name is missing: [scheduler] needs a name; allowed: {', '.join(SCHEDULES)}")
    check(isinstance(name, str) and name in SCHEDULES, "scheduler.name", name,
          f"unknown schedule; allowed: {', '.join(SCHEDULES)}", ConfigError)
    allowed = fields_of(name)
    defaults = {f: d for f, d, _, _ in SCHEDULER_FIELDS}
    for key, value in section.items():
        check(key in allowed, f"scheduler.{key}", value,
              f"not a field of schedule {name!r}; allowed: {', '.join(allowed)}", ConfigError)
        if key != "name":
            kind = type(0 if defaults[key] is REQUIRED else defaults[key])
            check(same_kind(kind(), value), f"scheduler.{key}", value, f"must be of type {kind.__name__}", ConfigError)
    out: dict[str, Any] = {"name": name}
    for key in allowed[1:]:
        if key not in section and defaults[key] is REQUIRED:
            raise ConfigError(f"scheduler.{key} is missing: schedule {name!r} needs {key}")
        out[key] = section.get(key, defaults[key])

    def need(ok: bool, key: str, allowed_text: str) -> None:
        check(ok, f"scheduler.{key}", out[key], allowed_text, ConfigError)

    need(out["warmup_steps"] >= 0, "warmup_steps", "must be >= 0")
    if name == "linear_warmup":
        need(out["warmup_steps"] >= 1, "warmup_steps", "must be >= 1 for linear_warmup (no warm-up: name = 'constant')")
    if name == "cosine":
        need(out["total_steps"] >= 0, "total_steps", "must be >= 0 (0 = the run's step budget)")
        need(out["total_steps"] == 0 or out["total_steps"] > out["warmup_steps"], "total_steps",
             f"must exceed scheduler.warmup_steps = {out['warmup_steps']} (0 = the run's step budget)")
        need(math.isfinite(out["min_factor"]) and 0 <= out["min_factor"] <= 1, "min_factor", "must be in [0, 1]")
    if name == "step":
        need(out["step_size"] >= 1, "step_size", "must be >= 1")
        need(math.isfinite(out["gamma"]) and 0 < out["gamma"] <= 1, "gamma", "must be in (0, 1]")
    return out


def lr_factor(t: int, name: str, warmup_steps: int = 0, total_steps: int = 0, min_factor: float = 0.0,
              step_size: int = 1, gamma: float = 0.1) -> float:
    """The factor on the base lr of the optimizer step with index ``t`` (from 0); see the module docstring.
    ``total_steps`` must be the resolved one (> ``warmup_steps``) for ``cosine``."""
    if t < warmup_steps:
        return t / warmup_steps
    s = t - warmup_steps
    if name == "cosine":
        progress = min(1.0, s / (total_steps - warmup_steps))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    if name == "step":
        return gamma ** (s // step_size)
    return 1.0


def total_steps(section: dict[str, Any], budget: float) -> int:
    """The cosine's ``total_steps`` for a run with a step budget of ``budget`` steps (0 = the budget); other
    schedules: 0 (unused)."""
    if section["name"] != "cosine":
        return 0
    if section["total_steps"]:
        return section["total_steps"]
    check(math.isfinite(budget) and budget > section["warmup_steps"], "scheduler.total_steps", 0,
          f"the run's step budget ({budget:g} steps) must exceed scheduler.warmup_steps = {section['warmup_steps']}",
          ConfigError)
    return int(budget)


class Schedule:
    """The factor function of one resolved schedule, ``Schedule(section, budget)(t)``.  An object, not a closure:
    ``LambdaLR.state_dict()`` saves its ``__dict__`` (the schedule with its resolved ``total_steps``), so a resumed
    run can check that it continues the same schedule (:func:`schedule_change`)."""

    def __init__(self, section: dict[str, Any], budget: float):
        self.name = section["name"]
        self.params = {k: v for k, v in section.items() if k != "name"}
        if self.name == "cosine":
            self.params["total_steps"] = total_steps(section, budget)

    def __call__(self, t: int) -> float:
        return lr_factor(t, self.name, **self.params)


def lambda_lr(optimizer: Any, section: dict[str, Any], budget: float) -> Any:
    """A ``torch.optim.lr_scheduler.LambdaLR`` on ``optimizer`` for a resolved ``[scheduler]`` section and a run of
    ``budget`` optimizer steps: every param group's lr is its ``initial_lr`` times :class:`Schedule`; the trainer
    calls its ``step()`` after each optimizer step."""
    from torch.optim.lr_scheduler import LambdaLR  # torch stays out of `import egalitarian.config`

    return LambdaLR(optimizer, Schedule(section, budget))


def schedule_change(scheduler: Any, saved: dict[str, Any]) -> str | None:
    """How the schedule of ``scheduler`` differs from the one in its saved ``state_dict()`` (``None``: the same).
    Only a cosine whose ``total_steps = 0`` follows the step budget can differ while the config is the same."""
    for now, then in zip(scheduler.lr_lambdas, saved.get("lr_lambdas", []), strict=False):
        before = (then or {}).get("params", {})
        if then is not None and before != now.params:
            changed = [f"{k} {before.get(k)} -> {v}" for k, v in now.params.items() if before.get(k) != v]
            return ", ".join(changed)
    return None


__all__ = ["SCHEDULER_FIELDS", "SCHEDULES", "Schedule", "fields_of", "lambda_lr", "lr_factor", "resolve_scheduler",
           "schedule_change", "total_steps"]

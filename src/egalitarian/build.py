"""Assembling a run from a resolved config, and the one answer to "which fields does this section accept".

    build_run(cfg, device) -> Assembled(data, model, loss_fn, l2, optimizer)

:func:`accepted_fields` is the single source of "unknown field" for every section: the trainer, the sweep
spec, the benches and the tests all ask it.  ``[train]`` is declared in :mod:`egalitarian.config`; ``[task]``,
``[model]`` and ``[optimizer]`` accept the keyword arguments of the builder they name (a task's builder in
:data:`egalitarian.tasks.TASKS`, a model class in :data:`MODELS` minus the dimensions the task fixes,
:data:`TASK_DERIVED`, a method's keyword defaults in :data:`egalitarian.methods.OPTIMIZERS`); ``[loss]``
accepts :data:`LOSS_FIELDS`; ``[scheduler]`` the fields of its schedule (:mod:`egalitarian.schedules`).  Errors
from the library (which names its own arguments, ``hidden = 0: …``) get the config path in front here
(``model.hidden = 0: …``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from .config import SECTIONS, TRAIN_DEFAULTS, section_kwargs
from .errors import ConfigError, check, in_section
from .losses import LOSSES, LossFn
from .methods import OPTIMIZERS, build_optimizer
from .models import CNN, GPT, MLP, Transformer
from .schedules import SCHEDULES, fields_of
from .tasks import TASKS, TaskData

MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "transformer": Transformer, "gpt": GPT, "cnn": CNN}

TASK_DERIVED: dict[str, tuple[str, ...]] = {
    "mlp": ("in_dim", "out_dim"),
    "transformer": ("vocab_size", "seq_len", "num_outputs"),
    "gpt": ("vocab_size", "seq_len", "num_outputs"),
    "cnn": ("in_channels", "height", "width", "num_outputs"),
}
"""The model arguments a task fixes (see :func:`task_derived`); a config may not set them."""

LOSS_FIELDS = ("weight_decay",)
"""``[loss]``: ``name`` (one of :data:`egalitarian.losses.LOSSES`) and an L2 term ``weight_decay`` on matrices."""

def _registry(section: str) -> dict[str, Any]:
    return {"task": TASKS, "model": MODELS, "loss": LOSSES, "optimizer": OPTIMIZERS}[section]


def _signature(fn: Callable[..., Any], exclude: tuple[str, ...] = ()) -> list[str]:
    return [k for k in inspect.signature(fn).parameters if k not in exclude]


def check_name(section: str, name: Any) -> None:
    """A ConfigError unless ``name`` is registered for ``section`` (task, model, loss, optimizer)."""
    registry = _registry(section)
    kind = "method" if section == "optimizer" else section
    check(isinstance(name, str) and name in registry, f"{section}.name", name,
          f"unknown {kind}; allowed: {', '.join(sorted(registry))}", ConfigError)


def accepted_fields(section: str, name: Any = None) -> list[str]:
    """The fields ``[section]`` accepts when it names builder ``name`` (``name`` first; none for train)."""
    if section == "train":
        return list(TRAIN_DEFAULTS)
    if section == "scheduler":
        check(isinstance(name, str) and name in SCHEDULES, "scheduler.name", name,
              f"unknown schedule; allowed: {', '.join(SCHEDULES)}", ConfigError)
        return fields_of(name)
    if section not in SECTIONS:
        raise ConfigError(f"{section}: unknown config section; allowed: {', '.join(SECTIONS)}")
    check_name(section, name)
    if section == "task":
        fields = _signature(TASKS[name])
    elif section == "model":
        fields = _signature(MODELS[name], TASK_DERIVED[name])
    elif section == "optimizer":
        fields = list(OPTIMIZERS[name].defaults)
    else:
        fields = list(LOSS_FIELDS)
    return ["name", *fields]


def _describe(section: str, name: Any) -> str:
    if section == "scheduler":
        return f"schedule {name!r}"
    if section in ("train", "loss"):
        return f"[{section}]"
    return f"{'method' if section == 'optimizer' else section} {name!r}"


def check_fields(section: str, name: Any, fields: dict[str, Any], path: str | None = None) -> None:
    """A ConfigError naming the first field of ``fields`` that ``[section]`` does not accept (as
    ``path.field``; ``path`` defaults to the section, e.g. ``methods.egd`` for a recipe's method table)."""
    allowed = accepted_fields(section, name)
    for key, value in fields.items():
        check(key in allowed, f"{path or section}.{key}", value,
              f"unknown field of {_describe(section, name)}; allowed: {', '.join(allowed)}", ConfigError)


def make_task(name: Any, /, **params: Any) -> TaskData:
    """Build task ``name`` from its parameters; unknown names and parameters are ConfigErrors."""
    check_fields("task", name, params)
    check("name" not in params, "task.name", params.get("name"), "given twice: it is make_task's first argument",
          ConfigError)
    try:
        return TASKS[name](**params)
    except ValueError as e:
        raise in_section("task", e) from None


def task_derived(model: str, data: TaskData) -> dict[str, int]:
    """The arguments of ``MODELS[model]`` that the task fixes (:data:`TASK_DERIVED`), from ``data``."""
    if model == "mlp":
        check(data.vocab_size is None, "model.name", model,
              "needs feature inputs, not tokens: set task.encoding = 'onehot' or 'index'", ConfigError)
        dims = {"in_dim": data.input_dim, "out_dim": data.num_outputs}
    elif model == "cnn":
        check(data.image_shape is not None, "model.name", model,
              "needs an image task (task.name = 'mnist' or 'cifar10')", ConfigError)
        assert data.image_shape is not None
        c, h, w = data.image_shape
        dims = {"in_channels": c, "height": h, "width": w, "num_outputs": data.num_outputs}
    else:
        check(data.vocab_size is not None, "model.name", model,
              "needs a token task, e.g. task.encoding = 'tokens' or task.name = 'stdlib_bytes'", ConfigError)
        dims = {"vocab_size": data.vocab_size, "seq_len": data.input_dim, "num_outputs": data.num_outputs}
    assert tuple(dims) == TASK_DERIVED[model]
    return dims


def build_model(cfg: dict[str, Any], data: TaskData) -> nn.Module:
    """``[model]`` for ``data``; unknown or missing fields and bad values are ConfigErrors naming the field."""
    name = cfg["model"]["name"]
    kwargs = section_kwargs(cfg, "model")
    check_fields("model", name, kwargs)
    params = inspect.signature(MODELS[name]).parameters
    missing = [k for k in accepted_fields("model", name)[1:]
               if params[k].default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise ConfigError(f"model.{missing[0]} is missing: model {name!r} needs {', '.join(missing)}")
    try:
        return MODELS[name](**task_derived(name, data), **kwargs)
    except (TypeError, ValueError) as e:
        raise in_section("model", e) from None


def build_loss(cfg: dict[str, Any]) -> tuple[LossFn, float]:
    """The training loss from ``[loss]`` and its L2 coefficient on matrices (``weight_decay``, default 0)."""
    name = cfg.get("loss", {}).get("name", "cross_entropy")
    kwargs = section_kwargs(cfg, "loss")
    check_fields("loss", name, kwargs)
    wd = kwargs.get("weight_decay", 0.0)
    check(isinstance(wd, (int, float)) and not isinstance(wd, bool) and wd >= 0, "loss.weight_decay", wd,
          "must be a number >= 0", ConfigError)
    return LOSSES[name], float(wd)


def build_optimizer_from(cfg: dict[str, Any], model: nn.Module) -> Optimizer:
    """``[optimizer]`` over the model's trainable parameters (by name, for the methods' parameter selection)."""
    name = cfg["optimizer"]["name"]
    kwargs = section_kwargs(cfg, "optimizer")
    check_fields("optimizer", name, kwargs)
    return build_optimizer(list(model.named_parameters()), name, **kwargs)


@dataclass
class Assembled:
    """What a run trains: the task's tensors, the model, the loss, its L2 coefficient, the optimizer, and the
    learning-rate schedule (``[scheduler]``; the trainer attaches it, :func:`egalitarian.schedules.lambda_lr`,
    once it knows the step budget)."""

    data: TaskData
    model: nn.Module
    loss_fn: LossFn
    l2: float
    optimizer: Optimizer
    scheduler: Any = None

    @property
    def decayed(self) -> list[torch.Tensor]:
        """The parameters the loss's L2 term covers: trainable matrices (≥ 2-D)."""
        return [p for p in self.model.parameters() if p.requires_grad and p.ndim >= 2]


def build_run(cfg: dict[str, Any], device: torch.device | str = "cpu") -> Assembled:
    """Data, model (initialised with ``train.seed``), loss and optimizer of a resolved config, on ``device``."""
    data = make_task(cfg["task"]["name"], **section_kwargs(cfg, "task")).to(device)
    torch.manual_seed(cfg["train"]["seed"])
    model = build_model(cfg, data).to(device)
    loss_fn, l2 = build_loss(cfg)
    return Assembled(data, model, loss_fn, l2, build_optimizer_from(cfg, model))

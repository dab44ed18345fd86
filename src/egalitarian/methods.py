"""One registry of optimization methods, built from config by name.

Every method is a builder ``f(named_params, **hyperparameters) -> torch.optim.Optimizer``; its keyword
defaults are the method's defaults (shown by ``egd list optimizers``) and the first docstring line is its
description.  Two keys are shared by all builders:

* ``decay``: which parameters get weight decay, ``"all"`` (torch's convention) or ``"matrices"`` (≥ 2-D
  parameters only; the EGD paper's ``0.5·wd·(‖W1‖² + ‖W2‖²)``).
* ``whiten`` (EGD methods): which parameters are whitened, ``"all"`` (every ≥ 2-D parameter) or a list of
  glob patterns over parameter names, e.g. ``["layers.0.weight"]`` (the paper's MLP whitens only W1).

Every EGD method takes the same whitening keys with the same defaults: ``backend`` (of
:func:`egalitarian.linalg.polar`), ``rtol``, ``clamp_eps`` (the paper's clamp ``1/max(s, clamp_eps)``),
``rank``, ``power_iters`` and ``seed``; ``0`` for ``rtol`` and ``clamp_eps`` means polar's default.

Some keys are *inert* under some settings: accepted, but never read by the optimizer they build (``momentum``
with an Adam base, ``betas`` with an SGD base, ``rank`` with a non-rsvd backend).  :func:`inert_hyperparameters`
names them, so a search (``egd tune``) does not spend trials on a dead knob.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .baselines import MuonWithAdamW, column_norm, grokfast_ema, grokfast_ma, perp_to_weights
from .errors import ConfigError, check, in_section, same_kind
from .optim import EGD, Preconditioned
from .routing import EGDWithAuxAdamW
from .transforms import GradientTransform, chain, whitening_options
from .transforms import whiten as whiten_transform

NamedParams = Sequence[tuple[str, Tensor]]


Settings = dict[str, Any]


@dataclass(frozen=True)
class Method:
    name: str
    build: Callable[..., Optimizer]
    summary: str | None = None
    ignores: Callable[[Settings], set[str]] | None = None  # the keys the builder does not read under settings

    @property
    def description(self) -> str:
        return self.summary or (inspect.getdoc(self.build) or "").splitlines()[0]

    @property
    def defaults(self) -> dict[str, Any]:
        sig = inspect.signature(self.build)
        return {
            k: p.default
            for k, p in list(sig.parameters.items())[1:]
            if p.default is not inspect.Parameter.empty and p.kind is p.KEYWORD_ONLY
        }

    def inert(self, settings: Settings | None = None) -> set[str]:
        """The keys whose value cannot change this method's steps under ``settings`` (its defaults updated by
        ``settings``): the builder passes them to nothing that reads them (``momentum`` with an Adam base).  A
        value is still checked when the optimizer is built (``rank`` must fit the whitened matrices)."""
        s = {**self.defaults, **(settings or {})}
        return (self.ignores(s) if self.ignores else set()) & set(s)


OPTIMIZERS: dict[str, Method] = {}


def register(
    name: str, ignores: Callable[[Settings], set[str]] | None = None
) -> Callable[[Callable[..., Optimizer]], Callable[..., Optimizer]]:
    """Register a builder as method ``name``; ``ignores(settings)``: the keys it does not read there
    (:meth:`Method.inert`)."""

    def deco(fn: Callable[..., Optimizer]) -> Callable[..., Optimizer]:
        OPTIMIZERS[name] = Method(name, fn, ignores=ignores)
        return fn

    return deco


def inert_hyperparameters(name: str, settings: Settings | None = None) -> set[str]:
    """The hyperparameters of method ``name`` that are inert under ``settings`` (a config's ``[optimizer]`` keys;
    the rest at the method's defaults): changing one leaves every step unchanged, bit for bit.

    E.g. ``momentum`` of ``grokfast`` on its default Adam base, ``betas`` and ``eps`` of ``egd_adam`` with
    ``base = "sgd"``, ``rank`` of ``egd`` with the exact backend.  A search leaves an ``optional`` dimension on
    such a key out for that method (:mod:`egalitarian.tune`)."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name = {name!r}: unknown method; allowed: {', '.join(sorted(OPTIMIZERS))}")
    return OPTIMIZERS[name].inert({k: v for k, v in (settings or {}).items() if k != "name"})


def build_optimizer(named_params: NamedParams, name: str, **hyper: Any) -> Optimizer:
    """Build method ``name``; unknown names, unknown keys and bad values are ConfigErrors naming the field."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name = {name!r}: unknown method; allowed: {', '.join(sorted(OPTIMIZERS))}")
    method = OPTIMIZERS[name]
    allowed = method.defaults
    for key, value in hyper.items():
        if key not in allowed:
            raise ConfigError(
                f"optimizer.{key} = {value!r}: not a hyperparameter of {name!r}; allowed: {', '.join(allowed)}"
            )
    for key, value in hyper.items():
        default = allowed[key]
        if not same_kind(default, value, name_lists=True):
            kind = "a list of numbers" if isinstance(default, (tuple, list)) else type(default).__name__
            raise ConfigError(f"optimizer.{key} = {value!r}: must be {kind} (like the default {default!r})")
        if key.endswith("lr"):  # every method's step sizes (lr, adamw_lr), before torch words it its own way
            check(math.isfinite(value) and value > 0, f"optimizer.{key}", value, "must be a number > 0", ConfigError)
        if key.endswith("weight_decay"):
            check(math.isfinite(value) and value >= 0, f"optimizer.{key}", value, "must be a number >= 0",
                  ConfigError)
    settings = {**allowed, **hyper}
    if "rank" in settings:  # the EGD methods' rSVD knobs: checked here, not at the first step
        check(settings["rank"] >= 1, "optimizer.rank", settings["rank"], "must be an integer >= 1", ConfigError)
    if "power_iters" in settings:
        check(settings["power_iters"] >= 0, "optimizer.power_iters", settings["power_iters"],
              "must be an integer >= 0", ConfigError)
    named_params = [(n, p) for n, p in named_params if p.requires_grad]
    try:
        opt = method.build(named_params, **hyper)
    except (ValueError, TypeError) as e:  # ConfigErrors too (linalg's "not an option of backend ..."): the section
        raise in_section("optimizer", e) from None  # goes in front unless the message has it
    if "rank" in hyper:  # given (the default 64 is clamped per matrix, min(rank, m, n), as rsvd always did)
        _check_rank(hyper["rank"], named_params, _whitened_matrices(opt))
    return opt


def _whitened_matrices(opt: Optimizer) -> list[Tensor]:
    """The ≥ 2-D parameters whose gradient ``opt`` whitens (for Preconditioned: those its transform sees)."""
    if isinstance(opt, EGD):
        return opt.whitened_params()
    return [p for g in opt.param_groups if g.get("precondition") for p in g["params"] if p.ndim >= 2]


def _check_rank(rank: int, named_params: NamedParams, matrices: list[Tensor]) -> None:
    """A rank above min(m, n) of every whitened matrix (an ``(out, in, ...)`` tensor is whitened as
    ``(out, in·...)``) would be clamped everywhere: refused, naming the largest rank that is used."""
    if not matrices:
        return
    names = {id(p): n for n, p in named_params}
    sizes = [(min(p.shape[0], p[0].numel()), names.get(id(p), "?"), p.shape[0], p[0].numel()) for p in matrices]
    top, name, m, n = max(sizes)
    check(rank <= top, "optimizer.rank", rank,
          f"must be at most {top}, the largest min(m, n) of the whitened matrices ({name}: {m} x {n})", ConfigError)


# ----------------------------------------------------------------------------------------------- groups


def _check_decay(decay: str) -> None:
    if decay not in ("all", "matrices"):
        raise ConfigError(f"optimizer.decay = {decay!r}: must be 'all' or 'matrices'")


def select_whitened(named_params: NamedParams, whiten: str | Sequence[str], field: str = "whiten") -> set[str]:
    """Names of the parameters to whiten: ``"all"`` ≥ 2-D parameters, ``"none"``, or glob patterns.

    ``field`` is the config key that holds ``whiten``, for the error messages.
    """
    if whiten == "all":
        return {n for n, p in named_params if p.ndim >= 2}
    if whiten == "none":
        return set()
    if isinstance(whiten, str) or not all(isinstance(w, str) for w in whiten):
        raise ConfigError(f"optimizer.{field} = {whiten!r}: must be 'all', 'none' or a list of name patterns")
    chosen: set[str] = set()
    for pattern in whiten:
        hits = {n for n, p in named_params if fnmatch.fnmatchcase(n, pattern)}
        if not hits:
            names = ", ".join(n for n, _ in named_params)
            raise ConfigError(
                f"optimizer.{field} = {whiten!r}: pattern {pattern!r} matches no parameter; parameters: {names}"
            )
        flat = [n for n, p in named_params if n in hits and p.ndim < 2]
        if flat:
            raise ConfigError(
                f"optimizer.{field} = {whiten!r}: pattern {pattern!r} matches parameters with < 2 dims: {flat}"
            )
        chosen |= hits
    return chosen


def param_groups(
    named_params: NamedParams,
    weight_decay: float,
    decay: str,
    flag: str | None = None,
    flagged: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Split parameters by (decayed?, flagged?) into torch param groups; empty groups are left out."""
    _check_decay(decay)
    buckets: dict[tuple[bool, bool], list[Tensor]] = {}
    for n, p in named_params:
        decayed = decay == "all" or p.ndim >= 2
        buckets.setdefault((decayed, n in (flagged or ())), []).append(p)
    groups = []
    for (decayed, on), params in buckets.items():
        g: dict[str, Any] = {"params": params, "weight_decay": weight_decay if decayed else 0.0}
        if flag is not None:
            g[flag] = on
        groups.append(g)
    return groups


# ------------------------------------------------------------------------------------------ inert keys


def _ignores_whitening(s: Settings) -> set[str]:
    """The EGD methods' sketch keys: ``rank`` and ``power_iters`` go to polar for ``backend = "rsvd"`` only
    (:func:`egalitarian.transforms.whitening_options`), and ``seed`` seeds rsvd's sketch only."""
    return set() if s.get("backend") == "rsvd" else {"rank", "power_iters", "seed"}


def _ignores_egd(s: Settings) -> set[str]:
    """:class:`egalitarian.optim.EGD`'s keys: ``rms_target`` (read by ``scale = "rms"`` only) and, without
    momentum, ``momentum_position`` (momentum 0 is the identity, before or after the whitening)."""
    out = {"rms_target"} if s.get("scale") != "rms" else set()
    return out | ({"momentum_position"} if s.get("momentum") == 0 else set())


def _ignores_base(s: Settings) -> set[str]:
    """The keys :func:`_base_kwargs` does not pass to the base optimizer: ``momentum`` to Adam, AdamW and RAdam;
    ``betas`` and ``eps`` to SGD; ``betas`` to RMSprop."""
    return {"sgd": {"betas", "eps"}, "rmsprop": {"betas"}}.get(s.get("base"), {"momentum"})


# ---------------------------------------------------------------------------------------------- methods


def _torch_method(name: str, cls: type[Optimizer], summary: str, **defaults: Any) -> None:
    """Register ``name``: the ``torch.optim`` class ``cls`` over the decay groups of ``weight_decay`` and ``decay``
    (added, default ``"all"``), every other key passed to ``cls`` (``betas`` as a tuple).  ``defaults`` are the
    method's keys and defaults, in order; the builder's signature shows them, as a hand-written builder's would."""
    keys = {**defaults, "decay": "all"}

    def build(named_params: NamedParams, **hyper: Any) -> Optimizer:
        kwargs = {**keys, **hyper}
        groups = param_groups(named_params, kwargs.pop("weight_decay"), kwargs.pop("decay"))
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        return cls(groups, **kwargs)

    build.__doc__ = summary
    build.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("named_params", inspect.Parameter.POSITIONAL_OR_KEYWORD),
         *(inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in keys.items())]
    )
    register(name)(build)


_torch_method("sgd", torch.optim.SGD,
              "SGD (torch.optim.SGD): p ← p − lr·(g + wd·p), optional (Nesterov) momentum; wd is coupled (L2).",
              lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0)
_torch_method("adam", torch.optim.Adam,
              "Adam (torch.optim.Adam) with coupled L2 weight decay, as in the Grokfast transformer runs.",
              lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
_torch_method("adamw", torch.optim.AdamW,
              "AdamW (torch.optim.AdamW): Adam with decoupled weight decay p ← p(1 − lr·wd).",
              lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
_torch_method("radam", torch.optim.RAdam,
              "RAdam (torch.optim.RAdam, Liu et al. 2020): Adam with a rectified warm-up of the adaptive lr; "
              "coupled L2.",
              lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
_torch_method("rmsprop", torch.optim.RMSprop,
              "RMSprop (torch.optim.RMSprop, torch's defaults): g / (sqrt(EMA_alpha(g²)) + eps), opt. momentum; "
              "coupled L2.", lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0)


@register("egd", lambda s: _ignores_whitening(s) | _ignores_egd(s))
def egd(
    named_params: NamedParams,
    *,
    lr: float = 0.7,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    weight_decay_mode: str = "decoupled",
    decay: str = "all",
    whiten: str | list[str] = "all",
    backend: str = "auto",
    rtol: float = 0.0,
    clamp_eps: float = 0.0,
    rank: int = 64,
    power_iters: int = 2,
    seed: int = 0,
    momentum_position: str = "after",
    scale: str = "none",
    rms_target: float = 0.2,
    row_blocks: int = 1,
) -> Optimizer:
    """EGD: whitened SGD step p ← p − lr·U Vᵀ on selected matrices, plain SGD elsewhere (Saheb Pasand & Dohmatob 2026).

    ``rtol = 0`` and ``clamp_eps = 0`` mean the defaults of :func:`egalitarian.linalg.polar` (cutoff
    ``max(m, n)·ε``); ``clamp_eps > 0`` selects the paper's clamp ``1/max(s, clamp_eps)``.
    ``momentum_position`` (``"after"``/``"before"`` the whitening), ``scale`` (``"none"``, ``"muon"``, ``"rms"``
    with ``rms_target``) and ``row_blocks`` (every whitened matrix as that many blocks of rows) are
    :class:`egalitarian.optim.EGD`'s conventions, equations there.
    """
    chosen = select_whitened(named_params, whiten)
    groups = param_groups(named_params, weight_decay, decay, "whiten", chosen)
    return EGD(
        groups,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        weight_decay_mode=weight_decay_mode,
        backend=backend,
        rtol=rtol or None,
        clamp_eps=clamp_eps or None,
        rank=rank,
        power_iters=power_iters,
        seed=seed,
        momentum_position=momentum_position,
        scale=scale,
        rms_target=rms_target,
        row_blocks=row_blocks,
    )


def _preconditioned(
    named_params: NamedParams,
    base: type[Optimizer],
    transform: GradientTransform,
    select: str | Sequence[str],
    weight_decay: float,
    decay: str,
    *,
    whitens: bool = False,
    **base_kwargs: Any,
) -> Optimizer:
    """``transform`` on the selected parameters (``"all"`` = every parameter here), then ``base``'s step.

    ``whitens``: ``transform`` is whitening alone (so the switch-off rule may turn it off).
    """
    chosen = {n for n, _ in named_params} if select == "all" else select_whitened(named_params, select)
    groups = param_groups(named_params, weight_decay, decay, "precondition", chosen)
    return Preconditioned(groups, base, transform, whitens=whitens, **base_kwargs)


@register("egd_adam", lambda s: _ignores_whitening(s) | _ignores_base(s))
def egd_adam(
    named_params: NamedParams,
    *,
    base: str = "adam",
    lr: float = 1e-3,
    betas: tuple[float, float] | list[float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    decay: str = "all",
    whiten: str | list[str] = "all",
    backend: str = "auto",
    rtol: float = 0.0,
    clamp_eps: float = 0.0,
    rank: int = 64,
    power_iters: int = 2,
    seed: int = 0,
) -> Optimizer:
    """EGD+Adam: whiten the selected matrices' gradients, then ``base``'s step: torch.optim.Adam (default; coupled
    L2 after whitening), AdamW, SGD, RAdam or RMSprop."""
    transform = _whiten(backend, rtol, clamp_eps, rank, power_iters, seed)
    return _preconditioned(
        named_params,
        _base(base),
        transform,
        whiten,
        weight_decay,
        decay,
        whitens=True,
        **_base_kwargs(base, lr, betas, eps, momentum),
    )


def _whiten(
    backend: str, rtol: float, clamp_eps: float, rank: int, power_iters: int, seed: int
) -> GradientTransform:
    """The whitening transform of the EGD methods' shared keys (``0`` = polar's default for rtol, clamp_eps)."""
    options = whitening_options(backend, rtol=rtol or None, clamp_eps=clamp_eps or None, rank=rank,
                                power_iters=power_iters)
    return whiten_transform(backend, seed=seed, **options)


_BASES = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam,
          "rmsprop": torch.optim.RMSprop}


def _base(name: str) -> type[Optimizer]:
    if name not in _BASES:
        raise ConfigError(f"optimizer.base = {name!r}: must be one of {', '.join(_BASES)}")
    return _BASES[name]


def _base_kwargs(base: str, lr: float, betas: Sequence[float], eps: float, momentum: float) -> dict[str, Any]:
    """The base optimizer's keywords from a method's shared keys: sgd takes lr and momentum; adam, adamw and radam
    take lr, betas and eps; rmsprop takes lr, eps and momentum, with torch's smoothing constant alpha = 0.99 (its
    ``betas`` are not used)."""
    if base == "sgd":
        return {"lr": lr, "momentum": momentum}
    if base == "rmsprop":
        return {"lr": lr, "eps": eps, "momentum": momentum}
    return {"lr": lr, "betas": tuple(betas), "eps": eps}


@register("grokfast", _ignores_base)
def grokfast(
    named_params: NamedParams,
    *,
    base: str = "adam",
    lr: float = 1e-3,
    betas: tuple[float, float] | list[float] = (0.9, 0.98),
    eps: float = 1e-8,
    momentum: float = 0.0,
    weight_decay: float = 0.005,
    decay: str = "all",
    alpha: float = 0.98,
    lamb: float = 2.0,
    normalize: bool = False,
) -> Optimizer:
    """Grokfast-EMA (Lee et al. 2024): g + λ·EMA_α(g) fed to a base optimizer (adam, adamw, sgd, radam or rmsprop)."""
    transform = grokfast_ema(alpha, lamb, normalize)
    return _preconditioned(
        named_params, _base(base), transform, "all", weight_decay, decay, **_base_kwargs(base, lr, betas, eps, momentum)
    )


@register("grokfast_ma", _ignores_base)
def grokfast_ma_method(
    named_params: NamedParams,
    *,
    base: str = "adam",
    lr: float = 1e-3,
    betas: tuple[float, float] | list[float] = (0.9, 0.98),
    eps: float = 1e-8,
    momentum: float = 0.0,
    weight_decay: float = 0.01,
    decay: str = "all",
    window_size: int = 100,
    lamb: float = 5.0,
    normalize: bool = False,
) -> Optimizer:
    """Grokfast-MA (Lee et al. 2024): g + λ·mean of the last w gradients, fed to a base optimizer."""
    transform = grokfast_ma(window_size, lamb, normalize=normalize)
    return _preconditioned(
        named_params, _base(base), transform, "all", weight_decay, decay, **_base_kwargs(base, lr, betas, eps, momentum)
    )


@register("egd_grokfast", lambda s: _ignores_whitening(s) | _ignores_base(s))
def egd_grokfast(
    named_params: NamedParams,
    *,
    base: str = "adamw",
    lr: float = 1e-3,
    betas: tuple[float, float] | list[float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.0,
    weight_decay: float = 0.01,
    decay: str = "all",
    backend: str = "auto",
    rtol: float = 0.0,
    clamp_eps: float = 0.0,
    rank: int = 64,
    power_iters: int = 2,
    seed: int = 0,
    alpha: float = 0.98,
    lamb: float = 2.0,
) -> Optimizer:
    """EGD on every matrix, then Grokfast-EMA on every gradient, then a base optimizer (the paper's MNIST order)."""
    transform = chain(_whiten(backend, rtol, clamp_eps, rank, power_iters, seed), grokfast_ema(alpha, lamb))
    return _preconditioned(
        named_params, _base(base), transform, "all", weight_decay, decay, **_base_kwargs(base, lr, betas, eps, momentum)
    )


@register("column_norm")
def column_norm_method(
    named_params: NamedParams,
    *,
    lr: float = 0.7,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    decay: str = "all",
    whiten: str | list[str] = "all",
    min_norm: float = 0.01,
) -> Optimizer:
    """Column normalisation (EGD paper's baseline): each unit's incoming-gradient row / max(‖row‖, 0.01), then SGD."""
    return _preconditioned(
        named_params, torch.optim.SGD, column_norm(min_norm), whiten, weight_decay, decay, lr=lr, momentum=momentum
    )


@register("perp_adamw")
def perp_adamw(
    named_params: NamedParams,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] | list[float] = (0.9, 0.99),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decay: str = "all",
) -> Optimizer:
    """⊥AdamW (Prieto et al. 2025): drop the gradient component along the weights, keep its norm, then AdamW."""
    return _preconditioned(
        named_params,
        torch.optim.AdamW,
        perp_to_weights(),
        "all",
        weight_decay,
        decay,
        lr=lr,
        betas=tuple(betas),
        eps=eps,
    )


@register("perp_sgd")
def perp_sgd(
    named_params: NamedParams,
    *,
    lr: float = 0.1,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    decay: str = "all",
) -> Optimizer:
    """⊥SGD (Prieto et al. 2025): the ⊥Grad projection in front of torch.optim.SGD."""
    return _preconditioned(
        named_params, torch.optim.SGD, perp_to_weights(), "all", weight_decay, decay, lr=lr, momentum=momentum
    )


@register("muon")
def muon(
    named_params: NamedParams,
    *,
    lr: float = 0.02,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    weight_decay: float = 0.1,
    adjust_lr_fn: str = "original",
    select: str | list[str] = "all",
    adamw_lr: float = 3e-4,
    adamw_betas: tuple[float, float] | list[float] = (0.9, 0.95),
    adamw_weight_decay: float = 0.0,
    ns_dtype: str = "bfloat16",
) -> Optimizer:
    """Muon (torch.optim.Muon, bf16 Newton–Schulz; ``ns_dtype = "float32"``: the same in fp32) on selected 2-D
    matrices, AdamW on everything else."""
    if select == "all":
        chosen = {n for n, p in named_params if p.ndim == 2 and "emb" not in n}
    else:
        chosen = select_whitened(named_params, select, "select")
    bad = [n for n, p in named_params if n in chosen and p.ndim != 2]
    if bad:
        raise ConfigError(f"optimizer.select = {select!r}: Muon takes only 2-D parameters, got {bad}")
    return MuonWithAdamW(
        [p for n, p in named_params if n in chosen],
        [p for n, p in named_params if n not in chosen],
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        ns_steps=ns_steps,
        weight_decay=weight_decay,
        adjust_lr_fn=None if adjust_lr_fn == "original" else adjust_lr_fn,
        adamw_lr=adamw_lr,
        adamw_betas=tuple(adamw_betas),
        adamw_weight_decay=adamw_weight_decay,
        ns_dtype=ns_dtype,
    )


@register("egd_aux", _ignores_egd)
def egd_aux(
    named_params: NamedParams,
    *,
    lr: float = 0.02,
    momentum: float = 0.0,
    nesterov: bool = False,
    momentum_position: str = "after",
    scale: str = "none",
    rms_target: float = 0.2,
    weight_decay: float = 0.0,
    whiten: str | list[str] = "all",
    backend: str = "auto",
    rtol: float = 0.0,
    clamp_eps: float = 0.0,
    aux_lr: float = 3e-4,
    aux_betas: tuple[float, float] | list[float] = (0.9, 0.95),
    aux_eps: float = 1e-8,
    aux_weight_decay: float = 0.0,
) -> Optimizer:
    """EGD on the selected matrices, AdamW on the rest (embeddings, head, norms, biases): egd_for's optimizer.

    One :class:`egalitarian.routing.EGDWithAuxAdamW` with two groups: ``whiten`` (patterns, as every EGD method's)
    picks the EGD group, which steps as :class:`egalitarian.optim.EGD` with ``lr``, ``momentum``, ``nesterov``,
    ``momentum_position``, ``scale``, ``rms_target``, ``weight_decay`` and the whitening keys; every other
    parameter steps as ``torch.optim.AdamW`` with the ``aux_*`` keys.  Give ``whiten`` the matrices
    :func:`egalitarian.routing.route` would whiten (for ``models.GPT``: ``["blocks.*.attn.*.weight",
    "blocks.*.mlp.*.weight"]``), as ``egd_for(model, ...)`` does on a model.
    """
    chosen = select_whitened(named_params, whiten)
    groups = [{"params": [p for n, p in named_params if (n in chosen) == egd], "use_egd": egd} for egd in (True, False)]
    return EGDWithAuxAdamW(
        [g for g in groups if g["params"]],
        lr,
        aux_lr=aux_lr,
        aux_betas=tuple(aux_betas),
        aux_eps=aux_eps,
        aux_weight_decay=aux_weight_decay,
        momentum=momentum,
        nesterov=nesterov,
        momentum_position=momentum_position,
        scale=scale,
        rms_target=rms_target,
        weight_decay=weight_decay,
        backend=backend,
        rtol=rtol or None,
        clamp_eps=clamp_eps or None,
    )


def _variant(name: str, of: str, summary: str, **fixed: Any) -> None:
    """Register ``name`` as method ``of`` with other defaults (e.g. an EGD backend)."""
    OPTIMIZERS[name] = Method(name, functools.partial(OPTIMIZERS[of].build, **fixed), summary, OPTIMIZERS[of].ignores)


_variant(
    "egd_adamw",
    "egd_adam",
    "EGD+AdamW: whiten the selected matrices' gradients, then torch.optim.AdamW (decoupled decay).",
    base="adamw",
    weight_decay=0.01,
)
_variant("egd_svd", "egd", "EGD with the exact fp64 SVD backend (the reference).", backend="svd")
_variant("egd_rsvd", "egd", "EGD-RSVD (paper App. C): rank-r randomized polar factor; drops the rest.", backend="rsvd")
_variant(
    "egd_newton_schulz", "egd", "EGD with matmul-only Newton–Schulz whitening (approximate).", backend="newton-schulz"
)
_variant("egd_momentum", "egd", "EGD with heavy-ball momentum 0.9 on the whitened gradients.", momentum=0.9)

r"""``torch.optim`` optimizers built from :mod:`egalitarian.transforms` plus a base step.

* :class:`EGD` — Egalitarian Gradient Descent (Saheb Pasand & Dohmatob, ICLR 2026, arXiv 2510.04930) with
  optional momentum and weight decay.
* :class:`Preconditioned` — any gradient transform (EGD's whitening by default) in front of any
  ``torch.optim`` optimizer (SGD, Adam, AdamW, …), as in the paper's transformer and MNIST runs.
* :class:`MuonWithAdamW` — the Muon baseline: ``torch.optim.Muon`` for hidden matrices plus ``torch.optim.AdamW``
  for everything else, as one optimizer.

Both work unchanged under ``DistributedDataParallel``: DDP all-reduces ``.grad`` during ``backward()``, so
every rank whitens the same averaged gradient and takes the same step.  Sharded setups (FSDP, ZeRO) differ:
each rank holds only a slice of every matrix, and the polar factor of a matrix is not the concatenation of
the polar factors of its slices, so a rank must all-gather the full gradient matrix (or the transform must
be assigned to one owner rank per matrix and the result scattered back), as distributed Muon does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .linalg import METHODS
from .transforms import GradientTransform, add_decayed_weights, trace, whiten

__all__ = ["EGD", "MuonWithAdamW", "Preconditioned"]

_WD_MODES = ("decoupled", "l2")


def _evaluate_closure(closure: Callable[[], float] | None) -> float | None:
    """``torch.optim``'s closure convention: re-evaluate the loss with gradients enabled."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _check(name: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name} = {value!r}: {allowed}")


class EGD(Optimizer):
    r"""Egalitarian Gradient Descent.

    For each parameter ``p`` with gradient ``g`` (η = ``lr``, λ = ``weight_decay``, μ = ``momentum``):

    .. math::
        g &\leftarrow g + \lambda p                          &&\text{if weight\_decay\_mode = "l2"} \\
        d &\leftarrow (G G^\top)^{-1/2} G = U V^\top          &&\text{if the group whitens and } p
              \text{ has} \ge 2 \text{ dims } (G = \mathrm{mat}(g),\ G = U S V^\top) \\
        d &\leftarrow g                                        &&\text{otherwise} \\
        b &\leftarrow \mu b + d,\quad d \leftarrow b \text{ (or } d + \mu b \text{ with Nesterov)}
              &&\text{if } \mu > 0 \\
        p &\leftarrow (1 - \eta\lambda)\, p                    &&\text{if weight\_decay\_mode = "decoupled"} \\
        p &\leftarrow p - \eta\, d

    ``mat(g)`` views a conv kernel ``(out, in, kh, kw)`` as ``(out, in·kh·kw)``.  Parameters with fewer than
    2 dimensions (biases) take the plain SGD step with the same momentum and decay.  Momentum accumulates
    *whitened* gradients (EGD as a preconditioner of heavy-ball SGD).  With ``momentum=0`` and
    ``weight_decay_mode="l2"`` this is exactly the paper's update, decay term whitened along with the data
    gradient (the official code puts ``0.5·wd·‖W‖²`` in the loss).

    Args:
        params: parameters or param groups.  Per group, ``whiten=False`` opts the group out (plain SGD); the
            paper whitens only the first layer's matrix, e.g.
            ``EGD([{"params": [mlp.layers[0].weight]}, {"params": rest, "whiten": False}], lr=0.7)``.
        lr: step size η (> 0).
        momentum: μ ≥ 0; ``nesterov`` needs μ > 0.
        weight_decay: λ ≥ 0, decoupled by default; ``weight_decay_mode="l2"`` adds λp to the gradient
            before whitening (the paper's convention).
        method, rtol, eps, rank, power_iters, seed: the whitening backend, see
            :func:`egalitarian.linalg.polar`; ``eps`` selects the paper's clamp ``1/max(s, eps)``.

    ``.grad`` is left untouched.  ``step(closure)`` re-evaluates the loss like every ``torch.optim`` optimizer.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        *,
        weight_decay_mode: str = "decoupled",
        whiten: bool = True,
        method: str = "auto",
        rtol: float | None = None,
        eps: float | None = None,
        rank: int = 64,
        power_iters: int = 2,
        seed: int = 0,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            whiten=whiten,
            method=method,
            rtol=rtol,
            eps=eps,
            rank=rank,
            power_iters=power_iters,
            seed=seed,
        )
        self._validate(defaults)
        super().__init__(params, defaults)

    @staticmethod
    def _validate(g: dict[str, Any]) -> None:
        _check("lr", g["lr"], isinstance(g["lr"], (int, float)) and g["lr"] > 0, "must be a number > 0")
        _check("momentum", g["momentum"], 0 <= g["momentum"] < 1, "must be in [0, 1)")
        _check("nesterov", g["nesterov"], not g["nesterov"] or g["momentum"] > 0, "needs momentum > 0")
        _check("weight_decay", g["weight_decay"], g["weight_decay"] >= 0, "must be >= 0")
        _check(
            "weight_decay_mode",
            g["weight_decay_mode"],
            g["weight_decay_mode"] in _WD_MODES,
            f"must be one of {', '.join(_WD_MODES)}",
        )
        _check("whiten", g["whiten"], isinstance(g["whiten"], bool), "must be True or False")
        _check("method", g["method"], g["method"] in METHODS, f"must be one of {', '.join(METHODS)}")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._validate(self.param_groups[-1])

    @staticmethod
    def transforms_for(group: dict[str, Any]) -> list[tuple[str, GradientTransform]]:
        """The named stages one step of ``group`` applies before ``p ← (1−ηλ)p − η·d``, in order.

        Each stage keeps its own slot in the parameter's state, so turning whitening off and on between steps
        (the paper's switch-off rule) leaves the momentum buffer where it is.
        """
        stages = []
        if group["weight_decay_mode"] == "l2":
            stages.append(("l2", add_decayed_weights(group["weight_decay"])))
        if group["whiten"]:
            stages.append(
                (
                    "whiten",
                    whiten(
                        group["method"],
                        rtol=group["rtol"],
                        eps=group["eps"],
                        seed=group["seed"],
                        rank=group["rank"],
                        power_iters=group["power_iters"],
                    ),
                )
            )
        stages.append(("momentum", trace(group["momentum"], group["nesterov"])))
        return stages

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = _evaluate_closure(closure)
        for group in self.param_groups:
            stages = self.transforms_for(group)
            lr, wd = group["lr"], group["weight_decay"]
            decoupled = group["weight_decay_mode"] == "decoupled" and wd != 0
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("EGD does not support sparse gradients")
                state = self.state[p]
                d = p.grad
                for key, t in stages:
                    d, state[key] = t.update(d, state[key] if key in state else t.init(p), p)
                if decoupled:
                    p.mul_(1 - lr * wd)
                p.add_(d, alpha=-lr)
        return loss


class Preconditioned(Optimizer):
    """A gradient transform in front of any ``torch.optim`` optimizer: ``base.step()`` sees ``T(grad)``.

    ``Preconditioned(params, torch.optim.AdamW, whiten(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01)``
    builds ``AdamW(params, lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01)`` (every keyword goes to the base
    optimizer unchanged) and, at each step, replaces every gradient ``g`` by ``T(g)`` before AdamW's step.
    This is EGD+Adam(W) of the paper's transformer and MNIST runs: Adam's moments accumulate whitened
    gradients; Adam's coupled ``weight_decay`` is added inside Adam's step, i.e. *after* whitening, and
    AdamW's is decoupled.

    What users see in ``.grad``: the transformed gradient is only shown to the base optimizer during its
    step; afterwards every ``p.grad`` is restored to the raw gradient from ``backward()``, so logging,
    clipping and diagnostics after ``step()`` see what they expect.

    Param groups take one extra key, ``precondition`` (default ``True``); ``False`` leaves that group's
    gradients untouched.  ``param_groups`` are shared with the base optimizer, so LR schedulers work.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base: type[Optimizer] = torch.optim.Adam,
        transform: GradientTransform | None = None,
        **base_kwargs: Any,
    ) -> None:
        if not (isinstance(base, type) and issubclass(base, Optimizer)):
            raise TypeError(f"base = {base!r}: must be a torch.optim.Optimizer subclass (not an instance)")
        self.transform = transform if transform is not None else whiten()
        super().__init__(params, {"precondition": True})
        self.base = base(self.param_groups, **base_kwargs)
        self.param_groups = self.base.param_groups  # the same group dicts: lr schedules reach the base
        self.defaults = {**self.base.defaults, "precondition": True}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if hasattr(self, "base"):
            param_group.setdefault("precondition", True)
            self.base.add_param_group(param_group)
        else:
            super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = _evaluate_closure(closure)
        raw: list[tuple[Tensor, Tensor]] = []
        for group in self.param_groups:
            if not group.get("precondition", True):
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "transform" not in state:
                    state["transform"] = self.transform.init(p)
                new, state["transform"] = self.transform.update(p.grad, state["transform"], p)
                raw.append((p, p.grad))
                p.grad = new
        try:
            self.base.step()
        finally:
            for p, g in raw:
                p.grad = g
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:
        index = {p: i for i, p in enumerate(self._params())}
        return {
            "base": self.base.state_dict(),
            "transform_state": {index[p]: s["transform"] for p, s in self.state.items() if "transform" in s},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = copy.deepcopy(state_dict)  # never alias the caller's tensors
        self.base.load_state_dict(state_dict["base"])
        self.param_groups = self.base.param_groups
        params = self._params()
        self.state.clear()
        for i, s in state_dict["transform_state"].items():
            p = params[int(i)]
            self.state[p] = {"transform": _to_param(s, p)}


def _to_param(value: Any, p: Tensor) -> Any:
    """Move a saved transform state onto ``p``'s device (floating tensors also to ``p``'s dtype)."""
    if isinstance(value, Tensor):
        dtype = p.dtype if value.is_floating_point() and p.is_floating_point() else value.dtype
        return value.to(device=p.device, dtype=dtype)
    if isinstance(value, dict):
        return {k: _to_param(v, p) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_param(v, p) for v in value)
    return value


_ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


class _JoinedState(Mapping):
    """Read-only view of several optimizers' ``state`` (disjoint parameters), without creating entries."""

    def __init__(self, *optimizers: Optimizer) -> None:
        self._optimizers = optimizers

    def __getitem__(self, key: Any) -> Any:
        for opt in self._optimizers:
            if key in opt.state:
                return opt.state[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        for opt in self._optimizers:
            yield from opt.state

    def __len__(self) -> int:
        return sum(len(opt.state) for opt in self._optimizers)


class MuonWithAdamW(Optimizer):
    r"""``torch.optim.Muon`` for the hidden 2-D matrices plus ``torch.optim.AdamW`` for every other parameter.

    ``MuonWithAdamW(muon_params, adamw_params, lr=0.02, ...)`` owns two real torch optimizers, ``.muon`` and
    ``.adamw``, and steps both; ``param_groups`` is the list of both optimizers' group dicts (the same dicts,
    Muon's first), each tagged ``use_muon=True/False``, so LR schedulers reach both (a ``LambdaLR`` factor
    scales Muon's ``lr`` and AdamW's ``adamw_lr`` alike).  Route hidden weight matrices to ``muon_params``;
    biases, LayerNorm gains, embeddings and the output head go to ``adamw_params`` (the Muon authors' advice:
    embeddings and the head are not "hidden" matrices even though they are 2-D).  Either set may be empty, not
    both; each may also be a list of param-group dicts.

    What ``torch.optim.Muon`` (torch 2.13) does per matrix ``W`` (out × in) with gradient ``g``,
    η = ``lr``, μ = ``momentum``, λ = ``weight_decay``:

    .. math::
        B &\leftarrow \mathrm{lerp}(B, g, 1-\mu) = \mu B + (1-\mu)\, g \qquad (B_0 = 0,\ \text{so } B_1 = (1-\mu) g) \\
        U &\leftarrow \mathrm{lerp}(g, B, \mu) = (1-\mu)\, g + \mu B \ \text{(Nesterov)}, \quad U \leftarrow B
              \ \text{otherwise} \\
        O &\leftarrow \mathrm{NS}_5(U) \\
        W &\leftarrow (1 - \eta\lambda)\, W - \eta'\, O

    * The momentum is an EMA (``lerp``), not torch's documented ``B ← μB + g``; the two differ by the factor
      (1−μ), which the Frobenius normalisation inside NS removes (KellerJordan/Muon#52).
    * ``NS₅``: the input is cast to **bfloat16**, transposed if rows > cols, divided by
      ``max(‖U‖_F, 1e-7)``, then 5 quintic Newton–Schulz steps ``X ← aX + (bA + cA²)X`` with ``A = XXᵀ`` and
      Muon's coefficients (a, b, c) = (3.4445, −4.775, 2.0315).  This is *not* exactly ``U Vᵀ``: measured on
      torch 2.13 CPU, the singular values of the output land in about [0.68, 1.2] for Gaussian matrices, and
      directions with σ/‖U‖_F ≲ 1e-3 stay far below 1 (a 128×128 Gaussian's smallest came out 0.04–0.18).
      EGD's exact whitening gives all ones.  The update ``O`` is bfloat16, added to the float32 weight.
    * ``η'``: ``adjust_lr_fn=None`` or ``"original"`` (Keller Jordan's) η' = η·√max(1, out/in);
      ``"match_rms_adamw"`` (Moonshot's) η' = 0.2·η·√max(out, in).  The decoupled decay uses the
      *unadjusted* η, and its default is λ = 0.1 (``weight_decay`` here is Muon's; AdamW's is
      ``adamw_weight_decay``, default 0).
    * Muon raises for non-2-D parameters; here a non-2-D entry in ``muon_params`` raises ``ValueError``
      naming ``muon_params`` before anything is built.  Conv kernels must go to AdamW (or be flattened by
      the model).

    AdamW is ``torch.optim.AdamW(adamw_params, lr=adamw_lr, betas=adamw_betas, eps=adamw_eps,
    weight_decay=adamw_weight_decay)`` unchanged.  Defaults follow KellerJordan/Muon's recommendations
    (Muon lr 0.02, momentum 0.95, Nesterov, 5 NS steps; Adam lr 3e-4, betas (0.9, 0.95)).

    ``state_dict()`` returns ``{"muon": ..., "adamw": ...}`` (each a torch optimizer state dict, ``None`` for an
    empty set); ``load_state_dict`` copies what it is given.  ``state`` is a read-only view of both
    optimizers' per-parameter state.
    """

    def __init__(
        self,
        muon_params: Iterable[Tensor] | Iterable[dict[str, Any]],
        adamw_params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.1,
        adjust_lr_fn: str | None = None,
        adamw_lr: float = 3e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
        *,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
        ns_eps: float = 1e-7,
    ) -> None:
        _check("lr", lr, isinstance(lr, (int, float)) and lr > 0, "must be a number > 0")
        _check("momentum", momentum, 0 <= momentum < 1, "must be in [0, 1)")
        _check("ns_steps", ns_steps, isinstance(ns_steps, int) and 1 <= ns_steps < 100, "must be an int in [1, 100)")
        _check("weight_decay", weight_decay, weight_decay >= 0, "must be >= 0")
        _check(
            "adjust_lr_fn",
            adjust_lr_fn,
            adjust_lr_fn in _ADJUST_LR_FNS,
            "must be None, 'original' or 'match_rms_adamw'",
        )
        _check("adamw_lr", adamw_lr, isinstance(adamw_lr, (int, float)) and adamw_lr > 0, "must be a number > 0")
        _check(
            "adamw_betas",
            adamw_betas,
            len(adamw_betas) == 2 and all(0 <= b < 1 for b in adamw_betas),
            "must be two numbers in [0, 1)",
        )
        _check("adamw_eps", adamw_eps, adamw_eps >= 0, "must be >= 0")
        _check("adamw_weight_decay", adamw_weight_decay, adamw_weight_decay >= 0, "must be >= 0")

        muon_groups, muon_ps = _as_groups(muon_params)
        adamw_groups, adamw_ps = _as_groups(adamw_params)
        for i, p in enumerate(muon_ps):
            _check(
                "muon_params",
                f"[{i}] of shape {tuple(p.shape)}",
                p.ndim == 2,
                "torch.optim.Muon takes 2-D matrices only; put biases, gains and other non-2-D "
                "parameters in adamw_params",
            )
        if not muon_ps and not adamw_ps:
            raise ValueError("muon_params and adamw_params are both empty: nothing to optimize")
        adamw_ids = {id(p) for p in adamw_ps}
        both = [i for i, p in enumerate(muon_ps) if id(p) in adamw_ids]
        _check("muon_params", f"entries {both}", not both, "also appear in adamw_params (each parameter goes to one)")

        self.muon: torch.optim.Muon | None = None
        self.adamw: torch.optim.AdamW | None = None
        if muon_ps:
            self.muon = torch.optim.Muon(
                muon_groups,
                lr=lr,
                weight_decay=weight_decay,
                momentum=momentum,
                nesterov=nesterov,
                ns_coefficients=tuple(ns_coefficients),
                eps=ns_eps,
                ns_steps=ns_steps,
                adjust_lr_fn=adjust_lr_fn,
            )
        if adamw_ps:
            self.adamw = torch.optim.AdamW(
                adamw_groups,
                lr=adamw_lr,
                betas=tuple(adamw_betas),
                eps=adamw_eps,
                weight_decay=adamw_weight_decay,
            )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            weight_decay=weight_decay,
            adjust_lr_fn=adjust_lr_fn,
            adamw_lr=adamw_lr,
            adamw_betas=tuple(adamw_betas),
            adamw_eps=adamw_eps,
            adamw_weight_decay=adamw_weight_decay,
            ns_coefficients=tuple(ns_coefficients),
            ns_eps=ns_eps,
        )
        super().__init__(muon_ps + adamw_ps, defaults)
        self._built = True
        self._sync()

    def _subs(self) -> list[Optimizer]:
        return [o for o in (self.muon, self.adamw) if o is not None]

    def _sync(self) -> None:
        """Rebuild ``param_groups`` and ``state`` from the two optimizers (after init, load and add_param_group)."""
        for opt, flag in ((self.muon, True), (self.adamw, False)):
            if opt is not None:
                for g in opt.param_groups:
                    g["use_muon"] = flag
        self.param_groups = [g for o in self._subs() for g in o.param_groups]
        self.state = _JoinedState(*self._subs())  # type: ignore[assignment]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """During construction: Optimizer bookkeeping.  Afterwards: ``use_muon`` (required) picks the optimizer;
        the group's other keys override that optimizer's defaults."""
        if not getattr(self, "_built", False):
            super().add_param_group(param_group)
            return
        param_group = dict(param_group)
        if "use_muon" not in param_group:
            raise ValueError("add_param_group: the group needs use_muon = True (Muon) or False (AdamW)")
        use_muon = bool(param_group.pop("use_muon"))
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        param_group["params"] = params
        if use_muon:
            for i, p in enumerate(params):
                _check(
                    "params",
                    f"[{i}] of shape {tuple(p.shape)}",
                    p.ndim == 2,
                    "a use_muon=True group takes 2-D matrices only",
                )
        opt = self.muon if use_muon else self.adamw
        if opt is None:
            d = self.defaults
            if use_muon:
                opt = self.muon = torch.optim.Muon(
                    [param_group],
                    lr=d["lr"],
                    weight_decay=d["weight_decay"],
                    momentum=d["momentum"],
                    nesterov=d["nesterov"],
                    ns_coefficients=d["ns_coefficients"],
                    eps=d["ns_eps"],
                    ns_steps=d["ns_steps"],
                    adjust_lr_fn=d["adjust_lr_fn"],
                )
            else:
                opt = self.adamw = torch.optim.AdamW(
                    [param_group],
                    lr=d["adamw_lr"],
                    betas=d["adamw_betas"],
                    eps=d["adamw_eps"],
                    weight_decay=d["adamw_weight_decay"],
                )
        else:
            opt.add_param_group(param_group)
        self._sync()

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = _evaluate_closure(closure)
        for opt in self._subs():
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self._subs():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {
            "muon": None if self.muon is None else self.muon.state_dict(),
            "adamw": None if self.adamw is None else self.adamw.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = copy.deepcopy(state_dict)  # never alias the caller's tensors
        for key, opt in (("muon", self.muon), ("adamw", self.adamw)):
            saved = state_dict.get(key)
            if (saved is None) != (opt is None):
                raise ValueError(
                    f"load_state_dict: the saved {key} part is "
                    f"{'empty' if saved is None else 'present'} but this optimizer's is not"
                )
            if opt is not None:
                opt.load_state_dict(saved)
        self._sync()


def _as_groups(params: Iterable[Tensor] | Iterable[dict[str, Any]]) -> tuple[list[Any], list[Tensor]]:
    """Materialise ``params`` (tensors or group dicts, each group's ``params`` made a list) and list its tensors."""
    if isinstance(params, Tensor):
        raise TypeError("params must be an iterable of tensors or dicts, not a single tensor")
    groups: list[Any] = []
    tensors: list[Tensor] = []
    for g in params:
        if isinstance(g, dict):
            ps = [g["params"]] if isinstance(g["params"], Tensor) else list(g["params"])
            groups.append({**g, "params": ps})
            tensors.extend(ps)
        else:
            groups.append(g)
            tensors.append(g)
    return groups, tensors

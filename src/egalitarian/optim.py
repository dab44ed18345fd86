r"""``torch.optim`` optimizers built from :mod:`egalitarian.transforms` plus a base step.

* :class:`EGD` — Egalitarian Gradient Descent (Saheb Pasand & Dohmatob, ICLR 2026, arXiv 2510.04930) with
  optional momentum and weight decay.
* :class:`Preconditioned` — any gradient transform (EGD's whitening by default) in front of any
  ``torch.optim`` optimizer (SGD, Adam, AdamW, …), as in the paper's transformer and MNIST runs.
* :class:`WithAuxAdamW` — the base of the "matrix optimizer + auxiliary AdamW" optimizers (KellerJordan/Muon's
  ``MuonWithAuxAdam`` shape: one optimizer, tagged groups, one ``step``):
  :class:`egalitarian.routing.EGDWithAuxAdamW` and :class:`egalitarian.baselines.MuonWithAdamW`.

EGD and Preconditioned own their whitening switch (the paper's switch-off rule): ``set_whitening(on)`` and
``whitened_params()``.

Public helpers for optimizers built on these: :func:`evaluate_closure` (torch's closure convention) and
:func:`check_egd_group` (the validation of an EGD param group).

Both work under ``DistributedDataParallel`` and FSDP2 (``fully_shard``): when a process group of more than one
rank is initialised, each whitened matrix is whitened once, by its owner rank, and the result reaches every rank
that needs it (:mod:`egalitarian.distributed`); every rank takes the single-process step, to rounding.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Optimizer

from .distributed import global_peaks
from .errors import check
from .linalg import BACKENDS, check_options
from .transforms import (
    SCALES,
    GradientTransform,
    State,
    add_decayed_weights,
    scale,
    stack_layout,
    trace,
    whiten,
    whitening_options,
)

__all__ = ["EGD", "Engine", "Preconditioned", "WithAuxAdamW", "check_egd_group", "evaluate_closure"]

_WD_MODES = ("decoupled", "l2")
_NONFINITE = ("raise", "propagate")
_POSITIONS = ("after", "before")

_WHITEN_KEYS = ("backend", "rtol", "clamp_eps", "seed", "rank", "power_iters", "scale", "rms_target", "row_blocks")
"""The keys of an EGD group that set its whitening: groups equal in all of them (and in ``experts`` and
``transposed``) are whitened in one batch."""

_NONFINITE_DOC = """
    Non-finite gradients (``nonfinite=``, also a param-group key): a step is all or nothing.

    * ``"raise"`` (default): before anything changes, the gradients of every group that says ``"raise"`` are
      checked with one fused reduction (``max|g|`` of each, one device sync per device); if any has a NaN or an
      inf, ``FloatingPointError`` names the first such parameter (its index in ``state_dict()`` order and its
      shape) and **no parameter and no state has changed**.
    * ``"propagate"``: no check and no raise, like ``torch.optim``: NaN and inf flow into the step (a whitened
      matrix whose gradient has a NaN or an inf gets an all-NaN update, see :func:`egalitarian.linalg.polar`).

    Either way every update is computed before the first parameter or state entry is written, so an exception
    raised while computing them (say by a transform of your own) also leaves everything as it was.
"""

_CLIPPING_DOC = """
    Gradient clipping and whitening: the polar factor is scale-invariant (``U Vᵀ`` is the same for ``G`` and
    ``cG``, ``c > 0``), so clipping the gradient norm (``torch.nn.utils.clip_grad_norm_``, which rescales every
    gradient by one factor; the trainer's ``train.clip_grad_norm``) before ``step()`` **never changes the step of
    a whitened matrix**: what follows the whitening (momentum, Adam's moments) sees the same matrices, clipped or
    not.  In EGD without momentum every kept singular value of that step is ``lr`` (times ``c`` with ``scale``):
    its size is set by ``lr`` alone.  Clipping still changes the step of the parameters that are not whitened
    (biases, groups opted out) and, since the global norm includes the whitened matrices' gradients, by how
    much.  Exceptions: element-wise clipping (``clip_grad_value_``) is not a rescaling and does change ``U Vᵀ``;
    where an absolute quantity is not scaled along, the paper's clamp (``clamp_eps=``, ``1/max(s, clamp_eps)``)
    and an L2 term added before whitening (``weight_decay_mode="l2"`` in EGD, ``add_decayed_weights`` in a
    chain), clipping changes the whitened step too; and so it does with EGD's ``momentum_position="before"`` and
    momentum, whose buffer sums gradients clipped by different factors before the whitening
    (``W(μ c₁ g₁ + c₂ g₂)`` is ``W(μ g₁ + g₂)`` only if ``c₁ = c₂``).
"""


def evaluate_closure(closure: Callable[[], float] | None) -> float | None:
    """``torch.optim``'s closure convention, the first line of every ``step(closure)`` here: the loss re-evaluated
    with gradients enabled (``None`` without a closure)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _check_finite(groups: list[dict[str, Any]]) -> None:
    """Raise ``FloatingPointError`` naming the first parameter whose gradient has a NaN or an inf, among the
    groups whose ``nonfinite`` is ``"raise"`` (a group without the key, e.g. Muon's, is not checked).

    One fused reduction per device (``max|g|`` of every gradient: unlike a 2-norm it cannot overflow for a
    finite gradient) and one sync per device; nothing is written.  Sharded gradients (DTensors, FSDP2) are checked
    on their local shards and the peaks maxed over the mesh in one all-reduce, so every rank raises alike
    (:func:`egalitarian.distributed.global_peaks`).
    """
    checked: list[tuple[int, Tensor]] = []
    index = 0
    for g in groups:
        raise_ = g.get("nonfinite") == "raise"
        for p in g["params"]:
            if raise_ and p.grad is not None and p.grad.numel() > 0 and (not p.grad.is_sparse or p.grad._nnz()):
                checked.append((index, p))
            index += 1
    by_device: dict[torch.device, list[tuple[int, Tensor]]] = {}
    for i, p in checked:
        by_device.setdefault(p.grad.device, []).append((i, p))
    bad: list[tuple[int, Tensor, float]] = []
    for items in by_device.values():
        grads = [p.grad.coalesce().values() if p.grad.is_sparse else p.grad for _, p in items]
        peaks = global_peaks(grads)  # sharded gradients (DTensors): maxed over their mesh
        if not bool(torch.isfinite(peaks).all()):
            k = int((~torch.isfinite(peaks)).nonzero()[0, 0])
            bad.append((*items[k], float(peaks[k])))
    if bad:
        i, p, peak = min(bad, key=lambda b: b[0])
        check(False, f"max|params[{i}].grad|", peak,
              f"must be finite (the gradient of parameter {i}, shape {tuple(p.shape)}, has NaN or inf); no parameter "
              "or state was changed; pass nonfinite='propagate' to let NaN/inf into the step", FloatingPointError)


def _check_nonfinite_arg(value: Any) -> None:
    check(value in _NONFINITE, "nonfinite", value, f"must be one of {', '.join(map(repr, _NONFINITE))}")


def _switch_whitening(groups: list[dict[str, Any]], flag: str, on: bool) -> None:
    """Set ``flag`` to ``on`` in every group first chosen for whitening (remembered as ``_whiten_chosen``)."""
    for g in groups:
        g.setdefault("_whiten_chosen", g[flag])
        if g["_whiten_chosen"]:
            g[flag] = on


def _whitened(groups: list[dict[str, Any]], flag: str) -> list[Tensor]:
    """The ≥ 2-D parameters of the groups chosen for whitening (switched off for now or not)."""
    return [p for g in groups if g.get("_whiten_chosen", g[flag]) for p in g["params"] if p.ndim >= 2]


def _check_lr(lr: Any, field: str) -> None:
    """A step size: a finite number > 0, or a 0-d floating tensor holding one (``torch.optim``'s tensor ``lr``,
    read here once, when the group is added: a scheduler's later ``fill_`` is its own business)."""
    if isinstance(lr, Tensor):
        ok = lr.ndim == 0 and lr.is_floating_point() and bool(torch.isfinite(lr)) and bool(lr > 0)
    else:
        ok = isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0
    check(ok, field, lr, "must be a number > 0 (a float, or a 0-d floating tensor)")


_ADDED_KEYS = {"maximize": False}
"""Group keys added after checkpoints were saved, and the value a group saved without one loads with: what the
versions before it did (``torch.optim``'s ``__setstate__`` does the same for its added keys)."""


def _with_added_keys(state_dict: dict[str, Any], has: Callable[[dict[str, Any]], Iterable[str]]) -> dict[str, Any]:
    """``state_dict`` (a shallow copy) whose groups lacking a key of ``_ADDED_KEYS`` that ``has(group)`` lists
    (the keys of such a group today) have its old value; the caller's dict is left as it is."""
    groups = [{**{k: v for k, v in _ADDED_KEYS.items() if k in has(g)}, **g} for g in state_dict["param_groups"]]
    return {**state_dict, "param_groups": groups}


def check_egd_group(g: dict[str, Any]) -> None:
    """Validate an EGD param group (or EGD's defaults): a one-line ValueError naming the first bad key, its value
    and what is allowed; an option its ``backend`` does not take (``clamp_eps`` with ``"newton-schulz"``, say) is a
    ConfigError (:func:`egalitarian.linalg.check_options`).  ``row_blocks`` must divide the rows of every matrix
    the group whitens; the optional key ``experts`` (default False) needs parameters of ≥ 3 dims."""
    _check_lr(g["lr"], "lr")
    check(0 <= g["momentum"] < 1, "momentum", g["momentum"], "must be in [0, 1)")
    check(g["weight_decay"] >= 0, "weight_decay", g["weight_decay"], "must be >= 0")
    mode = g["weight_decay_mode"]
    check(mode in _WD_MODES, "weight_decay_mode", mode, f"must be one of {', '.join(_WD_MODES)}")
    check(isinstance(g["whiten"], bool), "whiten", g["whiten"], "must be True or False")
    check(g["backend"] in BACKENDS, "backend", g["backend"], f"must be one of {', '.join(BACKENDS)}")
    options = _polar_options(g)
    check_options(g["backend"], options, options)
    _check_nonfinite_arg(g["nonfinite"])
    position, scale = g["momentum_position"], g["scale"]
    check(position in _POSITIONS, "momentum_position", position, f"must be one of {', '.join(map(repr, _POSITIONS))}")
    check(scale in SCALES, "scale", scale, f"must be one of {', '.join(map(repr, SCALES))}")
    rho = g["rms_target"]
    check(isinstance(rho, (int, float)) and not isinstance(rho, bool) and math.isfinite(rho) and rho > 0,
          "rms_target", rho, "must be a number > 0")
    k = g["row_blocks"]
    check(isinstance(k, int) and not isinstance(k, bool) and k >= 1, "row_blocks", k, "must be an integer >= 1")
    experts = g.get("experts", False)
    check(isinstance(experts, bool), "experts", experts, "must be True or False")
    transposed = g.get("transposed", False)
    check(isinstance(transposed, bool), "transposed", transposed, "must be True or False")
    check(not (experts and transposed), "transposed", transposed, "cannot be combined with experts=True")
    check(isinstance(g["maximize"], bool), "maximize", g["maximize"], "must be True or False")
    if g["whiten"] and (k > 1 or experts or transposed):
        for p in g.get("params", ()):
            if p.ndim >= 2:
                check(not transposed or p.ndim == 2, "transposed", transposed,
                      f"needs 2-D parameters (in, out): a parameter of shape {tuple(p.shape)}")
                # row_blocks divides the rows (of the transpose, when transposed); experts: >= 3 dims
                stack_layout(p.shape[::-1] if transposed else p.shape, k, experts)


def _polar_options(g: dict[str, Any]) -> dict[str, Any]:
    """The :func:`~egalitarian.linalg.polar` options of an EGD group's whitening keys."""
    return whitening_options(g["backend"], rtol=g["rtol"], clamp_eps=g["clamp_eps"], rank=g["rank"],
                             power_iters=g["power_iters"])


def _check_saved_groups(state_dict: dict[str, Any], keys: Callable[[dict[str, Any]], Iterable[str]], who: str) -> None:
    """Before a load: a ValueError if a saved param group lacks one of ``keys(group)`` (the keys every group of
    this optimizer has): it was saved by another version of ``who``, and nothing is loaded."""
    for i, g in enumerate(state_dict["param_groups"]):
        missing = [k for k in keys(g) if k not in g]
        check(not missing, f"state_dict param_groups[{i}]", f"without {', '.join(map(repr, missing))}",
              f"saved by another version of {who} (every group here has these keys); nothing was loaded")


class EGD(Optimizer):
    r"""Egalitarian Gradient Descent.

    For each parameter ``p`` with gradient ``g`` (η = ``lr``, λ = ``weight_decay``, μ = ``momentum``, ``b``
    the momentum buffer, which starts at its first input, ``b₁ = x₁``, as in ``torch.optim.SGD``)::

        g ← −g                                         if maximize
        g ← g + λ p                                    if weight_decay_mode = "l2"

        momentum_position = "after" (default: momentum accumulates whitened gradients)
            d ← c · W(g)                               (d ← g if not whitened)
            b ← μ b + d;  d ← b,  or d ← d + μ b with nesterov           (if μ > 0)

        momentum_position = "before" (Muon's order: the momentum is whitened)
            b ← μ b + g;  m ← b,  or m ← g + μ b with nesterov           (m ← g if μ = 0)
            d ← c · W(m)                               (d ← m if not whitened)

        p ← (1 − ηλ) p                                 if weight_decay_mode = "decoupled"
        p ← p − η d

    ``W`` whitens when the group does (``whiten=True``) and ``p`` has ≥ 2 dims: ``W(G) = (G Gᵀ)^(-1/2) G = U Vᵀ``
    (``G = U S Vᵀ``) of the matrix ``mat(g)``, which views a conv kernel ``(out, in, kh, kw)`` as
    ``(out, in·kh·kw)``.  With ``row_blocks = k`` the ``out`` rows are ``k`` blocks of ``out/k`` rows, each
    whitened alone (``W`` of each block, stacked back): a fused ``[Q; K; V]`` projection is ``k = 3`` blocks,
    per attention head ``3·heads``.  ``c`` is the step-size convention ``scale``, per whitened block of shape
    ``(m, n)`` = (rows, columns) of that block:

    * ``"none"`` (default, the paper): ``c = 1``, every kept singular value of ``W`` is 1;
    * ``"muon"``: ``c = √max(1, m/n)``, Keller Jordan's original Muon;
    * ``"rms"``: ``c = ρ·√max(m, n)``, ``ρ = rms_target`` (default 0.2): a full-rank ``U Vᵀ`` has RMS
      ``1/√max(m, n)`` (``‖U Vᵀ‖_F² = min(m, n)``), so ``c·W`` has RMS ``ρ``, the typical RMS of an AdamW
      update, as in Moonshot's Moonlight; the lr of an AdamW setup then carries over;
    * ``"frobenius"``: ``c = ‖mat(g)‖_F / ‖W‖_F = ‖mat(g)‖_F/√r`` (``r`` kept directions), magnitude preserving:
      the whitened step keeps the gradient's (or, ``"before"``, the momentum's) Frobenius norm, so it shrinks
      as the gradient does, while its singular values stay equal.

    Parameters with fewer than 2 dimensions (biases) are never whitened nor scaled: they take the plain SGD step
    with the same momentum and decay (the same equations in both positions).  With ``momentum=0``,
    ``scale="none"`` and ``weight_decay_mode="l2"`` this is exactly the paper's update, decay term whitened
    along with the data gradient (the official code puts ``0.5·wd·‖W‖²`` in the loss).  ``"before"`` whitens
    the direction of the momentum, so the step has unit singular values even with momentum; it equals Muon's
    direction for either momentum convention (``b ← μb + g`` or the EMA ``b ← μb + (1−μ)g``: proportional, and
    ``W`` is scale-invariant).

    Within a step, the matrices of equal block shape, dtype and device are whitened in one batched
    :func:`~egalitarian.linalg.polar` call, also across groups whose whitening keys are equal (``backend``,
    ``rtol``, ``clamp_eps``, ``seed``, ``rank``, ``power_iters``, ``scale``, ``rms_target``, ``row_blocks``), where that
    pays (:func:`egalitarian.transforms.batched`: on CPU, matrices whose smaller side is ≤ 64); with the exact Gram
    route the other matrices' Grams of equal size are decomposed in one batched ``eigh``
    (:func:`egalitarian.linalg.polar_many`).  A batch equals one call per matrix to rounding, not bit for bit; a
    rerun or resume on the same machine is bit-identical.

    Args:
        params: parameters or param groups.  Per group, ``whiten=False`` opts the group out (plain SGD); the
            paper whitens only the first layer's matrix, e.g.
            ``EGD([{"params": [mlp.layers[0].weight]}, {"params": rest, "whiten": False}], lr=0.7)``.
        lr: step size η (> 0): a float or a 0-d floating tensor, as ``torch.optim`` takes (below).
        momentum: μ ≥ 0; with μ = 0, ``nesterov`` changes nothing (``g + 0·b = g``: torch.optim.SGD refuses the
            pair, EGD takes it as the formula reads, so a search may switch the momentum of a Nesterov method off).
        weight_decay: λ ≥ 0, decoupled by default; ``weight_decay_mode="l2"`` adds λp to the gradient
            before whitening (the paper's convention).
        momentum_position: ``"after"`` (default) or ``"before"`` the whitening (equations above).
        scale: ``"none"`` (default), ``"muon"``, ``"rms"`` or ``"frobenius"``; ``rms_target``: ρ > 0 of ``"rms"``
            (default 0.2).
        row_blocks: k ≥ 1 (default 1): whiten each matrix as k blocks of rows; ``out`` must be a multiple of k.
        backend, rtol, clamp_eps, rank, power_iters, seed: the whitening, see :func:`egalitarian.linalg.polar`;
            ``clamp_eps`` selects the paper's clamp ``1/max(s, clamp_eps)``; ``rank`` and ``power_iters`` (and
            ``seed``, of the sketch) are ``rsvd``'s, unused by the other backends
            (:func:`egalitarian.transforms.whitening_options`).
        nonfinite: ``"raise"`` (default) or ``"propagate"``: what a NaN or inf gradient does (below).
        maximize: ascend instead (default False), as ``torch.optim``: the gradient is negated before everything
            else (the first line above), so EGD on ``L`` with ``maximize=True`` takes the steps of EGD on ``−L``;
            the whitened direction is ``W(−g) = −W(g)``.

    Every keyword from ``momentum`` on is also a param-group key (e.g. ``{"params": [qkv.weight],
    "row_blocks": 3}``); each is validated with a one-line ValueError naming it, its value and what is allowed.
    Two more group keys have no keyword: ``"experts": True`` (default False) marks a group of expert stacks
    ``(E, out, in…)``, each expert's matrix whitened by itself, all ``E`` in one batched ``polar`` call
    (:func:`egalitarian.transforms.stack_layout`); ``"transposed": True`` (default False) a group of matrices
    stored ``(in, out)`` (Hugging Face's ``Conv1D``), whitened as their transposes, so that ``row_blocks`` splits
    their columns and ``scale="muon"`` reads ``(out, in)`` (:func:`egalitarian.transforms.whiten`).  Group keys
    only, so state dicts saved without them still load.
    Under a process group of more than one rank (DDP, FSDP2) each matrix is whitened once, by one rank
    (:mod:`egalitarian.distributed`).
    ``.grad`` is left untouched.  ``step(closure)`` re-evaluates the loss like every ``torch.optim`` optimizer.
    With ``nonfinite="propagate"`` in every group, ``step()`` never synchronizes with the device (no check, no
    ``.item()``; in eager mode a tensor ``lr`` is read as ``add_(d, alpha=-lr)``, as ``torch.optim.SGD`` does,
    so keep it on the CPU), and ``torch.compile(opt.step, fullgraph=True)`` captures it in one graph (except with
    the ``rsvd`` backend: docs/INTEGRATIONS.md).

    A tensor ``lr`` (0-d, floating, finite, > 0; per group too): an LR scheduler writes into it in place
    (``group["lr"].fill_(new)``), so a compiled step reads the new value without recompiling; eager steps equal
    those of ``lr=float(lr)`` to rounding (bit for bit without decoupled weight decay, whose ``1 − ηλ`` is then
    computed in the tensor's dtype).  A tensor default is shared by the groups that take it, as in
    ``torch.optim``.  A state dict saved without ``maximize`` (before it existed) loads with ``maximize=False``,
    which is what that run did.
    """

    __doc__ = (__doc__ or "") + _NONFINITE_DOC + _CLIPPING_DOC

    _checked_by_owner = False
    """True for the engine of a :class:`WithAuxAdamW`, whose ``step()`` has checked every gradient before this
    engine's, and which validated each of its groups when it was added (the groups are the owner's): neither is
    repeated (a scheduler may have set an ``lr`` to 0 since, which an engine rebuilt over the groups must take)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        *,
        weight_decay_mode: str = "decoupled",
        whiten: bool = True,
        backend: str = "auto",
        rtol: float | None = None,
        clamp_eps: float | None = None,
        rank: int = 64,
        power_iters: int = 2,
        seed: int = 0,
        nonfinite: str = "raise",
        momentum_position: str = "after",
        scale: str = "none",
        rms_target: float = 0.2,
        row_blocks: int = 1,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            whiten=whiten,
            backend=backend,
            rtol=rtol,
            clamp_eps=clamp_eps,
            rank=rank,
            power_iters=power_iters,
            seed=seed,
            nonfinite=nonfinite,
            momentum_position=momentum_position,
            scale=scale,
            rms_target=rms_target,
            row_blocks=row_blocks,
            maximize=maximize,
        )
        check_egd_group(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if not self._checked_by_owner:
            check_egd_group(self.param_groups[-1])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``; a group saved without one of this optimizer's keys (by another version,
        e.g. one that called the clamp ``eps``) is a ValueError before anything is loaded."""
        # torch's load adds "differentiable" to the defaults, never to a group: a second load must not miss it
        keys = [k for k in self.defaults if k != "differentiable"]
        state_dict = _with_added_keys(state_dict, lambda g: keys)  # a group saved before "maximize": False
        _check_saved_groups(state_dict, lambda g: keys, "EGD")
        super().load_state_dict(state_dict)

    def set_whitening(self, on: bool) -> bool:
        """Turn whitening on/off in every group first chosen for it (the paper's switch-off rule); ``True``.

        Groups built with ``whiten=False`` stay plain SGD.  The momentum buffer is kept across switches.
        """
        _switch_whitening(self.param_groups, "whiten", on)
        return True

    def whitened_params(self) -> list[Tensor]:
        """The ≥ 2-D parameters whose gradient is whitened (also while :meth:`set_whitening` has it off)."""
        return _whitened(self.param_groups, "whiten")

    @staticmethod
    def transforms_for(group: dict[str, Any]) -> list[tuple[str, GradientTransform]]:
        """The named stages one step of ``group`` applies before ``p ← (1−ηλ)p − η·d``, in order.

        Each stage keeps its own slot in the parameter's state, so turning whitening off and on between steps
        (the paper's switch-off rule) leaves the momentum buffer where it is.  Applying the stages to each
        parameter in turn is the reference for :meth:`step`, which batches the whitening stage.
        """
        stages = []
        if group["maximize"]:  # torch.optim's convention: the gradient is negated before everything else
            stages.append(("maximize", scale(-1.0)))
        if group["weight_decay_mode"] == "l2":
            stages.append(("l2", add_decayed_weights(group["weight_decay"])))
        momentum = ("momentum", trace(group["momentum"], group["nesterov"]))
        before = group["momentum_position"] == "before"
        if before:
            stages.append(momentum)
        if group["whiten"]:
            stages.append(
                (
                    "whiten",
                    whiten(
                        group["backend"],
                        seed=group["seed"],
                        scale=group["scale"],
                        rms_target=group["rms_target"],
                        row_blocks=group["row_blocks"],
                        experts=group.get("experts", False),
                        transposed=group.get("transposed", False),
                        nonfinite="propagate",  # step() has checked already when the group says "raise"
                        **_polar_options(group),
                    ),
                )
            )
        if not before:
            stages.append(momentum)
        return stages

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    raise RuntimeError("EGD does not support sparse gradients")
        if not self._checked_by_owner:
            _check_finite(self.param_groups)
        # every update and new state first (transforms are pure), then the writes: a step is all or nothing
        runs = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                run = _Run(group, self.transforms_for(group), params, self.state)
                run.apply(run.stages[: run.split])
                runs.append(run)
        # the whitening of every group with the same whitening keys: one update_all (batched by shape) for all
        batches: dict[tuple[Any, ...], list[_Run]] = {}
        for run in runs:
            if run.split < len(run.stages):
                key = (*(run.group[k] for k in _WHITEN_KEYS), run.group.get("experts", False),
                       run.group.get("transposed", False))
                batches.setdefault(key, []).append(run)
        for batch in batches.values():
            _Run.apply_together(batch, batch[0].stages[batch[0].split])
        for run in runs:
            run.apply(run.stages[run.split + 1 :])
        for run in runs:
            group = run.group
            lr, wd = group["lr"], group["weight_decay"]
            for p, d, new in zip(run.params, run.grads, run.new, strict=True):
                self.state[p].update(new)
                if group["weight_decay_mode"] == "decoupled" and wd != 0:
                    p.mul_(1 - lr * wd)
                p.add_(d, alpha=-lr)  # a tensor lr as torch.optim.SGD takes it: traced, not a constant
        return loss


class _Run:
    """One EGD group's step in progress: its stages, its parameters, their directions so far and new states."""

    def __init__(self, group: dict[str, Any], stages: list[tuple[str, GradientTransform]], params: list[Tensor],
                 state: dict[Tensor, Any]) -> None:
        self.group, self.stages, self.params = group, stages, params
        self.old = [state.get(p, {}) for p in params]  # .get: no empty state entry is created before the writes
        self.new: list[dict[str, Any]] = [{} for _ in params]
        self.grads: list[Tensor] = [p.grad for p in params]
        names = [name for name, _ in stages]
        self.split = names.index("whiten") if "whiten" in names else len(stages)

    def states(self, key: str, t: GradientTransform) -> list[State]:
        return [old[key] if key in old else t.init(p) for old, p in zip(self.old, self.params, strict=True)]

    def apply(self, stages: list[tuple[str, GradientTransform]]) -> None:
        for key, t in stages:
            self.grads, states = t.update_all(self.grads, self.states(key, t), self.params)
            for new, s in zip(self.new, states, strict=True):
                new[key] = s

    @staticmethod
    def apply_together(runs: list[_Run], stage: tuple[str, GradientTransform]) -> None:
        """``stage`` (the same transform for every run) over the parameters of all ``runs`` in one update_all."""
        key, t = stage
        grads, states = t.update_all([g for r in runs for g in r.grads], [s for r in runs for s in r.states(key, t)],
                                     [p for r in runs for p in r.params])
        start = 0
        for r in runs:
            n = len(r.params)
            r.grads = grads[start : start + n]
            for new, s in zip(r.new, states[start : start + n], strict=True):
                new[key] = s
            start += n


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

    ``lr``, tensor or float, and ``maximize`` are the base's keywords and group keys (a tensor ``lr`` as the base
    takes it: torch's AdamW on CUDA wants ``capturable=True`` or ``fused=True`` with one).  ``maximize=True``
    negates the gradient before everything else, as ``torch.optim`` does: the transform sees ``−g`` and the base
    ``−T(−g)``, which it negates again, so the step ascends along ``T(−g)``, the step of minimizing ``−L``
    (the same as along ``−T(g)`` for the default whitening, ``W(−g) = −W(g)``, not for a transform that is not odd,
    an L2 term say).

    ``whitens`` declares that ``transform`` is EGD's whitening alone, so that :meth:`set_whitening` may switch
    it off and on; the default ``None`` means ``True`` for the default transform (``whiten()``) and ``False``
    for any other (Grokfast, or whitening chained with another filter, must not be switched off).

    ``nonfinite`` (keyword, also a param-group key, default ``"raise"``) covers every group, preconditioned or
    not.  With ``"propagate"``, the default transform lets NaN through; a ``transform`` of your own decides for
    itself (``whiten()`` raises unless built with ``whiten(nonfinite="propagate")``), and the step stays all
    or nothing: the transform runs on every gradient before ``base.step()``.

    ``step()`` hands the gradients of every preconditioned group to the transform at once
    (:meth:`~egalitarian.transforms.GradientTransform.update_all`): the default whitening then whitens the
    matrices of equal shape, dtype and device in one batched ``polar`` call where that pays (equal to one call
    per matrix to rounding, see :func:`egalitarian.transforms.batched`).  With ``nonfinite="propagate"`` in every group
    and a transform that does not check either (the default), nothing here synchronizes with the device (the
    base optimizer's step is torch's own).
    """

    __doc__ = (__doc__ or "") + _NONFINITE_DOC + _CLIPPING_DOC

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base: type[Optimizer] = torch.optim.Adam,
        transform: GradientTransform | None = None,
        *,
        whitens: bool | None = None,
        nonfinite: str = "raise",
        **base_kwargs: Any,
    ) -> None:
        check(isinstance(base, type) and issubclass(base, Optimizer), "base", base,
              "must be a torch.optim.Optimizer subclass (not an instance)", TypeError)
        check(whitens is None or isinstance(whitens, bool), "whitens", whitens, "must be None, True or False")
        _check_nonfinite_arg(nonfinite)
        # the default whitening never checks by itself: step() has checked when a group says "raise"
        self.transform = transform if transform is not None else whiten(nonfinite="propagate")
        self.whitens = transform is None if whitens is None else whitens
        own = {"precondition": True, "nonfinite": nonfinite}
        super().__init__(params, own)
        self.base = base(self.param_groups, **base_kwargs)
        self.param_groups = self.base.param_groups  # the same group dicts: lr schedules reach the base
        self.defaults = {**self.base.defaults, **own}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if hasattr(self, "base"):
            param_group.setdefault("precondition", True)
            param_group.setdefault("nonfinite", self.defaults["nonfinite"])
            self.base.add_param_group(param_group)
        else:
            super().add_param_group(param_group)
        _check_nonfinite_arg(self.param_groups[-1]["nonfinite"])

    def set_whitening(self, on: bool) -> bool:
        """Turn the transform on/off in every group first chosen for it, if it is whitening alone (``whitens``).

        Returns ``whitens``; when it is ``False`` nothing changes.  Groups built with ``precondition=False``
        stay untransformed.
        """
        if self.whitens:
            _switch_whitening(self.param_groups, "precondition", on)
        return self.whitens

    def whitened_params(self) -> list[Tensor]:
        """The ≥ 2-D parameters whose gradient is whitened (also while :meth:`set_whitening` has it off)."""
        return _whitened(self.param_groups, "precondition") if self.whitens else []

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = evaluate_closure(closure)
        _check_finite(self.param_groups)
        # every transformed gradient and state first (transforms are pure), then the writes; one update_all
        # over the parameters of every preconditioned group (the whitening batches equal shapes)
        params, signs = [], []
        for g in self.param_groups:
            if g.get("precondition", True):
                ps = [p for p in g["params"] if p.grad is not None]
                params += ps
                signs += [g.get("maximize", False)] * len(ps)  # maximize: T(−g), handed over as −T(−g)
        olds = [self.state[p]["transform"] if "transform" in self.state.get(p, {}) else self.transform.init(p)
                for p in params]
        news, states = self.transform.update_all([-p.grad if m else p.grad for p, m in zip(params, signs, strict=True)],
                                                 olds, params)
        updates = list(zip(params, news, states, signs, strict=True))
        raw: list[tuple[Tensor, Tensor]] = []
        try:
            for p, new, state, m in updates:
                self.state[p]["transform"] = state
                raw.append((p, p.grad))
                p.grad = -new if m else new
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


Engine = tuple[str, Callable[[list[dict[str, Any]]], Optimizer], Callable[[dict[str, Any]], bool]]
"""``(attribute, build, takes)``: an engine of :class:`WithAuxAdamW`, built as ``build(groups)`` over the tagged
groups for which ``takes(group)`` is true, and kept as ``self.<attribute>`` (``None`` while it has no group)."""


class WithAuxAdamW(Optimizer):
    r"""A matrix optimizer for the groups tagged ``tag=True``, ``torch.optim.AdamW`` for the others: one
    ``torch.optim.Optimizer`` (KellerJordan/Muon's ``MuonWithAuxAdam`` shape: one optimizer, tagged groups, one
    ``step``).  The base of :class:`egalitarian.routing.EGDWithAuxAdamW` and
    :class:`egalitarian.baselines.MuonWithAdamW`, which supply only their matrix engine and their defaults:

    * ``tag`` (the group key, ``"use_egd"``, ``"use_muon"``) and ``engine`` (the matrix update's name, for
      messages), class attributes;
    * the defaults of both kinds of group, passed to ``__init__`` (``group_defaults[True]``/``[False]``);
    * :meth:`matrix_engines`, the optimizers that do the tagged groups' arithmetic, and :meth:`check_group`, a
      tagged group's validation.

    What is shared lives here, once:

    * **Groups.** Every group carries ``tag`` (``True`` or ``False``) and its own hyperparameters, so LR
      schedulers reach both parts; :meth:`add_param_group` fills a group's missing keys from
      ``group_defaults[tag]`` and validates it (an AdamW group: ``lr > 0``, two ``betas`` in [0, 1),
      ``eps >= 0``, ``weight_decay >= 0``); a group that fails leaves nothing behind.
    * **Engines.** Each engine (``.adamw`` for the untagged groups, the subclass's for the tagged ones; ``None``
      while it has no group) is a torch optimizer built over *this* optimizer's group dicts and ``state``
      (shared, not copied), so it only does the arithmetic and there is one copy of every hyperparameter and
      buffer.  The AdamW groups step exactly as ``torch.optim.AdamW(groups)``.
    * **Step.** All or nothing: a sparse gradient anywhere is a RuntimeError, and a NaN or inf gradient in a group
      whose ``nonfinite`` is ``"raise"`` a FloatingPointError, before any engine writes (one read of every gradient:
      the engines do not check again); then every engine steps.
    * **State.** ``state_dict()`` is a plain torch optimizer state dict; :meth:`load_state_dict` copies what it
      is given (torch's would alias the caller's tensors), refuses groups saved without a key that every group
      here has (another version; ``maximize``, added since, loads as ``False``), and rebuilds the engines, so a
      run continues bit-identically.
    """

    tag: ClassVar[str]
    engine: ClassVar[str]

    def __init__(self, groups: list[dict[str, Any]], matrix_defaults: dict[str, Any],
                 aux_defaults: dict[str, Any], aux_prefix: str) -> None:
        """``aux_prefix``: how the subclass's keywords name the AdamW defaults (``"aux_"``: ``aux_lr``, …), for
        the messages of their validation."""
        _check_adamw_group(aux_defaults, aux_prefix)
        self.group_defaults = {True: dict(matrix_defaults), False: dict(aux_defaults)}
        super().__init__(groups, {})

    def matrix_engines(self) -> list[Engine]:
        """The engines of the tagged groups (:data:`Engine`), in step order."""
        raise NotImplementedError

    def check_group(self, group: dict[str, Any]) -> None:
        """Validate a tagged group (its missing keys already filled from the defaults)."""
        raise NotImplementedError

    def _engines(self) -> list[Engine]:
        """Every engine, each with the groups it takes: the subclass's (tagged groups), then AdamW (the others)."""
        tag = self.tag
        tagged: list[Engine] = [(name, build, lambda g, takes=takes: g[tag] and takes(g))
                                for name, build, takes in self.matrix_engines()]
        return [*tagged, ("adamw", torch.optim.AdamW, lambda g: not g[tag])]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """``tag`` (required) picks the update; the group's other keys override that part's defaults."""
        tagged = param_group.get(self.tag)
        check(isinstance(tagged, bool), self.tag, tagged, f"must be True ({self.engine}'s update) or False (AdamW's)")
        ps = param_group.get("params")
        group = {**self.group_defaults[tagged], **param_group,
                 "params": [ps] if isinstance(ps, Tensor) else list(ps if ps is not None else [])}
        if tagged:
            self.check_group(group)
        else:
            _check_adamw_group(group, "")
        super().add_param_group(group)
        try:
            self._bind()
        except Exception:
            self.param_groups.pop()
            self._bind()
            raise

    def _bind(self) -> None:
        """(Re)build every engine over this optimizer's own group dicts and ``state``."""
        for name, build, takes in self._engines():
            groups = [g for g in self.param_groups if takes(g)]
            opt = build(groups) if groups else None  # the groups already hold every hyperparameter
            if opt is not None:
                assert all(a is b for a, b in zip(opt.param_groups, groups, strict=True))  # shared, not copied
                opt.state = self.state
                opt._checked_by_owner = True  # step() checks every group before the engines step: once is enough
            setattr(self, name, opt)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = evaluate_closure(closure)
        for i, p in enumerate(p for g in self.param_groups for p in g["params"]):
            if p.grad is not None and p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients (params[{i}], shape "
                                   f"{tuple(p.shape)}); nothing was changed")
        _check_finite(self.param_groups)
        for name, _, _ in self._engines():
            opt = getattr(self, name)
            if opt is not None:
                opt.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load, of a copy; a group saved without a key every group here has is refused (another version),
        except a key added since (``_ADDED_KEYS``: ``maximize``), which loads with its old value."""
        def keys(g: dict[str, Any]) -> list[str]:
            return [self.tag, *self.group_defaults.get(g.get(self.tag), ())]

        state_dict = _with_added_keys(state_dict, keys)
        _check_saved_groups(state_dict, keys, type(self).__name__)
        super().load_state_dict(copy.deepcopy(state_dict))  # torch's load would alias the caller's tensors
        self._bind()  # torch's load replaced the group dicts and the state


def _check_adamw_group(group: dict[str, Any], prefix: str) -> None:
    """An AdamW group's (or defaults') ``lr``, ``betas``, ``eps``, ``weight_decay``, named ``prefix + key``."""
    lr, betas, eps, wd = (group[k] for k in ("lr", "betas", "eps", "weight_decay"))
    _check_lr(lr, f"{prefix}lr")
    check(len(betas) == 2 and all(0 <= b < 1 for b in betas), f"{prefix}betas", betas, "must be two numbers in [0, 1)")
    check(eps >= 0, f"{prefix}eps", eps, "must be >= 0")
    check(wd >= 0, f"{prefix}weight_decay", wd, "must be >= 0")


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

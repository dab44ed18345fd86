r"""``torch.optim`` optimizers built from :mod:`egalitarian.transforms` plus a base step.

* :class:`EGD` — Egalitarian Gradient Descent (Saheb Pasand & Dohmatob, ICLR 2026, arXiv 2510.04930) with
  optional momentum and weight decay.
* :class:`Preconditioned` — any gradient transform (EGD's whitening by default) in front of any
  ``torch.optim`` optimizer (SGD, Adam, AdamW, …), as in the paper's transformer and MNIST runs.

Both own their whitening switch (the paper's switch-off rule): ``set_whitening(on)`` and ``whitened_params()``.
The baselines' optimizer (Muon with AdamW) lives in :mod:`egalitarian.baselines`.

Both work unchanged under ``DistributedDataParallel``: DDP all-reduces ``.grad`` during ``backward()``, so
every rank whitens the same averaged gradient and takes the same step.  Sharded setups (FSDP, ZeRO) differ:
each rank holds only a slice of every matrix, and the polar factor of a matrix is not the concatenation of
the polar factors of its slices, so a rank must all-gather the full gradient matrix (or the transform must
be assigned to one owner rank per matrix and the result scattered back), as distributed Muon does.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .errors import check
from .linalg import AUTO, BACKENDS, backend_alias
from .transforms import SCALES, GradientTransform, State, add_decayed_weights, trace, whiten

__all__ = ["EGD", "Preconditioned"]

_WD_MODES = ("decoupled", "l2")
_NONFINITE = ("raise", "propagate")
_POSITIONS = ("after", "before")

_CONVENTIONS = {"momentum_position": "after", "scale": "none", "rms_target": 0.2, "row_blocks": 1}
"""EGD's keys added after the first checkpoints were written, with the values those checkpoints ran with (the
defaults): a group saved without them loads with these."""

_WHITEN_KEYS = ("backend", "rtol", "eps", "seed", "rank", "power_iters", "scale", "rms_target", "row_blocks")
"""The keys of an EGD group that set its whitening: groups equal in all of them are whitened in one batch."""

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
    where an absolute quantity is not scaled along, the paper's clamp (``eps=``, ``1/max(s, eps)``) and an L2 term
    added before whitening (``weight_decay_mode="l2"`` in EGD, ``add_decayed_weights`` in a chain), clipping
    changes the whitened step too; and so it does with EGD's ``momentum_position="before"`` and momentum, whose
    buffer sums gradients clipped by different factors before the whitening (``W(μ c₁ g₁ + c₂ g₂)`` is
    ``W(μ g₁ + g₂)`` only if ``c₁ = c₂``).
"""


def _evaluate_closure(closure: Callable[[], float] | None) -> float | None:
    """``torch.optim``'s closure convention: re-evaluate the loss with gradients enabled."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _check_finite(groups: list[dict[str, Any]], default: str) -> None:
    """Raise ``FloatingPointError`` naming the first parameter whose gradient has a NaN or an inf, among the
    groups whose ``nonfinite`` is ``"raise"`` (``default`` when a group has no key, e.g. an older checkpoint).

    One fused reduction per device (``max|g|`` of every gradient: unlike a 2-norm it cannot overflow for a
    finite gradient) and one sync per device; nothing is written.
    """
    checked: list[tuple[int, Tensor]] = []
    index = 0
    for g in groups:
        raise_ = g.get("nonfinite", default) == "raise"
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
        peaks = torch.stack([n.double() for n in torch._foreach_norm(grads, ord=math.inf)])
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


class EGD(Optimizer):
    r"""Egalitarian Gradient Descent.

    For each parameter ``p`` with gradient ``g`` (η = ``lr``, λ = ``weight_decay``, μ = ``momentum``, ``b``
    the momentum buffer, which starts at its first input, ``b₁ = x₁``, as in ``torch.optim.SGD``)::

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
    ``rtol``, ``eps``, ``seed``, ``rank``, ``power_iters``, ``scale``, ``rms_target``, ``row_blocks``), where that
    pays (:func:`egalitarian.transforms.batched`: on CPU, matrices whose smaller side is ≤ 64).  The batch equals
    one call per matrix to rounding, not bit for bit; a rerun or resume on the same machine is bit-identical.

    Args:
        params: parameters or param groups.  Per group, ``whiten=False`` opts the group out (plain SGD); the
            paper whitens only the first layer's matrix, e.g.
            ``EGD([{"params": [mlp.layers[0].weight]}, {"params": rest, "whiten": False}], lr=0.7)``.
        lr: step size η (> 0).
        momentum: μ ≥ 0; ``nesterov`` needs μ > 0.
        weight_decay: λ ≥ 0, decoupled by default; ``weight_decay_mode="l2"`` adds λp to the gradient
            before whitening (the paper's convention).
        momentum_position: ``"after"`` (default) or ``"before"`` the whitening (equations above).
        scale: ``"none"`` (default), ``"muon"``, ``"rms"`` or ``"frobenius"``; ``rms_target``: ρ > 0 of ``"rms"``
            (default 0.2).
        row_blocks: k ≥ 1 (default 1): whiten each matrix as k blocks of rows; ``out`` must be a multiple of k.
        backend, rtol, eps, rank, power_iters, seed: the whitening, see :func:`egalitarian.linalg.polar`;
            ``eps`` selects the paper's clamp ``1/max(s, eps)``.
        nonfinite: ``"raise"`` (default) or ``"propagate"``: what a NaN or inf gradient does (below).
        method: deprecated name of ``backend`` (warns; giving both is a ValueError).  Checkpoints whose
            groups still say ``"method"`` load (:meth:`load_state_dict` renames the key).

    Every keyword from ``momentum`` on is also a param-group key (e.g. ``{"params": [qkv.weight],
    "row_blocks": 3}``); each is validated with a one-line ValueError naming it, its value and what is allowed.
    ``.grad`` is left untouched.  ``step(closure)`` re-evaluates the loss like every ``torch.optim`` optimizer.
    With ``nonfinite="propagate"`` in every group, ``step()`` never synchronizes with the device (no check, no
    ``.item()``), and ``torch.compile(opt.step, fullgraph=True)`` captures it in one graph (except with the
    ``rsvd`` backend: docs/INTEGRATIONS.md).
    """

    __doc__ = (__doc__ or "") + _NONFINITE_DOC + _CLIPPING_DOC

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
        backend: str = AUTO,
        rtol: float | None = None,
        eps: float | None = None,
        rank: int = 64,
        power_iters: int = 2,
        seed: int = 0,
        nonfinite: str = "raise",
        momentum_position: str = "after",
        scale: str = "none",
        rms_target: float = 0.2,
        row_blocks: int = 1,
        method: str | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            whiten=whiten,
            backend=backend_alias(backend, method),
            rtol=rtol,
            eps=eps,
            rank=rank,
            power_iters=power_iters,
            seed=seed,
            nonfinite=nonfinite,
            momentum_position=momentum_position,
            scale=scale,
            rms_target=rms_target,
            row_blocks=row_blocks,
        )
        self._validate(defaults)
        super().__init__(params, defaults)

    @staticmethod
    def _validate(g: dict[str, Any]) -> None:
        check(isinstance(g["lr"], (int, float)) and g["lr"] > 0, "lr", g["lr"], "must be a number > 0")
        check(0 <= g["momentum"] < 1, "momentum", g["momentum"], "must be in [0, 1)")
        check(not g["nesterov"] or g["momentum"] > 0, "nesterov", g["nesterov"], "needs momentum > 0")
        check(g["weight_decay"] >= 0, "weight_decay", g["weight_decay"], "must be >= 0")
        mode = g["weight_decay_mode"]
        check(mode in _WD_MODES, "weight_decay_mode", mode, f"must be one of {', '.join(_WD_MODES)}")
        check(isinstance(g["whiten"], bool), "whiten", g["whiten"], "must be True or False")
        check(g["backend"] in BACKENDS, "backend", g["backend"], f"must be one of {', '.join(BACKENDS)}")
        _check_nonfinite_arg(g["nonfinite"])
        position, scale = g.get("momentum_position", "after"), g.get("scale", "none")
        check(position in _POSITIONS, "momentum_position", position,
              f"must be one of {', '.join(map(repr, _POSITIONS))}")
        check(scale in SCALES, "scale", scale, f"must be one of {', '.join(map(repr, SCALES))}")
        rho = g.get("rms_target", 0.2)
        check(isinstance(rho, (int, float)) and not isinstance(rho, bool) and math.isfinite(rho) and rho > 0,
              "rms_target", rho, "must be a number > 0")
        k = g.get("row_blocks", 1)
        check(isinstance(k, int) and not isinstance(k, bool) and k >= 1, "row_blocks", k, "must be an integer >= 1")
        if g["whiten"] and k > 1:
            for p in g.get("params", ()):
                check(p.ndim < 2 or p.shape[0] % k == 0, "row_blocks", k,
                      f"must divide the rows of every whitened matrix: a parameter of shape {tuple(p.shape)} has "
                      f"{p.shape[0]} rows")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "method" in param_group:  # the deprecated name of the group key "backend", as for the keyword
            group = {k: v for k, v in param_group.items() if k != "method"}
            param_group = {**group, "backend": backend_alias(group.get("backend", AUTO), param_group["method"])}
        super().add_param_group(param_group)
        self._validate(self.param_groups[-1])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``; param groups saved before the ``method`` → ``backend`` rename load too,
        groups saved before ``nonfinite`` existed take this optimizer's default, and groups saved before
        ``momentum_position``, ``scale``, ``rms_target`` and ``row_blocks`` existed take the values they ran with
        (``"after"``, ``"none"``, 0.2, 1)."""
        groups = [{"nonfinite": self.defaults["nonfinite"], **_CONVENTIONS, **_renamed(g, "method", "backend")}
                  for g in state_dict["param_groups"]]
        super().load_state_dict({**state_dict, "param_groups": groups})

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
        conv = {k: group.get(k, v) for k, v in _CONVENTIONS.items()}  # groups built before these keys existed
        stages = []
        if group["weight_decay_mode"] == "l2":
            stages.append(("l2", add_decayed_weights(group["weight_decay"])))
        momentum = ("momentum", trace(group["momentum"], group["nesterov"]))
        before = conv["momentum_position"] == "before"
        if before:
            stages.append(momentum)
        if group["whiten"]:
            stages.append(
                (
                    "whiten",
                    whiten(
                        group["backend"],
                        rtol=group["rtol"],
                        eps=group["eps"],
                        seed=group["seed"],
                        rank=group["rank"],
                        power_iters=group["power_iters"],
                        scale=conv["scale"],
                        rms_target=conv["rms_target"],
                        row_blocks=conv["row_blocks"],
                        nonfinite="propagate",  # step() has checked already when the group says "raise"
                    ),
                )
            )
        if not before:
            stages.append(momentum)
        return stages

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = _evaluate_closure(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    raise RuntimeError("EGD does not support sparse gradients")
        _check_finite(self.param_groups, self.defaults["nonfinite"])
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
                batches.setdefault(tuple(run.group.get(k, _CONVENTIONS.get(k)) for k in _WHITEN_KEYS), []).append(run)
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
                p.add_(d, alpha=-lr)
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
        loss = _evaluate_closure(closure)
        _check_finite(self.param_groups, self.defaults["nonfinite"])
        # every transformed gradient and state first (transforms are pure), then the writes; one update_all
        # over the parameters of every preconditioned group (the whitening batches equal shapes)
        params = [p for g in self.param_groups if g.get("precondition", True)
                  for p in g["params"] if p.grad is not None]
        olds = [self.state[p]["transform"] if "transform" in self.state.get(p, {}) else self.transform.init(p)
                for p in params]
        news, states = self.transform.update_all([p.grad for p in params], olds, params)
        updates = list(zip(params, news, states, strict=True))
        raw: list[tuple[Tensor, Tensor]] = []
        try:
            for p, new, state in updates:
                self.state[p]["transform"] = state
                raw.append((p, p.grad))
                p.grad = new
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
        for g in self.param_groups:  # saved before nonfinite existed: this optimizer's default
            g.setdefault("nonfinite", self.defaults["nonfinite"])
        params = self._params()
        self.state.clear()
        for i, s in state_dict["transform_state"].items():
            p = params[int(i)]
            self.state[p] = {"transform": _to_param(s, p)}


def _renamed(group: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``group`` with key ``old`` renamed to ``new`` (a copy; unchanged if it has no ``old`` key)."""
    if old not in group or new in group:
        return group
    return {(new if k == old else k): v for k, v in group.items()}


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

"""Gradient transforms: small pure functions that compose, in the style of optax.

A :class:`GradientTransform` is a pair of functions acting on **one parameter** at a time:

    init(param)                      -> state
    update(grad, state, param)       -> (new_grad, new_state)

``update`` never changes ``grad``, ``state`` or ``param`` in place; it returns new objects.  States are plain
tuples/dicts of tensors and Python numbers, so they survive ``torch.optim.Optimizer.state_dict()``.
:func:`chain` composes transforms left to right, exactly like applying them in sequence by hand.

Optimizers in :mod:`egalitarian.optim` apply a chain to every parameter and then take a base step
(SGD's ``p ← p − lr·u``, or hand the transformed gradient to Adam/AdamW/...).  This module holds EGD's own
transforms; the baselines' (Grokfast, column normalisation, ⊥Grad) live in :mod:`egalitarian.baselines`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .errors import check
from .linalg import AUTO, backend_alias, polar, resolve_backend

__all__ = [
    "GradientTransform",
    "add_decayed_weights",
    "as_matrix",
    "chain",
    "identity",
    "no_state",
    "scale",
    "trace",
    "whiten",
]

State = Any


class GradientTransform(NamedTuple):
    """``init(param) -> state`` and ``update(grad, state, param) -> (grad, state)``, both pure."""

    init: Callable[[Tensor], State]
    update: Callable[[Tensor, State, Tensor], tuple[Tensor, State]]


def no_state(param: Tensor) -> State:
    """``init`` of a transform without state."""
    return ()


def identity() -> GradientTransform:
    """Leaves the gradient unchanged."""
    return GradientTransform(no_state, lambda g, s, p: (g, s))


def chain(*transforms: GradientTransform) -> GradientTransform:
    """Apply ``transforms`` in order: ``chain(a, b)`` maps g to ``b(a(g))``; the state is a tuple of states."""

    def init(param: Tensor) -> State:
        return tuple(t.init(param) for t in transforms)

    def update(grad: Tensor, state: State, param: Tensor) -> tuple[Tensor, State]:
        new_states = []
        for t, s in zip(transforms, state, strict=True):
            grad, s = t.update(grad, s, param)
            new_states.append(s)
        return grad, tuple(new_states)

    return GradientTransform(init, update)


def scale(factor: float) -> GradientTransform:
    """``g ← factor · g``."""
    return GradientTransform(no_state, lambda g, s, p: (g * factor, s))


def add_decayed_weights(weight_decay: float) -> GradientTransform:
    """Coupled L2 decay: ``g ← g + wd · p``, the gradient of ``0.5·wd·‖p‖²`` added to the loss.

    Placed before :func:`whiten` it reproduces the EGD paper's SGD runs, where the decay term is part of the
    gradient that gets whitened.
    """
    if weight_decay == 0:
        return identity()
    return GradientTransform(no_state, lambda g, s, p: (g + weight_decay * p, s))


def trace(momentum: float, nesterov: bool = False) -> GradientTransform:
    """Heavy-ball momentum as ``torch.optim.SGD`` (dampening 0): ``b ← μ b + g``; output ``b``, or
    ``g + μ b`` with Nesterov.  The buffer starts at the first gradient (``b₁ = g₁``), as in torch."""
    check(not (nesterov and momentum == 0), "nesterov", nesterov, "needs momentum > 0")
    if momentum == 0:
        return identity()

    def init(param: Tensor) -> State:
        return {"momentum_buffer": None}

    def update(grad: Tensor, state: State, param: Tensor) -> tuple[Tensor, State]:
        buf = state["momentum_buffer"]
        buf = grad.clone() if buf is None else momentum * buf + grad
        out = grad + momentum * buf if nesterov else buf
        return out, {"momentum_buffer": buf}

    return GradientTransform(init, update)


def as_matrix(t: Tensor) -> Tensor:
    """View a ≥2-D parameter as the matrix EGD whitens: ``(out, in·k1·k2…)`` (conv kernels flattened)."""
    return t.reshape(t.shape[0], -1)


def whiten(
    backend: str = AUTO,
    *,
    rtol: float | None = None,
    eps: float | None = None,
    seed: int = 0,
    resample: bool = True,
    method: str | None = None,
    **polar_kwargs: Any,
) -> GradientTransform:
    """EGD's whitening ``G ← (G Gᵀ)^(-1/2) G = U Vᵀ`` for every parameter with ≥ 2 dimensions.

    Parameters with fewer than 2 dimensions (biases, LayerNorm gains) pass through unchanged.  Conv kernels
    ``(out, in, kh, kw)`` are whitened as ``(out, in·kh·kw)`` matrices and reshaped back.  ``backend``,
    ``rtol``, ``eps`` and ``polar_kwargs`` go to :func:`egalitarian.linalg.polar`; ``method`` is the
    deprecated name of ``backend`` (warns).

    For ``backend="rsvd"`` the Gaussian sketch is drawn from a generator seeded by ``(seed, step)``: a fresh
    sketch per step like the paper's PyTorch code (``resample=False`` reuses one sketch forever, like its JAX
    code), reproducible and resumable because the step count lives in the state.
    """
    backend = backend_alias(backend, method)
    resolve_backend(backend, torch.zeros(2, 2))  # validate the name early
    is_rsvd = backend == "rsvd"

    def init(param: Tensor) -> State:
        return {"step": 0} if is_rsvd else ()

    def update(grad: Tensor, state: State, param: Tensor) -> tuple[Tensor, State]:
        if grad.ndim < 2:
            return grad, state
        kwargs = dict(polar_kwargs)
        if is_rsvd:
            step = state["step"]
            gen = torch.Generator(device=grad.device)
            gen.manual_seed(seed * 1_000_003 + (step if resample else 0))
            kwargs["generator"] = gen
            state = {"step": step + 1}
        out = polar(as_matrix(grad), backend, rtol=rtol, eps=eps, **kwargs)
        return out.reshape(grad.shape), state

    return GradientTransform(init, update)

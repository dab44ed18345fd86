"""Gradient transforms: small pure functions that compose, in the style of optax.

A :class:`GradientTransform` is a pair of functions acting on **one parameter** at a time:

    init(param)                      -> state
    update(grad, state, param)       -> (new_grad, new_state)

``update`` never changes ``grad``, ``state`` or ``param`` in place; it returns new objects.  States are plain
tuples/dicts of tensors and Python numbers, so they survive ``torch.optim.Optimizer.state_dict()``.
:func:`chain` composes transforms left to right, exactly like applying them in sequence by hand.

Optimizers in :mod:`egalitarian.optim` apply a chain to every parameter and then take a base step
(SGD's ``p ← p − lr·u``, or hand the transformed gradient to Adam/AdamW/...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .linalg import polar, resolve_method

__all__ = [
    "GradientTransform",
    "add_decayed_weights",
    "as_matrix",
    "chain",
    "column_norm",
    "grokfast_ema",
    "grokfast_ma",
    "identity",
    "perp_to_weights",
    "scale",
    "trace",
    "whiten",
]

State = Any


class GradientTransform(NamedTuple):
    """``init(param) -> state`` and ``update(grad, state, param) -> (grad, state)``, both pure."""

    init: Callable[[Tensor], State]
    update: Callable[[Tensor, State, Tensor], tuple[Tensor, State]]


def _no_state(param: Tensor) -> State:
    return ()


def identity() -> GradientTransform:
    """Leaves the gradient unchanged."""
    return GradientTransform(_no_state, lambda g, s, p: (g, s))


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
    return GradientTransform(_no_state, lambda g, s, p: (g * factor, s))


def add_decayed_weights(weight_decay: float) -> GradientTransform:
    """Coupled L2 decay: ``g ← g + wd · p``, the gradient of ``0.5·wd·‖p‖²`` added to the loss.

    Placed before :func:`whiten` it reproduces the EGD paper's SGD runs, where the decay term is part of the
    gradient that gets whitened.
    """
    if weight_decay == 0:
        return identity()
    return GradientTransform(_no_state, lambda g, s, p: (g + weight_decay * p, s))


def trace(momentum: float, nesterov: bool = False) -> GradientTransform:
    """Heavy-ball momentum as ``torch.optim.SGD`` (dampening 0): ``b ← μ b + g``; output ``b``, or
    ``g + μ b`` with Nesterov.  The buffer starts at the first gradient (``b₁ = g₁``), as in torch."""
    if momentum == 0:
        if nesterov:
            raise ValueError("trace: nesterov = True needs momentum > 0")
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
    method: str = "auto",
    *,
    rtol: float | None = None,
    eps: float | None = None,
    seed: int = 0,
    resample: bool = True,
    **polar_kwargs: Any,
) -> GradientTransform:
    """EGD's whitening ``G ← (G Gᵀ)^(-1/2) G = U Vᵀ`` for every parameter with ≥ 2 dimensions.

    Parameters with fewer than 2 dimensions (biases, LayerNorm gains) pass through unchanged.  Conv kernels
    ``(out, in, kh, kw)`` are whitened as ``(out, in·kh·kw)`` matrices and reshaped back.  ``method``,
    ``rtol``, ``eps`` and ``polar_kwargs`` go to :func:`egalitarian.linalg.polar`.

    For ``method="rsvd"`` the Gaussian sketch is drawn from a generator seeded by ``(seed, step)``: a fresh
    sketch per step like the paper's PyTorch code (``resample=False`` reuses one sketch forever, like its JAX
    code), reproducible and resumable because the step count lives in the state.
    """
    resolve_method(method, torch.zeros(2, 2))  # validate the name early
    is_rsvd = method == "rsvd"

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
        out = polar(as_matrix(grad), method, rtol=rtol, eps=eps, **kwargs)
        return out.reshape(grad.shape), state

    return GradientTransform(init, update)


# ---------------------------------------------------------------------------------------------------------------
# Baselines: Grokfast (EMA / MA), the EGD paper's column normalisation, ⊥Grad.
# ---------------------------------------------------------------------------------------------------------------


def _check_arg(fn: str, name: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{fn}: {name} = {value!r} {allowed}")


def grokfast_ema(alpha: float = 0.98, lamb: float = 2.0, normalize: bool = False) -> GradientTransform:
    r"""Grokfast-EMA (Lee et al. 2024, "Grokfast: Accelerated Grokking by Amplifying Slow Gradients",
    arXiv 2405.20233; official code ``gradfilter_ema`` in ironjr/grokfast).

    For every parameter, elementwise, at step t with raw gradient g_t:

    .. math::
        \mu_0 &= g_1 \quad\text{(the state starts from the first gradient, not from zero)} \\
        \mu_t &= \alpha\,\mu_{t-1} + (1-\alpha)\,g_t \\
        \hat g_t &= g_t + \lambda\,\mu_t \qquad\Big(\text{or } \frac{g_t + \lambda\,\mu_t}{1+\lambda}
                    \text{ with } \texttt{normalize=True}\Big)

    So the first step outputs ``(1 + λ)·g₁`` (μ₁ = α g₁ + (1−α) g₁ = g₁), exactly as the official code, which
    sets ``grads[n] = g`` on the first call and then applies the EMA update in the same call.

    ``normalize=True`` divides the output by ``1 + λ``, the learning-rate normalisation of
    lucidrains/grokfast-pytorch (``normalize_lr=True``; issues #1 and #4 there): with a constant gradient the
    filtered gradient is then the gradient itself.  The default ``False`` is the official Grokfast.

    Args:
        alpha: EMA momentum α ∈ [0, 1) (paper default 0.98).
        lamb: amplification λ ≥ 0 of the slow component (paper default 2.0).
        normalize: divide the output by ``1 + λ``.
    """
    _check_arg("grokfast_ema", "alpha", alpha, 0 <= alpha < 1, "must be in [0, 1)")
    _check_arg("grokfast_ema", "lamb", lamb, lamb >= 0, "must be >= 0")
    norm = 1.0 + lamb if normalize else 1.0

    def init(param: Tensor) -> State:
        return {"ema": None}

    def update(grad: Tensor, state: State, param: Tensor) -> tuple[Tensor, State]:
        prev = state["ema"]
        if prev is None:
            prev = grad
        ema = prev * alpha + grad * (1 - alpha)
        out = grad + ema * lamb
        if normalize:
            out = out / norm
        return out, {"ema": ema}

    return GradientTransform(init, update)


_MA_FILTERS = ("mean", "sum")


def grokfast_ma(
    window_size: int = 100,
    lamb: float = 5.0,
    filter_type: str = "mean",
    warmup: bool = True,
    normalize: bool = False,
) -> GradientTransform:
    r"""Grokfast-MA (Lee et al. 2024, arXiv 2405.20233; official code ``gradfilter_ma`` in ironjr/grokfast).

    The state holds the last ``window_size`` raw gradients g_{t−w+1}, …, g_t (the current one included) as a
    tuple.  With ``n = min(t, w)`` stored gradients:

    .. math::
        a_t &= \frac{1}{n}\sum_{i=t-n+1}^{t} g_i \ \ (\texttt{"mean"}) \qquad\text{or}\qquad
               a_t = \sum_{i=t-n+1}^{t} g_i \ \ (\texttt{"sum"}, \text{no division}) \\
        \hat g_t &= g_t + \lambda\, a_t

    With ``warmup=True`` (default) the filter is applied only once the window is full (t ≥ w); before that
    the gradient passes through unchanged (it is still stored).  With ``warmup=False`` it is applied from the
    first step, averaging over the n < w gradients seen so far.  This is the official condition
    ``not warmup or len(grads) == window_size``.  The official ``trigger`` flag (an ablation that, with
    warmup on, never applies the filter) is not reproduced.

    ``normalize=True`` divides the output by ``1 + λ`` ("mean") or ``1 + λ·w`` ("sum"), so a constant gradient
    passes through unchanged once the filter is active (an option in the spirit of lucidrains' lr
    normalisation; the official code has no such option).

    Memory: ``window_size`` copies of every parameter's gradient.
    """
    _check_arg("grokfast_ma", "window_size", window_size,
               isinstance(window_size, int) and not isinstance(window_size, bool) and window_size >= 1,
               "must be an int >= 1")
    _check_arg("grokfast_ma", "lamb", lamb, lamb >= 0, "must be >= 0")
    _check_arg("grokfast_ma", "filter_type", filter_type, filter_type in _MA_FILTERS,
               f"must be one of {', '.join(_MA_FILTERS)}")
    mean = filter_type == "mean"
    norm = (1.0 + lamb) if mean else (1.0 + lamb * window_size)

    def init(param: Tensor) -> State:
        return {"grads": ()}

    def update(grad: Tensor, state: State, param: Tensor) -> tuple[Tensor, State]:
        # Store a copy: backward() may later accumulate into (or zero_grad zero) this very tensor in place.
        grads = (state["grads"] + (grad.detach().clone(),))[-window_size:]
        new_state = {"grads": grads}
        if warmup and len(grads) < window_size:
            return grad, new_state
        total = grads[0]
        for g in grads[1:]:
            total = total + g
        avg = total / len(grads) if mean else total
        out = grad + avg * lamb
        if normalize:
            out = out / norm
        return out, new_state

    return GradientTransform(init, update)


def column_norm(min_norm: float = 0.01) -> GradientTransform:
    r"""The EGD paper's column-normalisation baseline (Saheb Pasand & Dohmatob 2026, arXiv 2510.04930, Fig. 1
    and §5; official code ``col_norm_update`` in ``parity.py``).

    For a parameter with ≥ 2 dimensions, viewed as ``G = mat(g)`` of shape ``(out, in·k…)`` (PyTorch layout;
    conv kernels flattened like :func:`as_matrix`), each hidden unit's incoming-weight gradient — a **row**
    of ``G`` — is divided by its Euclidean norm, clamped below at ``min_norm``:

    .. math::
        \tilde G_{j,:} = \frac{G_{j,:}}{\max(\lVert G_{j,:}\rVert_2,\ \texttt{min\_norm})}

    The official JAX code stores W1 as ``(in, hidden)`` and normalises over ``axis=0`` ("columns"); in
    PyTorch's ``(out, in)`` layout that is the row normalisation above.  Parameters with fewer than 2
    dimensions pass through unchanged (the paper applies the rule to the first layer's matrix only and gives
    the bias and the other layers plain SGD: use a param group without the transform for those).
    """
    _check_arg("column_norm", "min_norm", min_norm, min_norm > 0, "must be > 0")

    def update(grad: Tensor, state: State, param: Tensor) -> tuple[Tensor, State]:
        if grad.ndim < 2:
            return grad, state
        mat = as_matrix(grad)
        scale_ = torch.linalg.vector_norm(mat, dim=1, keepdim=True).clamp_min(min_norm)
        return (mat / scale_).reshape(grad.shape), state

    return GradientTransform(_no_state, update)


def perp_to_weights(eps: float = 1e-30) -> GradientTransform:
    r"""⊥Grad (Prieto, Barsbey, Mediano & Birdal 2025, "Grokking at the Edge of Numerical Stability",
    arXiv 2501.04697; the ``OrthoGrad`` class of LucasPrietoAl/grokking-at-the-edge-of-numerical-stability).

    Per parameter tensor, with ``w`` and ``g`` flattened to vectors:

    .. math::
        g_\perp &= g - \frac{\langle w, g\rangle}{\langle w, w\rangle + \epsilon}\, w \\
        \hat g &= g_\perp\, \frac{\lVert g\rVert_2}{\lVert g_\perp\rVert_2 + \epsilon}

    i.e. the component of the gradient along the weights (which only rescales ``w``, "naïve loss
    minimisation") is removed and the result rescaled to the original gradient norm.  This is the reference
    formula exactly, ε = 1e-30 in both denominators as there.  Differences from the reference wrapper: it
    overwrites ``p.grad`` in place and (before its PR #12) built the base optimizer with lr and wd only,
    dropping betas/eps; here the transform is pure and :class:`egalitarian.optim.Preconditioned` passes every
    base-optimizer keyword through and restores the raw ``.grad`` after the step.

    Edge cases inherited from the formula: ``w = 0`` leaves ``g`` unchanged; ``g`` exactly parallel to ``w``
    gives ``g_⊥`` = rounding noise, which the rescaling blows up to norm ‖g‖ (as in the reference).  Note ε =
    1e-30 is below float16's range (it underflows to 0 there; fine in float32/64).
    """
    _check_arg("perp_to_weights", "eps", eps, eps >= 0, "must be >= 0")

    def update(grad: Tensor, state: State, param: Tensor) -> tuple[Tensor, State]:
        w = param.detach().reshape(-1)
        g = grad.reshape(-1)
        proj = torch.dot(w, g) / (torch.dot(w, w) + eps)
        g_orth = g - proj * w
        out = g_orth * (g.norm(2) / (g_orth.norm(2) + eps))
        return out.reshape(grad.shape), state

    return GradientTransform(_no_state, update)

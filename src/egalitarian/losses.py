"""Losses and accuracy for the grokking experiments.

Every loss takes ``(outputs, y)`` and returns a scalar tensor; :data:`LOSSES` maps config names to them.
Class targets are int64 indices of shape ``(N,)``; ±1 targets (sparse parity) are floats of shape ``(N,)``
or ``(N, 1)`` matching a scalar model output.  Sequence targets (a language model's next tokens) are int64
``(N, T)`` against logits ``(N, T, C)``: the cross-entropies and the accuracy are then means over all ``N·T``
predicted tokens (:func:`per_token`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from .errors import ConfigError, check

__all__ = [
    "LOSSES",
    "accuracy",
    "cross_entropy",
    "cross_entropy_f64",
    "get_loss",
    "l2_penalty",
    "mse",
    "per_token",
    "stablemax_cross_entropy",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def per_token(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N·T, C), y (N·T,))`` for sequence outputs ``(N, T, C)`` against targets ``(N, T)``; other
    shapes are returned as they are."""
    if logits.ndim == y.ndim + 1 and y.ndim >= 2:
        return logits.flatten(0, -2), y.flatten()
    return logits, y


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    r"""Mean softmax cross-entropy, :math:`\frac1N\sum_n \big(\log\sum_j e^{z_{nj}} - z_{n y_n}\big)`.

    Sequence outputs ``(N, T, C)`` against ``(N, T)`` targets: the mean over the ``N·T`` tokens.  With
    ``dtype`` (e.g. ``torch.float64``, Nanda et al. 2023 / Prieto et al. 2025 precision control) the logits are
    cast first, so the loss is computed and returned in that dtype.
    """
    if dtype is not None:
        logits = logits.to(dtype)
    return F.cross_entropy(*per_token(logits, y))


def cross_entropy_f64(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`cross_entropy` computed and returned in float64."""
    return cross_entropy(logits, y, dtype=torch.float64)


def stablemax_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Mean cross-entropy under StableMax (Prieto et al. 2025, arXiv 2501.04697).

    .. math::
        s(x) = \begin{cases} x + 1 & x \ge 0 \\ 1/(1 - x) & x < 0 \end{cases},\qquad
        p_i = \frac{s(x_i)}{\sum_j s(x_j)},\qquad \mathcal L = \frac1N \sum_n -\log p_{n, y_n}

    Computed in float64 like the reference code, and **returned in float64** (``backward`` casts the
    gradient back to the logits' dtype). ``log s`` is evaluated as ``log1p(x)`` / ``-log1p(-x)`` on clamped
    branches, so neither the value nor the gradient is NaN or infinite for large ``|x|``
    (the reference's ``torch.where(x < 0, 1/(1-x+eps), x+1)`` gives NaN gradients at ``x = 1``).
    """
    x = logits.to(torch.float64)
    pos = x >= 0
    log_s = torch.where(pos, torch.log1p(x.clamp(min=0)), -torch.log1p(-x.clamp(max=0)))
    s = torch.where(pos, x.clamp(min=0) + 1, 1 / (1 - x.clamp(max=0)))
    log_p = log_s.gather(-1, y.long().unsqueeze(-1)).squeeze(-1) - torch.log(s.sum(-1))
    return -log_p.mean()


def _as_targets(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reshape a scalar-output ``(N, 1)`` or ``(N,)`` tensor to the shape of float targets ``y``."""
    if outputs.numel() != y.numel():
        raise ValueError(f"outputs {tuple(outputs.shape)} do not match ±1 targets {tuple(y.shape)}")
    return outputs.reshape(y.shape)


def mse(outputs: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    r"""Mean squared error.

    * int targets (classes): against one-hot targets, **mean over all N·C elements**,
      :math:`\frac{1}{NC}\sum_{n,c}(f_{nc} - [y_n = c])^2`. This is ``nn.MSELoss()(out, one_hots[labels])``
      in Grokfast / EGD ``main_mnist.py`` (Omnigrok MNIST). ``num_classes`` defaults to
      ``outputs.shape[-1]`` and, if given, must equal it.
    * float targets (±1, sparse parity): :math:`\frac1N\sum_n (f_n - y_n)^2` with a scalar output of
      shape ``(N,)`` or ``(N, 1)``; the EGD ``parity.py`` "hinge_loss", which is really this squared loss.
    """
    if y.dtype.is_floating_point:
        return ((_as_targets(outputs, y) - y.to(outputs.dtype)) ** 2).mean()
    c = outputs.shape[-1]
    if num_classes is not None and num_classes != c:
        raise ValueError(f"num_classes={num_classes} does not match outputs.shape[-1]={c}")
    onehot = F.one_hot(y.long(), c).to(outputs.dtype)
    return ((outputs - onehot) ** 2).mean()


def l2_penalty(params: Iterable[torch.Tensor], wd: float) -> torch.Tensor:
    r"""Weight decay as a loss term, :math:`\tfrac12\,\mathrm{wd}\sum_W \lVert W\rVert_F^2`.

    This is how the EGD paper's SGD code decays ``W1`` and ``W2`` (not the biases): the term is in the loss,
    so ``wd · W`` is part of the gradient that EGD whitens (EGD paper §1.3). The caller picks ``params``.
    """
    total: torch.Tensor | None = None
    for p in params:
        term = p.pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return 0.5 * wd * total


def accuracy(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction correct as a float32 scalar tensor.

    int targets: ``mean(argmax(outputs, -1) == y)``; float ±1 targets: ``mean(y · f > 0)`` (EGD ``parity.py``;
    an output of exactly 0 counts as wrong).
    """
    with torch.no_grad():
        if y.dtype.is_floating_point:
            correct = y * _as_targets(outputs, y) > 0
        else:
            correct = outputs.argmax(-1) == y
        return correct.float().mean()


LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "cross_entropy_f64": cross_entropy_f64,
    "stablemax": stablemax_cross_entropy,
    "mse": mse,
}


def get_loss(name: str) -> LossFn:
    """Loss function registered under ``name`` in :data:`LOSSES`."""
    check(name in LOSSES, "name", name, f"must be one of {', '.join(sorted(LOSSES))}", ConfigError)
    return LOSSES[name]

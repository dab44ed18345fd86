"""Tests for egalitarian.losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from egalitarian.errors import ConfigError
from egalitarian.losses import (
    LOSSES,
    accuracy,
    cross_entropy,
    get_loss,
    l2_penalty,
    mse,
    stablemax_cross_entropy,
)

LOGITS = [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]]
LABELS = [1, 0]


def hand_cross_entropy() -> float:
    row0 = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5)) - 2.0
    row1 = math.log(math.exp(-1.0) + math.exp(0.0) + math.exp(3.0)) - (-1.0)
    return (row0 + row1) / 2


def test_cross_entropy_hand_example_float32_and_float64():
    logits, y = torch.tensor(LOGITS), torch.tensor(LABELS)
    loss32 = cross_entropy(logits, y)
    assert loss32.dtype == torch.float32
    assert loss32.item() == pytest.approx(hand_cross_entropy(), rel=1e-6)
    loss64 = cross_entropy(logits, y, dtype=torch.float64)
    assert loss64.dtype == torch.float64
    assert loss64.item() == pytest.approx(hand_cross_entropy(), rel=1e-14)
    assert get_loss("cross_entropy_f64")(logits, y).dtype == torch.float64


def test_sequence_outputs_are_per_token():
    """(N, T, C) logits against (N, T) targets (a language model): the mean over all N·T tokens, exactly
    F.cross_entropy on the flattened tensors; by hand for one (2 windows x 1 token) case."""
    logits, y = torch.tensor(LOGITS).view(2, 1, 3), torch.tensor(LABELS).view(2, 1)
    assert cross_entropy(logits, y).item() == pytest.approx(hand_cross_entropy(), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(4, 5, 7, generator=g), torch.randint(0, 7, (4, 5), generator=g)
    flat = F.cross_entropy(logits.reshape(20, 7), y.reshape(20))
    assert torch.equal(cross_entropy(logits, y), flat)
    assert cross_entropy(logits, y, dtype=torch.float64).item() == pytest.approx(flat.item(), rel=1e-6)
    assert stablemax_cross_entropy(logits, y).item() == pytest.approx(
        stablemax_cross_entropy(logits.reshape(20, 7), y.reshape(20)).item(), rel=1e-12)
    hits = (logits.argmax(-1) == y).sum().item()
    assert accuracy(logits, y).item() == pytest.approx(hits / 20)


def test_stablemax_hand_example():
    # row 0: s([0, 1, -1]) = [1, 2, 1/2], sum 3.5, y = 1 -> -log(2/3.5)
    # row 1: s([2, -3, 0]) = [3, 1/4, 1], sum 4.25, y = 2 -> -log(1/4.25)
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, -3.0, 0.0]])
    loss = stablemax_cross_entropy(logits, torch.tensor([1, 2]))
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx((-math.log(2 / 3.5) + math.log(4.25)) / 2, rel=1e-14)


def test_stablemax_gradient_hand_example():
    # d/dx_i [-log s(x_y) + log sum_j s(x_j)] = -[i = y] s'(x_i)/s(x_i) + s'(x_i)/sum_j s(x_j),
    # s'(x) = 1 for x >= 0 and 1/(1-x)^2 for x < 0. For x = [0, 1, -1], y = 1: s' = [1, 1, 1/4].
    x = torch.tensor([[0.0, 1.0, -1.0]], requires_grad=True)
    stablemax_cross_entropy(x, torch.tensor([1])).backward()
    expected = torch.tensor([[1 / 3.5, -1 / 2 + 1 / 3.5, 0.25 / 3.5]])
    assert torch.allclose(x.grad, expected, atol=1e-7)


def test_stablemax_is_finite_for_huge_logits():
    x = torch.tensor([[1e4, -1e4, 0.0, 1.0], [-1e4, -1e4, -1e4, 1e4]], requires_grad=True)
    y = torch.tensor([1, 0])
    loss = stablemax_cross_entropy(x, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # row 0: s = [10001, 1/10001, 1, 2], y = 1; row 1: s = [1/10001] * 3 + [10001], y = 0
    row0 = -math.log((1 / 10001) / (10001 + 1 / 10001 + 1 + 2))
    row1 = -math.log((1 / 10001) / (3 / 10001 + 10001))
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)


def test_mse_one_hot_mean_over_all_elements():
    out = torch.tensor([[0.5, 0.2, 0.1], [0.0, 1.0, 2.0]])
    # targets [[1, 0, 0], [0, 0, 1]]: squares 0.25 + 0.04 + 0.01 + 0 + 1 + 1 = 2.30 over N*C = 6
    assert mse(out, torch.tensor([0, 2])).item() == pytest.approx(2.30 / 6, rel=1e-6)
    assert mse(out, torch.tensor([0, 2]), num_classes=3).item() == pytest.approx(2.30 / 6, rel=1e-6)
    with pytest.raises(ValueError):
        mse(out, torch.tensor([0, 2]), num_classes=4)


@pytest.mark.parametrize("shape", [(3, 1), (3,)])
def test_mse_plus_minus_one_targets(shape):
    f = torch.tensor([0.5, -2.0, 1.0]).reshape(shape)
    y = torch.tensor([1.0, -1.0, -1.0])
    # (0.5 - 1)^2 + (-2 + 1)^2 + (1 + 1)^2 = 0.25 + 1 + 4 = 5.25 over 3
    assert mse(f, y).item() == pytest.approx(1.75)


def test_l2_penalty_hand_example():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)  # ||w||^2 = 30
    b = torch.tensor([1.0, -1.0])  # ||b||^2 = 2
    penalty = l2_penalty([w, b], wd=0.1)
    assert penalty.item() == pytest.approx(0.5 * 0.1 * 32)
    penalty.backward()
    assert torch.allclose(w.grad, 0.1 * w.detach())  # d/dW (wd/2)||W||^2 = wd W
    assert l2_penalty([], wd=0.1).item() == 0.0


def test_accuracy_class_and_sign_targets():
    out = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 5.0, 0.0]])
    acc = accuracy(out, torch.tensor([1, 0, 0, 2]))  # right, right, wrong, wrong
    assert acc.dtype == torch.float32 and acc.item() == 0.5
    f = torch.tensor([[0.3], [-0.2], [0.0], [-1.0]])
    y = torch.tensor([1.0, 1.0, -1.0, -1.0])  # y*f = 0.3, -0.2, 0 (not > 0), 1.0
    assert accuracy(f, y).item() == 0.5


def test_registry_and_unknown_loss():
    assert set(LOSSES) == {"cross_entropy", "cross_entropy_f64", "stablemax", "mse"}
    assert get_loss("stablemax") is stablemax_cross_entropy
    with pytest.raises(ConfigError) as info:
        get_loss("hinge")
    message = str(info.value)
    assert message.startswith("name = 'hinge'") and "stablemax" in message and "stablemax" in message

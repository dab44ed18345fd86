"""Optimizers own their whitening switch: set_whitening, whitened_params and Preconditioned's ``whitens`` flag.

References are written out here: a whitened step is ``U Vᵀ`` from ``torch.linalg.svd``, an unwhitened SGD step
is ``p − lr·g``.
"""

from __future__ import annotations

import pytest
import torch

from egalitarian import EGD, Preconditioned
from egalitarian.baselines import grokfast_ema
from egalitarian.diagnostics import whitened_params
from egalitarian.transforms import chain, whiten

F64 = torch.float64


def _uvt(g: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(g, full_matrices=False)
    return U @ Vh


def _params():
    gen = torch.Generator().manual_seed(0)
    W1 = torch.nn.Parameter(torch.randn(3, 4, dtype=F64, generator=gen))
    b1 = torch.nn.Parameter(torch.randn(3, dtype=F64, generator=gen))
    W2 = torch.nn.Parameter(torch.randn(2, 3, dtype=F64, generator=gen))
    K = torch.nn.Parameter(torch.randn(2, 1, 2, 2, dtype=F64, generator=gen))  # conv kernel: whitened as 2×4
    return W1, b1, W2, K


def _grads(*params, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, dtype=F64, generator=gen)


def _ids(params) -> list[int]:
    return sorted(id(p) for p in params)


# ------------------------------------------------------------------------------------------------------ EGD


def test_egd_whitened_params_lists_the_matrices_of_whitened_groups():
    W1, b1, W2, K = _params()
    opt = EGD([{"params": [W1, b1, K]}, {"params": [W2], "whiten": False}], lr=0.1)
    assert _ids(opt.whitened_params()) == _ids([W1, K])  # the bias is < 2-D, W2's group opted out
    assert opt.set_whitening(False) is True
    assert _ids(opt.whitened_params()) == _ids([W1, K])  # switched off for now: still chosen
    assert [g["whiten"] for g in opt.param_groups] == [False, False]
    assert opt.set_whitening(True) is True
    assert [g["whiten"] for g in opt.param_groups] == [True, False]  # only the chosen group comes back


def test_egd_set_whitening_steps_by_hand():
    W1, b1, W2, K = _params()
    opt = EGD([{"params": [W1, b1]}, {"params": [W2], "whiten": False}], lr=0.5, backend="svd")
    for on in (False, True, False):
        assert opt.set_whitening(on) is True
        _grads(W1, b1, W2, seed=int(on) + 3)
        before = [p.detach().clone() for p in (W1, b1, W2)]
        opt.step()
        w1_step = _uvt(W1.grad) if on else W1.grad
        torch.testing.assert_close(W1.detach(), before[0] - 0.5 * w1_step, atol=1e-12, rtol=0)
        torch.testing.assert_close(b1.detach(), before[1] - 0.5 * b1.grad)
        torch.testing.assert_close(W2.detach(), before[2] - 0.5 * W2.grad)


# ------------------------------------------------------------------------------------------- Preconditioned


def test_preconditioned_default_transform_whitens_and_can_be_switched():
    W1, b1, W2, _ = _params()
    opt = Preconditioned([{"params": [W1, b1]}, {"params": [W2], "precondition": False}], torch.optim.SGD, lr=0.5)
    assert opt.whitens is True
    assert _ids(opt.whitened_params()) == _ids([W1])
    assert opt.set_whitening(False) is True
    assert _ids(opt.whitened_params()) == _ids([W1])
    _grads(W1, b1, W2)
    before = [p.detach().clone() for p in (W1, b1, W2)]
    opt.step()  # whitening off: plain SGD everywhere
    for p, p0 in zip((W1, b1, W2), before, strict=True):
        torch.testing.assert_close(p.detach(), p0 - 0.5 * p.grad)
    assert opt.set_whitening(True) is True
    assert [g["precondition"] for g in opt.param_groups] == [True, False]
    _grads(W1, b1, W2, seed=2)
    before = [p.detach().clone() for p in (W1, b1, W2)]
    opt.step()  # on again: W1 whitened, b1 (1-D) and W2 (not chosen) plain
    torch.testing.assert_close(W1.detach(), before[0] - 0.5 * _uvt(W1.grad), atol=1e-12, rtol=0)
    torch.testing.assert_close(b1.detach(), before[1] - 0.5 * b1.grad)
    torch.testing.assert_close(W2.detach(), before[2] - 0.5 * W2.grad)


@pytest.mark.parametrize(
    "make",
    [lambda: grokfast_ema(alpha=0.5, lamb=1.0), lambda: chain(whiten("svd"), grokfast_ema(alpha=0.5, lamb=1.0))],
)
def test_preconditioned_with_another_transform_is_not_switched(make):
    W1, b1, _, _ = _params()
    opt = Preconditioned([W1, b1], torch.optim.SGD, make(), lr=0.5)
    assert opt.whitens is False
    assert opt.set_whitening(False) is False
    assert [g["precondition"] for g in opt.param_groups] == [True]
    assert "_whiten_chosen" not in opt.param_groups[0]
    assert opt.whitened_params() == []


def test_preconditioned_whitens_flag_declared_by_the_caller():
    W1, b1, _, _ = _params()
    # a custom whitening transform declared as whitening alone: switchable, W1 listed
    opt = Preconditioned([W1, b1], torch.optim.SGD, whiten("svd"), whitens=True, lr=0.5)
    assert opt.whitens is True and _ids(opt.whitened_params()) == _ids([W1])
    assert opt.set_whitening(False) is True and opt.param_groups[0]["precondition"] is False
    # the default transform declared as not switchable: the switch is refused and the step stays whitened
    opt = Preconditioned([W1, b1], torch.optim.SGD, whitens=False, lr=0.5)
    assert opt.set_whitening(False) is False and opt.whitened_params() == []
    _grads(W1, b1)
    W0 = W1.detach().clone()
    opt.step()
    torch.testing.assert_close(W1.detach(), W0 - 0.5 * _uvt(W1.grad), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="whitens = 'yes'"):
        Preconditioned([W1], torch.optim.SGD, whitens="yes", lr=0.5)


def test_whitening_switch_survives_state_dict():
    W1, b1, _, _ = _params()
    opt = Preconditioned([W1, b1], torch.optim.SGD, lr=0.5)
    opt.set_whitening(False)
    saved = opt.state_dict()
    opt2 = Preconditioned([W1, b1], torch.optim.SGD, lr=0.5)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["precondition"] is False
    assert _ids(opt2.whitened_params()) == _ids([W1])  # the original choice came along
    opt2.set_whitening(True)
    assert opt2.param_groups[0]["precondition"] is True


# ---------------------------------------------------------------------------------------------- diagnostics


def test_diagnostics_helper_asks_the_optimizer():
    W1, b1, W2, _ = _params()
    egd = EGD([{"params": [W1, b1]}, {"params": [W2], "whiten": False}], lr=0.1)
    assert whitened_params(egd) == {id(W1)}
    assert whitened_params(torch.optim.SGD([W1, b1, W2], lr=0.1)) == set()
    assert whitened_params(None) == set()

"""EGD and Preconditioned against hand-computed steps and torch's own optimizers."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from egalitarian import EGD, Preconditioned
from egalitarian.transforms import add_decayed_weights, chain, scale, trace, whiten

# G = [[2, 0, 0], [1, 1, 0]].  G Gᵀ = [[4, 2], [2, 2]]; for a 2×2 SPD M, √M = (M + √det·I)/√(tr + 2√det)
# = ([[4, 2], [2, 2]] + 2I)/√10 = [[6, 2], [2, 4]]/√10, so (G Gᵀ)^(-1/2) = [[4, -2], [-2, 6]]·√10/20 and
# G̃ = (G Gᵀ)^(-1/2) G = [[6, -2, 0], [2, 6, 0]]·√10/20   (rows of unit norm, orthogonal: U Vᵀ).
G = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
G_WHITE = torch.tensor([[6.0, -2.0, 0.0], [2.0, 6.0, 0.0]], dtype=torch.float64) * math.sqrt(10) / 20


def test_hand_example_is_orthonormal():
    torch.testing.assert_close(G_WHITE @ G_WHITE.T, torch.eye(2, dtype=torch.float64))


@pytest.mark.parametrize("backend", ["svd", "gram-eigh", "auto", "newton-schulz"])
def test_one_egd_step_2x3_decoupled(backend):
    W0 = torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, -3.0]], dtype=torch.float64)
    b0 = torch.tensor([0.5, -0.5], dtype=torch.float64)
    W = torch.nn.Parameter(W0.clone())
    b = torch.nn.Parameter(b0.clone())
    W.grad, b.grad = G.clone(), torch.tensor([1.0, 2.0], dtype=torch.float64)
    opt = EGD([W, b], lr=0.1, weight_decay=0.01, backend=backend)
    opt.step()
    # p ← (1 − ηλ) p − η G̃ ; the bias (1-D) takes the plain SGD step with the same decoupled decay.
    torch.testing.assert_close(W.detach(), (1 - 0.1 * 0.01) * W0 - 0.1 * G_WHITE, atol=1e-7, rtol=0)
    torch.testing.assert_close(b.detach(), (1 - 0.1 * 0.01) * b0 - 0.1 * torch.tensor([1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(W.grad, G)  # .grad is left as backward() wrote it


def test_one_egd_step_2x3_l2_in_the_loss():
    # The paper's convention: the decay term λW joins the gradient *before* whitening.
    # Choose W0 and the raw gradient so that raw + λ W0 = G exactly.
    lam = 0.1
    W0 = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    raw = G - lam * W0  # = [[1, 0, 0], [1, 1, 0]]
    W = torch.nn.Parameter(W0.clone())
    W.grad = raw.clone()
    EGD([W], lr=0.5, weight_decay=lam, weight_decay_mode="l2", backend="svd").step()
    torch.testing.assert_close(W.detach(), W0 - 0.5 * G_WHITE, atol=1e-7, rtol=0)


def test_momentum_and_nesterov_by_hand():
    # Gradients with orthogonal rows of norm 5 whiten to G/5 (hand-checkable).
    g1 = torch.tensor([[3.0, 0.0, 4.0], [0.0, 5.0, 0.0]], dtype=torch.float64)
    g2 = torch.tensor([[0.0, 5.0, 0.0], [4.0, 0.0, -3.0]], dtype=torch.float64)
    d1, d2 = g1 / 5, g2 / 5
    for nesterov in (False, True):
        W = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
        opt = EGD([W], lr=1.0, momentum=0.9, nesterov=nesterov, backend="svd")
        W.grad = g1.clone()
        opt.step()
        W.grad = g2.clone()
        opt.step()
        b1 = d1
        b2 = 0.9 * b1 + d2
        steps = (d1 + 0.9 * b1, d2 + 0.9 * b2) if nesterov else (b1, b2)
        torch.testing.assert_close(W.detach(), -(steps[0] + steps[1]), atol=1e-12, rtol=0)


def test_group_flag_opts_out_and_grad_none_is_skipped():
    W1 = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    W2 = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    W3 = torch.nn.Parameter(torch.ones(2, 3, dtype=torch.float64))
    opt = EGD([{"params": [W1]}, {"params": [W2, W3], "whiten": False}], lr=1.0)
    W1.grad, W2.grad = G.clone(), G.clone()
    opt.step()
    torch.testing.assert_close(W1.detach(), -G_WHITE, atol=1e-7, rtol=0)
    torch.testing.assert_close(W2.detach(), -G)  # plain SGD
    assert torch.equal(W3.detach(), torch.ones(2, 3, dtype=torch.float64))  # no grad: untouched
    assert W3 not in opt.state


def test_conv_kernel_is_whitened_as_out_by_in_k_k():
    g = torch.Generator().manual_seed(0)
    K = torch.nn.Parameter(torch.zeros(4, 2, 3, 3, dtype=torch.float64))
    K.grad = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=g)
    EGD([K], lr=1.0, backend="svd").step()
    U, _, Vh = torch.linalg.svd(K.grad.reshape(4, 18), full_matrices=False)
    torch.testing.assert_close(K.detach(), -(U @ Vh).reshape(4, 2, 3, 3))


def test_closure_is_called_and_loss_returned():
    W = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 5.0]]))
    opt = EGD([W], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (W**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(39.0)
    assert W.grad is not None


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _train(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=g)
        y = torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: EGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda ps: EGD(ps, lr=0.05, momentum=0.5, backend="rsvd", rank=4),
        lambda ps: Preconditioned(ps, torch.optim.AdamW, whiten(), lr=1e-2, betas=(0.8, 0.9)),
        lambda ps: Preconditioned(ps, torch.optim.SGD, whiten("rsvd", rank=3), lr=1e-2, momentum=0.9),
    ],
)
def test_state_dict_round_trip_continues_identically(make):
    model = _model(0)
    opt = make(model.parameters())
    _train(model, opt, 3, seed=1)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())  # like torch.save: state_dict() holds live references
    _train(model, opt, 3, seed=2)
    expected = [p.detach().clone() for p in model.parameters()]

    model2 = _model(123)
    model2.load_state_dict(saved_model)
    opt2 = make(model2.parameters())
    opt2.load_state_dict(saved_opt)
    _train(model2, opt2, 3, seed=2)
    for a, b in zip(expected, model2.parameters(), strict=True):
        assert torch.equal(a, b.detach())


def test_preconditioned_adamw_equals_adamw_on_whitened_grads():
    """Reference: torch's AdamW stepping on gradients we whiten by an explicit SVD."""
    m1, m2 = _model(0), _model(0)
    kw = dict(lr=1e-2, betas=(0.85, 0.95), eps=1e-7, weight_decay=0.1)
    opt1 = Preconditioned(m1.parameters(), torch.optim.AdamW, whiten("svd"), **kw)
    opt2 = torch.optim.AdamW(m2.parameters(), **kw)
    assert opt1.base.param_groups[0]["betas"] == (0.85, 0.95) and opt1.base.param_groups[0]["eps"] == 1e-7
    g = torch.Generator().manual_seed(3)
    for _ in range(4):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        for m, o in ((m1, opt1), (m2, opt2)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
        raw = [p.grad.clone() for p in m1.parameters()]
        for p in m2.parameters():
            if p.ndim == 2:  # U_r V_rᵀ, r = numerical rank at the documented cutoff max(m, n)·ε32
                U, s, Vh = torch.linalg.svd(p.grad.double(), full_matrices=False)
                keep = (s > max(p.shape) * torch.finfo(torch.float32).eps * s[0]).double()
                p.grad = ((U * keep) @ Vh).float()
        opt1.step()
        opt2.step()
        for p, r in zip(m1.parameters(), raw, strict=True):
            assert torch.equal(p.grad, r)  # users see the raw gradient after step()
        for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_preconditioned_group_opt_out_and_lr_scheduler():
    W1 = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    W2 = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    opt = Preconditioned([{"params": [W1]}, {"params": [W2], "precondition": False}], torch.optim.SGD, lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    W1.grad, W2.grad = G.clone(), G.clone()
    opt.step()
    sched.step()
    assert opt.base.param_groups[0]["lr"] == 0.5
    torch.testing.assert_close(W1.detach(), -G_WHITE, atol=1e-7, rtol=0)
    torch.testing.assert_close(W2.detach(), -G)


def test_chain_equals_sequence_by_hand():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    g = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    t = chain(add_decayed_weights(1.0), whiten("svd"), scale(-2.0), trace(0.5))
    s = t.init(p)
    out1, s = t.update(g, s, p)
    out2, s = t.update(g, s, p)
    # by hand: g + 1·p = G; whiten → G̃; ×(−2); momentum b1 = d, b2 = 0.5·b1 + d
    d = -2.0 * G_WHITE
    torch.testing.assert_close(out1, d, atol=1e-12, rtol=0)
    torch.testing.assert_close(out2, 1.5 * d, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=0.0), "lr = 0.0"),
        (dict(lr=0.1, momentum=1.5), "momentum = 1.5"),
        (dict(lr=0.1, nesterov=True), "nesterov = True"),
        (dict(lr=0.1, weight_decay=-1.0), "weight_decay = -1.0"),
        (dict(lr=0.1, weight_decay_mode="coupled"), "weight_decay_mode = 'coupled'"),
        (dict(lr=0.1, backend="qr"), "backend = 'qr'"),
    ],
)
def test_egd_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EGD([torch.nn.Parameter(torch.zeros(2, 2))], **kwargs)


def test_preconditioned_needs_an_optimizer_class():
    with pytest.raises(TypeError, match="base"):
        Preconditioned([torch.nn.Parameter(torch.zeros(2, 2))], base=torch.optim.SGD([torch.zeros(1)], lr=1))


# ------------------------------------------------------------------------- backend= (method= deprecated)


def test_whiten_and_egd_take_method_as_a_deprecated_alias():
    g = torch.tensor([[3.0, 0.0, 4.0], [0.0, 5.0, 0.0]], dtype=torch.float64)  # orthogonal rows of norm 5
    p = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match="method= is deprecated, use backend="):
        t = whiten(method="svd")
    torch.testing.assert_close(t.update(g, t.init(p), p)[0], g / 5, atol=1e-12, rtol=0)
    W = torch.nn.Parameter(p.clone())
    with pytest.warns(DeprecationWarning, match="method= is deprecated"):
        opt = EGD([W], lr=1.0, method="newton-schulz")
    assert opt.param_groups[0]["backend"] == "newton-schulz" and "method" not in opt.param_groups[0]
    W.grad = g.clone()
    opt.step()
    torch.testing.assert_close(W.detach(), -g / 5, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="method = 'svd'"):
        whiten("svd", method="svd")
    with pytest.raises(ValueError, match="method = 'svd'"):
        EGD([W], lr=1.0, backend="auto", method="svd")


def test_egd_group_key_method_is_a_deprecated_alias_of_backend():
    W1 = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    W2 = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.warns(DeprecationWarning, match="method= is deprecated"):
        opt = EGD([{"params": [W1], "method": "svd"}, {"params": [W2]}], lr=1.0)
    assert [g["backend"] for g in opt.param_groups] == ["svd", "auto"]
    assert all("method" not in g for g in opt.param_groups)
    W1.grad = G.clone()
    opt.step()
    torch.testing.assert_close(W1.detach(), -G_WHITE, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="method = 'svd'"):
        EGD([{"params": [W1], "method": "svd", "backend": "svd"}], lr=1.0)


def test_egd_loads_a_checkpoint_whose_groups_say_method():
    """A state dict as saved before the rename (group key "method"), written by hand: momentum buffer b0."""
    W0 = torch.tensor([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]], dtype=torch.float64)
    b0 = torch.tensor([[0.5, 0.0, 0.0], [0.0, -0.5, 1.0]], dtype=torch.float64)
    old = {
        "state": {0: {"whiten": (), "momentum": {"momentum_buffer": b0.clone()}}},
        "param_groups": [
            dict(lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0, weight_decay_mode="decoupled", whiten=True,
                 method="svd", rtol=None, eps=None, rank=64, power_iters=2, seed=0, params=[0])
        ],
    }
    W = torch.nn.Parameter(W0.clone())
    opt = EGD([W], lr=0.1, momentum=0.9)  # backend "auto" here: the checkpoint's "svd" must win
    opt.load_state_dict(old)
    assert opt.param_groups[0]["backend"] == "svd" and "method" not in opt.param_groups[0]
    assert "method" in old["param_groups"][0]  # the caller's dict is not changed
    W.grad = G.clone()
    opt.step()
    # b ← 0.9·b0 + U Vᵀ(G), W ← W0 − 0.1·b
    torch.testing.assert_close(W.detach(), W0 - 0.1 * (0.9 * b0 + G_WHITE), atol=1e-12, rtol=0)

"""EGD and Preconditioned against hand-computed steps and torch's own optimizers."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch

from egalitarian import EGD, Preconditioned, egd_for
from egalitarian.errors import ConfigError
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
        (dict(lr=0.1, weight_decay=-1.0), "weight_decay = -1.0"),
        (dict(lr=0.1, weight_decay_mode="coupled"), "weight_decay_mode = 'coupled'"),
        (dict(lr=0.1, backend="qr"), "backend = 'qr'"),
    ],
)
def test_egd_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EGD([torch.nn.Parameter(torch.zeros(2, 2))], **kwargs)


def test_nonfinite_argument_validation():
    P = [torch.nn.Parameter(torch.zeros(2, 2))]
    with pytest.raises(ValueError, match="nonfinite = 'ignore'"):
        EGD(P, lr=0.1, nonfinite="ignore")
    with pytest.raises(ValueError, match="nonfinite = 'skip'"):
        EGD([{"params": P, "nonfinite": "skip"}], lr=0.1)
    with pytest.raises(ValueError, match="nonfinite = 'ignore'"):
        Preconditioned(P, torch.optim.AdamW, nonfinite="ignore")
    assert "nonfinite" not in Preconditioned(P, torch.optim.AdamW, nonfinite="propagate").base.defaults


def test_preconditioned_needs_an_optimizer_class():
    with pytest.raises(TypeError, match="base"):
        Preconditioned([torch.nn.Parameter(torch.zeros(2, 2))], base=torch.optim.SGD([torch.zeros(1)], lr=1))


# ------------------------------------------------------------------------- names: backend=, clamp_eps=


def test_backend_is_the_only_name_of_the_backend():
    """The pre-release alias ``method=`` is gone: an unknown polar option for whiten, not a keyword of EGD."""
    with pytest.raises(ConfigError, match="method = 'svd': not an option of backend 'auto'"):
        whiten(method="svd")
    with pytest.raises(TypeError, match="method"):
        EGD([torch.nn.Parameter(torch.zeros(2, 3))], lr=1.0, method="svd")


def test_egd_clamp_is_clamp_eps_and_reaches_polar():
    """EGD(clamp_eps=c) steps by U diag(s / max(s, c)) Vᵀ (the paper's clamp), written out with an fp64 SVD."""
    g = torch.Generator().manual_seed(0)
    U = torch.linalg.qr(torch.randn(4, 3, dtype=torch.float64, generator=g)).Q
    V = torch.linalg.qr(torch.randn(5, 3, dtype=torch.float64, generator=g)).Q
    s = torch.tensor([1.0, 1e-3, 1e-7], dtype=torch.float64)
    grad = (U * s) @ V.T
    W = torch.nn.Parameter(torch.zeros(4, 5, dtype=torch.float64))
    opt = EGD([W], lr=1.0, backend="svd", clamp_eps=1e-5)
    assert opt.param_groups[0]["clamp_eps"] == 1e-5 and "eps" not in opt.param_groups[0]
    W.grad = grad
    opt.step()
    expected = -(U * (s / s.clamp_min(1e-5))) @ V.T  # weights 1, 1, 1e-2
    torch.testing.assert_close(W.detach(), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("backend,options", [("newton-schulz", dict(clamp_eps=1e-6)),
                                             ("polar-express", dict(clamp_eps=1e-6)),
                                             ("newton-schulz", dict(rtol=1e-3))])
def test_egd_refuses_a_polar_option_its_backend_does_not_take(backend, options):
    (name, value), = options.items()
    with pytest.raises(ConfigError, match=f"{name} = {value}: not an option of backend '{backend}'"):
        EGD([torch.nn.Parameter(torch.zeros(2, 3))], lr=1.0, backend=backend, **options)
    with pytest.raises(ConfigError, match=f"{name} = {value}: not an option of backend '{backend}'"):
        whiten(backend, **options)


def test_egd_refuses_a_checkpoint_saved_with_other_group_keys():
    """A state dict whose group calls the clamp ``eps`` (another version's keys, written by hand): a ValueError
    naming the missing key, and nothing is loaded."""
    b0 = torch.tensor([[0.5, 0.0, 0.0], [0.0, -0.5, 1.0]], dtype=torch.float64)
    old = {
        "state": {0: {"whiten": (), "momentum": {"momentum_buffer": b0.clone()}}},
        "param_groups": [
            dict(lr=0.5, momentum=0.9, nesterov=False, weight_decay=0.0, weight_decay_mode="decoupled", whiten=True,
                 backend="svd", rtol=None, eps=None, rank=64, power_iters=2, seed=0, nonfinite="raise",
                 momentum_position="after", scale="none", rms_target=0.2, row_blocks=1, params=[0])
        ],
    }
    W = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    opt = EGD([W], lr=0.1, momentum=0.9)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=r"param_groups\[0\] = \"without 'clamp_eps'\": saved by another version"):
        opt.load_state_dict(old)
    assert opt.state_dict() == before and opt.param_groups[0]["lr"] == 0.1


# ------------------------------------------------------------------------- non-finite gradients: all or nothing


def _six_params(last_is_matrix: bool) -> torch.nn.Module:
    """Three layers, six parameters (W, b, W, b, W, b) or five ending in a matrix (last layer without bias)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
        torch.nn.Linear(8, 3, bias=not last_is_matrix),
    )


def _backward(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()


def _same(a, b) -> bool:
    """Bit-identical nested state: tensors by torch.equal (NaN-free here), everything else by ==."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


NONFINITE_MAKERS = {
    "egd-momentum": lambda ps, **kw: EGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01, **kw),
    "egd-rsvd-nesterov": lambda ps, **kw: EGD(ps, lr=0.05, momentum=0.9, nesterov=True, backend="rsvd", rank=4,
                                              **kw),
    "preconditioned-adamw": lambda ps, **kw: Preconditioned(ps, torch.optim.AdamW, lr=1e-2, weight_decay=0.1,
                                                            **kw),
}


@pytest.mark.parametrize("make", NONFINITE_MAKERS.values(), ids=NONFINITE_MAKERS.keys())
@pytest.mark.parametrize("last_is_matrix", [False, True])
@pytest.mark.parametrize("good_steps", [0, 2])  # no state yet / momentum buffers and Adam moments in place
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_in_the_last_gradient_changes_nothing(make, last_is_matrix, good_steps, bad):
    model = _six_params(last_is_matrix)
    opt = make(model.parameters())
    for k in range(good_steps):
        _backward(model, k)
        opt.step()
    _backward(model, 99)
    params = list(model.parameters())
    params[-1].grad[0] = bad
    grads = [p.grad.clone() for p in params]
    before_params = [p.detach().clone() for p in params]
    before_state = copy.deepcopy(opt.state_dict())
    before_entries = len(opt.state)
    shape = tuple(params[-1].shape)
    with pytest.raises(FloatingPointError, match=rf"params\[{len(params) - 1}\].*shape {re.escape(str(shape))}"
                       r".*NaN or inf.*nonfinite='propagate'"):
        opt.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before_params, strict=True))
    assert _same(opt.state_dict(), before_state)
    for p, g in zip(params, grads, strict=True):  # .grad as backward() left it
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0, equal_nan=True)
    # the state has no entries for parameters it did not have before (no empty dicts created)
    assert len(opt.state) == before_entries

    # the advice of the message is accepted: the same step with nonfinite="propagate" lets NaN into the step
    model2 = _six_params(last_is_matrix)
    model2.load_state_dict({k: v for k, v in zip(model2.state_dict(), before_params, strict=True)})
    opt2 = make(model2.parameters(), nonfinite="propagate")
    opt2.load_state_dict(before_state)
    opt2.param_groups[0]["nonfinite"] = "propagate"  # the checkpoint said "raise"
    for p, g in zip(model2.parameters(), grads, strict=True):
        p.grad = g.clone()
    opt2.step()
    after = list(model2.parameters())
    assert not bool(torch.isfinite(after[-1]).all())
    if last_is_matrix:  # a whitened matrix with a NaN/inf gradient: an all-NaN update
        assert bool(torch.isnan(after[-1]).all())
    assert all(bool(torch.isfinite(p).all()) for p in after[:-1])  # the others still take finite steps


def test_propagate_group_is_not_checked_and_raise_group_is():
    W1 = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    W2 = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
    opt = EGD([{"params": [W1], "nonfinite": "propagate"}, {"params": [W2]}], lr=1.0, backend="svd")
    W1.grad, W2.grad = torch.full((2, 3), math.nan, dtype=torch.float64), G.clone()
    opt.step()
    assert bool(torch.isnan(W1).all())
    torch.testing.assert_close(W2.detach(), -G_WHITE, atol=1e-12, rtol=0)
    W2.grad = torch.full((2, 3), -math.inf, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match=r"max\|params\[1\]\.grad\| = inf: .*shape \(2, 3\)"):
        opt.step()
    torch.testing.assert_close(W2.detach(), -G_WHITE, atol=1e-12, rtol=0)


def test_huge_finite_gradients_are_not_mistaken_for_overflow():
    """max|g| (not a 2-norm, which overflows fp32 at 1e20) decides: a 1e30 gradient is finite and whitens."""
    W = torch.nn.Parameter(torch.zeros(2, 3))
    W.grad = (G * 1e30).float()
    EGD([W], lr=1.0, backend="svd").step()
    torch.testing.assert_close(W.detach().double(), -G_WHITE, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------- gradient clipping and whitening


def _clipping_pair(make, max_norm: float):
    """Two identical models and optimizers; the second clips its gradients to ``max_norm`` before each step."""
    torch.manual_seed(0)
    W0 = torch.randn(4, 7, dtype=torch.float64)
    b0 = torch.randn(4, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    grads = [(torch.randn(4, 7, dtype=torch.float64, generator=gen) * 10,
              torch.randn(4, dtype=torch.float64, generator=gen) * 10) for _ in range(3)]
    out = []
    for clip in (False, True):
        W, b = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(b0.clone())
        opt = make([W, b])
        factors = []
        for gW, gb in grads:
            W.grad, b.grad = gW.clone(), gb.clone()
            if clip:
                total = torch.linalg.vector_norm(torch.cat([gW.flatten(), gb]))
                torch.nn.utils.clip_grad_norm_([W, b], max_norm)
                factors.append(float(max_norm / (total + 1e-6)))  # torch's documented clip coefficient
            opt.step()
        out.append((W.detach(), b.detach(), factors))
    return W0, b0, grads, out


def _uvt(g: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(g, full_matrices=False)  # full rank 4: every singular value kept
    return U @ Vh


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_clipping_never_changes_egds_whitened_step(momentum):
    lr, mu = 0.1, momentum
    W0, b0, grads, [(W, b, _), (Wc, bc, factors)] = _clipping_pair(
        lambda ps: EGD(ps, lr=lr, momentum=mu, backend="svd"), max_norm=1.0)
    assert all(f < 0.1 for f in factors)  # clipping was active at every step
    # by hand: heavy-ball on U Vᵀ of each gradient, buffer starting at the first (torch's convention)
    buf_W = buf_b = buf_bc = None
    ref_W, ref_b, ref_bc = W0.clone(), b0.clone(), b0.clone()
    for (gW, gb), c in zip(grads, factors, strict=True):
        d = _uvt(gW)
        buf_W = d if buf_W is None or mu == 0 else mu * buf_W + d
        buf_b = gb if buf_b is None or mu == 0 else mu * buf_b + gb
        buf_bc = c * gb if buf_bc is None or mu == 0 else mu * buf_bc + c * gb
        ref_W, ref_b, ref_bc = ref_W - lr * buf_W, ref_b - lr * buf_b, ref_bc - lr * buf_bc
    torch.testing.assert_close(W, ref_W, atol=1e-12, rtol=0)
    torch.testing.assert_close(Wc, ref_W, atol=1e-12, rtol=0)  # the whitened matrix: the same with clipping
    torch.testing.assert_close(b, ref_b, atol=1e-12, rtol=0)
    torch.testing.assert_close(bc, ref_bc, atol=1e-12, rtol=0)  # the bias: scaled by the clip factors
    assert (b - bc).abs().max() > 0.1
    if mu == 0:  # the momentum-free step's size is set by lr alone: every singular value of the step is lr
        W1 = torch.nn.Parameter(W0.clone())
        W1.grad = grads[0][0] * 1e-3
        EGD([W1], lr=lr, backend="svd").step()
        torch.testing.assert_close(torch.linalg.svdvals(W0 - W1.detach()), torch.full((4,), lr, dtype=W0.dtype))


def test_clipping_never_changes_a_preconditioned_whitened_step():
    """Preconditioned(SGD with momentum): the whitened matrix is unchanged by clipping, the bias is not."""
    make = lambda ps: Preconditioned(ps, torch.optim.SGD, lr=0.1, momentum=0.9)  # noqa: E731
    _, _, _, [(W, b, _), (Wc, bc, factors)] = _clipping_pair(make, max_norm=1.0)
    assert all(f < 0.1 for f in factors)
    torch.testing.assert_close(Wc, W, atol=1e-12, rtol=0)
    assert (b - bc).abs().max() > 0.1


def test_nesterov_without_momentum_is_plain_egd():
    """μ = 0: Nesterov's ``g + μ·b`` is ``g``, so EGD takes the pair (a search may switch a Nesterov method's momentum
    off) and steps exactly as without Nesterov; torch.optim.SGD refuses it, EGD does what the formula says."""
    torch.manual_seed(0)
    W0, G = torch.randn(6, 4), torch.randn(6, 4)
    out = []
    for nesterov in (False, True):
        W = torch.nn.Parameter(W0.clone())
        opt = EGD([W], lr=0.1, momentum=0.0, nesterov=nesterov)
        for _ in range(3):
            W.grad = G.clone()
            opt.step()
        out.append(W.detach().clone())
    assert torch.equal(out[0], out[1])
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)  # the independent reference: 3 steps of -lr·U Vᵀ
    assert torch.allclose(out[1].double(), W0.double() - 3 * 0.1 * (U @ Vh), atol=1e-5)


# ------------------------------------------------------------------------------ one finiteness check per step


def _egd_for_net() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Embedding(7, 6), torch.nn.Linear(6, 6), torch.nn.Tanh(), torch.nn.Linear(6, 7))
    return net, egd_for(net, lr=0.1, momentum=0.9)


def test_egd_with_aux_adamw_reads_the_gradients_once_per_step(monkeypatch):
    import egalitarian.optim as optim_module

    net, opt = _egd_for_net()
    calls: list[int] = []
    peaks = optim_module.global_peaks
    monkeypatch.setattr(optim_module, "global_peaks", lambda grads: calls.append(len(grads)) or peaks(grads))
    net(torch.tensor([[1, 2, 3]])).sum().backward()
    opt.step()
    assert calls == [len(list(net.parameters()))]  # every gradient, once (the EGD engine does not check again)


def test_a_nan_in_a_whitened_gradient_of_egd_for_changes_nothing():
    net, opt = _egd_for_net()
    net(torch.tensor([[1, 2, 3]])).sum().backward()
    opt.step()
    before, state = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    net(torch.tensor([[4, 5, 6]])).sum().backward()
    net[1].weight.grad[0, 0] = math.nan  # whitened by the EGD engine; its group is the optimizer's first
    with pytest.raises(FloatingPointError, match=r"params\[0\].*shape \(6, 6\)"):
        opt.step()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert _same(opt.state_dict(), state)


def test_the_peaks_of_plain_gradients_are_their_largest_magnitudes():
    from egalitarian.distributed import global_peaks

    grads = [torch.tensor([[1.0, -3.0], [2.0, 0.5]]), torch.tensor(-2.5), torch.tensor([1.0, -math.inf]),
             torch.tensor([math.inf, math.nan, 1.0]), torch.tensor([0.25, -4.0], dtype=torch.bfloat16),
             torch.zeros(3, 1, dtype=torch.float64)]
    got = global_peaks(grads)
    assert got.dtype == torch.float64
    assert got[:3].tolist() == [3.0, 2.5, math.inf] and math.isnan(got[3]) and got[4:].tolist() == [4.0, 0.0]


# ------------------------------------------------------------------------- DTensors whitened as DTensor ops


def _fsdp_steps(sharded: bool) -> list[torch.Tensor]:
    """Three EGD steps of a model whose three matrices have 66 × 66 Grams (on CPU one batch of polar_many: not
    batched by shape, the smaller side is > 64), FSDP2-sharded on a one-rank group or not; the parameters after."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(70, 66), torch.nn.Tanh(), torch.nn.Linear(66, 66), torch.nn.Tanh(),
                              torch.nn.Linear(66, 66))
    if sharded:
        from torch.distributed.fsdp import fully_shard

        fully_shard(net)
    opt = EGD(net.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(80, 70, generator=g)).square().mean().backward()
        opt.step()
    return [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for p in net.parameters()]


def _one_rank_fsdp(rank: int, world: int, path: str) -> None:
    torch.save(_fsdp_steps(True), path)


def test_egd_on_a_one_rank_fsdp2_model_steps_like_the_plain_model(tmp_path):
    """With one rank nothing is split: the whitening runs on the DTensors themselves (DTensor ops; polar_many leaves
    tensor subclasses to polar), and must take the plain model's steps."""
    from dist_helpers import run_ranks

    run_ranks(1, _one_rank_fsdp, str(tmp_path / "p.pt"))
    for got, want in zip(torch.load(tmp_path / "p.pt"), _fsdp_steps(False), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)

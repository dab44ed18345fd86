"""Baseline transforms and MuonWithAdamW against each method's published equation, worked out by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from egalitarian.baselines import (
    MuonWithAdamW,
    column_norm,
    grokfast_ema,
    grokfast_ma,
    newton_schulz5,
    perp_to_weights,
)
from egalitarian.optim import Preconditioned
from egalitarian.transforms import chain, whiten

F64 = torch.float64


def t(*values):
    return torch.tensor(values, dtype=F64)


def run(transform, grads, param=None):
    """Feed ``grads`` one after another through ``transform``; return the outputs."""
    param = torch.zeros_like(grads[0]) if param is None else param
    state = transform.init(param)
    outs = []
    for g in grads:
        g_before = g.clone()
        out, state = transform.update(g, state, param)
        assert torch.equal(g, g_before)  # pure: the input gradient is not touched
        outs.append(out)
    return outs


# ------------------------------------------------------------------------------------------------ Grokfast-EMA


def test_grokfast_ema_two_steps_by_hand():
    # Official gradfilter_ema: μ starts at g1, then μ ← αμ + (1−α)g in the same call; ĝ = g + λμ.
    # α = 0.75, λ = 2, g1 = [1, 2], g2 = [3, −2]:
    #   μ1 = 0.75·[1, 2] + 0.25·[1, 2] = [1, 2]       ĝ1 = [1, 2] + 2·[1, 2] = [3, 6]
    #   μ2 = 0.75·[1, 2] + 0.25·[3, −2] = [1.5, 1]    ĝ2 = [3, −2] + 2·[1.5, 1] = [6, 0]
    g1, g2 = t(1.0, 2.0), t(3.0, -2.0)
    out1, out2 = run(grokfast_ema(alpha=0.75, lamb=2.0), [g1, g2])
    torch.testing.assert_close(out1, t(3.0, 6.0))
    torch.testing.assert_close(out2, t(6.0, 0.0))
    # normalize=True divides by 1 + λ = 3 (lucidrains' lr normalisation).
    n1, n2 = run(grokfast_ema(alpha=0.75, lamb=2.0, normalize=True), [g1, g2])
    torch.testing.assert_close(n1, t(1.0, 2.0))
    torch.testing.assert_close(n2, t(2.0, 0.0))


def test_grokfast_ema_state_is_the_ema_and_validation():
    tr = grokfast_ema(alpha=0.75, lamb=2.0)
    p = torch.zeros(2, dtype=F64)
    _, s = tr.update(t(1.0, 2.0), tr.init(p), p)
    _, s = tr.update(t(3.0, -2.0), s, p)
    torch.testing.assert_close(s["ema"], t(1.5, 1.0))
    with pytest.raises(ValueError, match="alpha = 1"):
        grokfast_ema(alpha=1)
    with pytest.raises(ValueError, match="lamb = -1"):
        grokfast_ema(lamb=-1)


def test_grokfast_ema_in_front_of_sgd():
    p0 = t(0.5, -1.0)
    p = torch.nn.Parameter(p0.clone())
    opt = Preconditioned([p], torch.optim.SGD, grokfast_ema(alpha=0.75, lamb=2.0), lr=0.1)
    p.grad = t(1.0, 2.0)
    opt.step()
    torch.testing.assert_close(p.detach(), p0 - 0.1 * t(3.0, 6.0))  # p − lr·ĝ1
    torch.testing.assert_close(p.grad, t(1.0, 2.0))  # raw gradient restored
    p.grad = t(3.0, -2.0)
    opt.step()
    torch.testing.assert_close(p.detach(), p0 - 0.1 * t(3.0, 6.0) - 0.1 * t(6.0, 0.0))


# ------------------------------------------------------------------------------------------------- Grokfast-MA


def test_grokfast_ma_window3_mean_with_warmup():
    # Official gradfilter_ma: append g, and once the window holds w gradients ĝ = g + λ·mean(window).
    g = [t(1.0, 0.0), t(2.0, 3.0), t(4.0, -3.0), t(8.0, 6.0)]
    out = run(grokfast_ma(window_size=3, lamb=1.0), g)
    torch.testing.assert_close(out[0], g[0])  # warming up: unchanged
    torch.testing.assert_close(out[1], g[1])
    torch.testing.assert_close(out[2], t(4.0, -3.0) + t(7.0, 0.0) / 3)  # mean(g1, g2, g3) = [7/3, 0]
    torch.testing.assert_close(out[3], t(8.0, 6.0) + t(14.0, 6.0) / 3)  # oldest dropped: mean(g2, g3, g4)


def test_grokfast_ma_without_warmup_and_sum_filter():
    g = [t(1.0, 0.0), t(2.0, 3.0), t(4.0, -3.0)]
    # warmup=False: filter from the first step, mean over the gradients seen so far.
    out = run(grokfast_ma(window_size=3, lamb=2.0, warmup=False), g)
    torch.testing.assert_close(out[0], t(1.0, 0.0) + 2 * t(1.0, 0.0))
    torch.testing.assert_close(out[1], t(2.0, 3.0) + 2 * t(1.5, 1.5))
    torch.testing.assert_close(out[2], t(4.0, -3.0) + 2 * t(7.0, 0.0) / 3)
    # filter_type="sum": the official code sums the window without dividing.  Window 2, λ = 0.5.
    out = run(grokfast_ma(window_size=2, lamb=0.5, filter_type="sum"), g)
    torch.testing.assert_close(out[0], g[0])
    torch.testing.assert_close(out[1], t(2.0, 3.0) + 0.5 * t(3.0, 3.0))
    torch.testing.assert_close(out[2], t(4.0, -3.0) + 0.5 * t(6.0, 0.0))
    # normalize=True divides by 1 + λ·w for "sum" and 1 + λ for "mean".
    out = run(grokfast_ma(window_size=2, lamb=0.5, filter_type="sum", normalize=True), g)
    torch.testing.assert_close(out[2], (t(4.0, -3.0) + 0.5 * t(6.0, 0.0)) / 2)
    out = run(grokfast_ma(window_size=2, lamb=0.5, normalize=True), g)
    torch.testing.assert_close(out[2], (t(4.0, -3.0) + 0.5 * t(3.0, 0.0)) / 1.5)


def test_grokfast_ma_state_is_a_copy_and_validation():
    tr = grokfast_ma(window_size=2, lamb=1.0)
    p = torch.zeros(2, dtype=F64)
    g = t(1.0, 2.0)
    _, s = tr.update(g, tr.init(p), p)
    g.zero_()  # e.g. zero_grad(set_to_none=False) on the same tensor
    assert isinstance(s["grads"], tuple)
    torch.testing.assert_close(s["grads"][0], t(1.0, 2.0))
    for kwargs, text in [({"window_size": 0}, "window_size = 0"), ({"lamb": -1.0}, "lamb = -1.0"),
                         ({"filter_type": "median"}, "filter_type = 'median'")]:
        with pytest.raises(ValueError, match=text):
            grokfast_ma(**kwargs)


# ------------------------------------------------------------------------------------------------- column norm


def test_column_norm_2x3_by_hand():
    # Row 0 = [3, 0, 4] has norm 5 → [0.6, 0, 0.8]; row 1 = [0.003, 0.004, 0] has norm 0.005 < 0.01, so it
    # is divided by the clamp 0.01 → [0.3, 0.4, 0].
    G = torch.tensor([[3.0, 0.0, 4.0], [0.003, 0.004, 0.0]], dtype=F64)
    (out,) = run(column_norm(), [G])
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.0, 0.8], [0.3, 0.4, 0.0]], dtype=F64))
    # A conv kernel (out, in, kh, kw) is normalised per output unit over in·kh·kw.
    (conv,) = run(column_norm(), [G.reshape(2, 1, 1, 3)])
    torch.testing.assert_close(conv, out.reshape(2, 1, 1, 3))
    (bias,) = run(column_norm(), [t(3.0, 4.0)])
    torch.testing.assert_close(bias, t(3.0, 4.0))  # < 2 dims: unchanged


# --------------------------------------------------------------------------------------------------------- ⊥Grad


def test_perp_to_weights_hand_example():
    # w = [1, 0], g = [1, 1]: g⊥ = g − (⟨w,g⟩/⟨w,w⟩) w = [0, 1], rescaled to ‖g‖ = √2 → [0, √2].
    (out,) = run(perp_to_weights(), [t(1.0, 1.0)], param=t(1.0, 0.0))
    torch.testing.assert_close(out, t(0.0, math.sqrt(2.0)))


def test_perp_to_weights_is_orthogonal_and_norm_preserving():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, dtype=F64, generator=gen)
    g = torch.randn(3, 4, dtype=F64, generator=gen)
    (out,) = run(perp_to_weights(), [g], param=w)
    assert out.shape == g.shape
    assert abs(torch.sum(out * w).item()) < 1e-12  # flattened inner product with the weights
    torch.testing.assert_close(out.norm(), g.norm())
    (zero_w,) = run(perp_to_weights(), [g], param=torch.zeros_like(w))
    torch.testing.assert_close(zero_w, g)  # w = 0: nothing to project out


def _perp_by_hand(w, g):
    """⊥Grad's published formula, written out: g⊥ = g − (⟨w,g⟩/⟨w,w⟩) w, rescaled to ‖g‖."""
    wf, gf = w.reshape(-1), g.reshape(-1)
    g_perp = gf - (wf @ gf) / (wf @ wf) * wf
    return (g_perp * gf.norm() / g_perp.norm()).reshape(g.shape)


def _perp_adamw_by_hand(W0, grads, lr, betas, eps, wd):
    """AdamW (decoupled decay, torch's bias correction) on the ⊥-projected gradient; the iterates."""
    beta1, beta2 = betas
    W, m, v, out = W0.clone(), torch.zeros_like(W0), torch.zeros_like(W0), []
    for k, G in enumerate(grads, start=1):
        gp = _perp_by_hand(W, G)  # projected against the weights at that step
        W = W * (1 - lr * wd)
        m = beta1 * m + (1 - beta1) * gp
        v = beta2 * v + (1 - beta2) * gp * gp
        W = W - lr * (m / (1 - beta1**k)) / ((v / (1 - beta2**k)).sqrt() + eps)
        out.append(W)
    return out


def test_perp_adamw_passes_every_base_hyperparameter():
    W0 = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]], dtype=F64)
    grads = [torch.tensor([[0.5, 1.0, -1.0], [2.0, 0.0, 1.0]], dtype=F64),
             torch.tensor([[-1.0, 0.5, 0.0], [1.0, 1.0, -2.0]], dtype=F64),
             torch.tensor([[0.0, -2.0, 1.0], [0.5, 1.0, 1.0]], dtype=F64)]
    W = torch.nn.Parameter(W0.clone())
    opt = Preconditioned([W], torch.optim.AdamW, perp_to_weights(), lr=0.01, betas=(0.8, 0.9), eps=1e-6,
                         weight_decay=0.05)
    group = opt.base.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"], group["lr"]) == ((0.8, 0.9), 1e-6, 0.05, 0.01)
    expected = _perp_adamw_by_hand(W0, grads, 0.01, (0.8, 0.9), 1e-6, 0.05)
    for G, W_hand in zip(grads, expected, strict=True):
        W.grad = G.clone()
        opt.step()
        torch.testing.assert_close(W.grad, G)  # the raw gradient is back in .grad
        torch.testing.assert_close(W.detach(), W_hand, atol=1e-13, rtol=0)
    # The betas matter from step 2 on: torch's defaults (0.9, 0.999) would have given something else.
    default = _perp_adamw_by_hand(W0, grads, 0.01, (0.9, 0.999), 1e-6, 0.05)[-1]
    assert (default - W.detach()).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------------------- chain


def test_chain_grokfast_then_svd_whitening_by_hand():
    G1 = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=F64)
    G2 = torch.tensor([[0.0, 1.0, -1.0], [3.0, 0.0, 1.0]], dtype=F64)
    outs = run(chain(grokfast_ema(alpha=0.5, lamb=1.0), whiten("svd")), [G1, G2])
    mu = G1
    for G, out in zip((G1, G2), outs, strict=True):
        mu = 0.5 * mu + 0.5 * G
        filtered = G + 1.0 * mu
        U, _, Vh = torch.linalg.svd(filtered, full_matrices=False)
        torch.testing.assert_close(out, U @ Vh, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------------------------- MuonWithAdamW

NS_ABC = (3.4445, -4.775, 2.0315)


def ns5_bf16(G, fused=True):
    """Muon's quintic Newton–Schulz in bfloat16: X ← G/‖G‖_F (as Gᵀ if rows > cols), 5× X ← aX + (bA + cA²)X,
    A = XXᵀ.  ``fused`` evaluates bA + cA² and aX + BX with one rounding each (addmm), as torch does."""
    a, b, c = NS_ABC
    X = G.bfloat16()
    tall = G.shape[0] > G.shape[1]
    if tall:
        X = X.T
    X = X / X.norm().clamp(min=1e-7)
    for _ in range(5):
        A = X @ X.T
        if fused:
            B = torch.addmm(A, A, A, beta=b, alpha=c)
            X = torch.addmm(X, B, X, beta=a)
        else:
            B = b * A + c * (A @ A)
            X = a * X + B @ X
    return X.T if tall else X


def test_ns5_reference_is_close_to_unfused_and_to_polar():
    G = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    fused, plain = ns5_bf16(G), ns5_bf16(G, fused=False)
    assert fused.dtype == torch.bfloat16 and fused.shape == (6, 4)
    torch.testing.assert_close(fused.float(), plain.float(), atol=0.1, rtol=0)  # bf16 rounding only
    s = torch.linalg.svdvals(fused.double())
    assert 0.6 < s.min() and s.max() < 1.25  # U S' Vᵀ with S' near 1, not exactly U Vᵀ


def _two_layer():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))


def _split(model):
    hidden, head = model[0], model[2]
    return [hidden.weight], [hidden.bias, head.weight, head.bias]


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("adjust_lr_fn", [None, "match_rms_adamw"])
def test_muon_steps_match_the_hand_equation(nesterov, adjust_lr_fn):
    gen = torch.Generator().manual_seed(2)
    W0 = torch.randn(6, 4, generator=gen)  # tall: NS works on the transpose
    b0 = torch.randn(6, generator=gen)
    grads = [(torch.randn(6, 4, generator=gen), torch.randn(6, generator=gen)) for _ in range(3)]
    W, b = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(b0.clone())
    lr, mom, wd = 0.02, 0.9, 0.1
    opt = MuonWithAdamW([W], [b], lr=lr, momentum=mom, nesterov=nesterov, weight_decay=wd,
                        adjust_lr_fn=adjust_lr_fn, adamw_lr=1e-2, adamw_betas=(0.8, 0.95), adamw_weight_decay=0.01)
    b_ref = torch.nn.Parameter(b0.clone())
    ref_adamw = torch.optim.AdamW([b_ref], lr=1e-2, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.01)
    adj = lr * (math.sqrt(max(1, 6 / 4)) if adjust_lr_fn is None else 0.2 * math.sqrt(6))
    W_ref = W0.clone()
    buf = torch.zeros_like(W0)  # torch.optim.Muon starts the buffer at 0 and lerps: B1 = (1 − μ) g1
    for gW, gb in grads:
        W.grad, b.grad, b_ref.grad = gW.clone(), gb.clone(), gb.clone()
        opt.step()
        ref_adamw.step()
        buf = mom * buf + (1 - mom) * gW
        update = (1 - mom) * gW + mom * buf if nesterov else buf
        W_ref = W_ref * (1 - lr * wd)  # decoupled decay with the unadjusted lr
        W_ref = W_ref - adj * ns5_bf16(update).float()
        torch.testing.assert_close(W.detach(), W_ref, atol=1e-6, rtol=1e-6)
        assert torch.equal(b.detach(), b_ref.detach())  # the bias follows torch.optim.AdamW exactly
    torch.testing.assert_close(opt.state[W]["momentum_buffer"], buf)


def ns5_f64(G):
    """Muon's quintic Newton–Schulz written out in float64 (no fused ops): the float32 path's reference."""
    a, b, c = NS_ABC
    X = G.double()
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    X = X / max(math.sqrt(float((X * X).sum())), 1e-7)
    for _ in range(5):
        A = X @ X.T
        X = a * X + (b * A + c * (A @ A)) @ X
    return X.T if tall else X


@pytest.mark.parametrize("shape", [(6, 4), (3, 5), (8, 8)])
def test_newton_schulz5_in_float32_matches_float64_by_hand(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    out = newton_schulz5(G)
    assert out.dtype == torch.float32 and out.shape == shape
    torch.testing.assert_close(out.double(), ns5_f64(G), atol=2e-6, rtol=0)  # fp32 accuracy
    assert (ns5_f64(G) - ns5_bf16(G).double()).abs().max() > 1e-3  # bfloat16 is visibly coarser
    assert torch.equal(G, torch.randn(*shape, generator=torch.Generator().manual_seed(3)))  # input untouched


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("adjust_lr_fn", [None, "match_rms_adamw"])
def test_muon_float32_steps_match_the_hand_equation(nesterov, adjust_lr_fn):
    gen = torch.Generator().manual_seed(2)
    W0 = torch.randn(6, 4, generator=gen)  # tall: NS works on the transpose
    grads = [torch.randn(6, 4, generator=gen) for _ in range(3)]
    W = torch.nn.Parameter(W0.clone())
    lr, mom, wd = 0.02, 0.9, 0.1
    opt = MuonWithAdamW([W], [], lr=lr, momentum=mom, nesterov=nesterov, weight_decay=wd,
                        adjust_lr_fn=adjust_lr_fn, ns_dtype="float32")
    adj = lr * (math.sqrt(max(1, 6 / 4)) if adjust_lr_fn is None else 0.2 * math.sqrt(6))
    W_ref, buf = W0.double(), torch.zeros_like(W0, dtype=F64)
    for g in grads:
        W.grad = g.clone()
        opt.step()
        buf = mom * buf + (1 - mom) * g.double()
        update = (1 - mom) * g.double() + mom * buf if nesterov else buf
        W_ref = W_ref * (1 - lr * wd) - adj * ns5_f64(update)
        torch.testing.assert_close(W.detach().double(), W_ref, atol=1e-6, rtol=0)
        assert W.dtype == torch.float32
    torch.testing.assert_close(opt.state[W]["momentum_buffer"].double(), buf, atol=1e-6, rtol=0)


def test_muon_bfloat16_default_is_bit_identical_to_torch_muon():
    gen = torch.Generator().manual_seed(5)
    W0 = torch.randn(6, 4, generator=gen)
    grads = [torch.randn(6, 4, generator=gen) for _ in range(4)]
    ours = [torch.nn.Parameter(W0.clone()) for _ in range(3)]
    ref = torch.nn.Parameter(W0.clone())
    opts = [MuonWithAdamW([ours[0]], [], lr=0.05, momentum=0.9, weight_decay=0.1),
            MuonWithAdamW([ours[1]], [], lr=0.05, momentum=0.9, weight_decay=0.1, ns_dtype="bfloat16"),
            MuonWithAdamW([ours[2]], [], lr=0.05, momentum=0.9, weight_decay=0.1, ns_dtype="float32")]
    torch_muon = torch.optim.Muon([ref], lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=True, eps=1e-7)
    for g in grads:
        for p, o in zip(ours, opts, strict=True):
            p.grad = g.clone()
            o.step()
        ref.grad = g.clone()
        torch_muon.step()
    assert torch.equal(ours[0], ref) and torch.equal(ours[1], ref)
    assert not torch.equal(ours[2], ref)  # float32 Newton–Schulz: a different (finer) update


def test_muon_float32_state_dict_round_trip_and_groups_without_ns_dtype_are_refused():
    model = _two_layer()
    opt = MuonWithAdamW(*_split(model), lr=0.05, adamw_lr=1e-2, ns_dtype="float32")
    _train(model, opt, 3, 0)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    assert saved_opt["param_groups"][0]["ns_dtype"] == "float32"
    _train(model, opt, 3, 3)
    fresh = _two_layer()
    fresh.load_state_dict(saved_model)
    opt2 = MuonWithAdamW(*_split(fresh), lr=0.05, adamw_lr=1e-2, ns_dtype="float32")
    opt2.load_state_dict(saved_opt)
    assert opt2.muon is None and opt2.muon_fp32 is not None
    _train(fresh, opt2, 3, 3)
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q)
    # a state dict saved before ns_dtype existed (pre-release) is refused, nothing loaded
    old = copy.deepcopy(saved_opt)
    for g in old["param_groups"]:
        g.pop("ns_dtype", None)
    opt3 = MuonWithAdamW(*_split(_two_layer()), lr=0.05, adamw_lr=1e-2)
    with pytest.raises(ValueError, match=r"param_groups\[0\] = \"without 'ns_dtype'\": saved by another version"):
        opt3.load_state_dict(old)
    assert opt3.muon is not None and opt3.muon_fp32 is None and not opt3.state


def test_muon_with_adamw_is_a_torch_optimizer_with_groups_and_scheduler():
    model = _two_layer()
    muon_ps, adamw_ps = _split(model)
    opt = MuonWithAdamW(muon_ps, adamw_ps, lr=0.05, adamw_lr=1e-3)
    assert isinstance(opt, torch.optim.Optimizer)
    assert [g["use_muon"] for g in opt.param_groups] == [True, False]
    assert [g["lr"] for g in opt.param_groups] == [0.05, 1e-3]
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[0]["nesterov"]
    assert opt.param_groups[1]["betas"] == (0.9, 0.95) and opt.param_groups[1]["weight_decay"] == 0.0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    x = torch.randn(5, 4)

    def closure():
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss is not None and loss.ndim == 0
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.025, 5e-4]  # both optimizers see the schedule
    assert opt.muon.param_groups[0]["lr"] == 0.025 and opt.adamw.param_groups[0]["lr"] == 5e-4
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    assert len(opt.state) == 4 and "momentum_buffer" in opt.state[muon_ps[0]] and "exp_avg" in opt.state[adamw_ps[0]]


def _train(model, opt, steps, start):
    for k in range(start, start + steps):
        x = torch.linspace(-1, 1, 20).reshape(5, 4) * (k + 1)
        opt.zero_grad()
        model(x).sin().sum().backward()
        opt.step()


def test_muon_with_adamw_state_dict_round_trip_is_bitwise():
    model = _two_layer()
    opt = MuonWithAdamW(*_split(model), lr=0.05, adamw_lr=1e-2)
    _train(model, opt, 3, 0)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())  # state_dict() holds live references
    assert set(saved_opt) == {"state", "param_groups"}  # one torch state dict (was {"muon", "adamw"})
    assert [g["use_muon"] for g in saved_opt["param_groups"]] == [True, False]
    _train(model, opt, 3, 3)

    fresh = _two_layer()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)  # make sure the load really overwrites
    fresh.load_state_dict(saved_model)
    opt2 = MuonWithAdamW(*_split(fresh), lr=0.05, adamw_lr=1e-2)
    opt2.load_state_dict(saved_opt)
    _train(fresh, opt2, 3, 3)
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q)
    assert [g["use_muon"] for g in opt2.param_groups] == [True, False]


def test_muon_with_adamw_step_is_all_or_nothing_for_sparse_gradients():
    """The shared base (optim.WithAuxAdamW) checks every gradient before any engine writes: a sparse gradient in
    the AdamW part leaves the Muon part untouched too."""
    emb = torch.nn.Embedding(5, 3, sparse=True)
    W = torch.nn.Parameter(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
    opt = MuonWithAdamW([W], [emb.weight])
    W.grad = torch.ones(4, 3)
    emb(torch.tensor([1, 2])).sum().backward()
    before = W.detach().clone(), emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match=r"MuonWithAdamW does not support sparse gradients \(params\[1\]"):
        opt.step()
    assert torch.equal(W.detach(), before[0]) and torch.equal(emb.weight.detach(), before[1]) and not opt.state


def test_muon_with_adamw_errors():
    model = _two_layer()
    with pytest.raises(ValueError, match=r"muon_params = '\[1\] of shape \(6,\)'"):
        MuonWithAdamW([model[0].weight, model[0].bias], [model[2].weight])
    with pytest.raises(ValueError, match="muon_params"):
        MuonWithAdamW([model[0].weight], [model[0].weight, model[0].bias])  # in both sets
    with pytest.raises(ValueError, match="adjust_lr_fn = 'spectral'"):
        MuonWithAdamW([model[0].weight], [], adjust_lr_fn="spectral")
    with pytest.raises(ValueError, match="momentum = 1.0"):
        MuonWithAdamW([model[0].weight], [], momentum=1.0)
    with pytest.raises(ValueError, match="both empty"):
        MuonWithAdamW([], [])
    opt = MuonWithAdamW([model[0].weight], [])  # AdamW set may be empty...
    assert opt.adamw is None and [g["use_muon"] for g in opt.param_groups] == [True]
    opt.add_param_group({"params": [model[0].bias], "use_muon": False})  # ...and created on demand
    assert opt.adamw is not None and [g["use_muon"] for g in opt.param_groups] == [True, False]
    with pytest.raises(ValueError, match="ns_dtype = 'float16': must be one of bfloat16, float32"):
        MuonWithAdamW([model[0].weight], [], ns_dtype="float16")
    with pytest.raises(ValueError, match="ns_dtype = 'half'"):
        opt.add_param_group({"params": [model[2].weight], "use_muon": True, "ns_dtype": "half"})
    with pytest.raises(ValueError, match="use_muon"):
        opt.add_param_group({"params": [model[2].bias]})
    with pytest.raises(ValueError, match=r"params = '\[0\] of shape \(3,\)'"):
        opt.add_param_group({"params": [model[2].bias], "use_muon": True})


@pytest.mark.parametrize("make", [lambda: grokfast_ema(alpha=0.9, lamb=2.0),
                                  lambda: grokfast_ma(window_size=2, lamb=1.0)])
def test_grokfast_state_survives_preconditioned_state_dict(make):
    def train(p, opt, ks):
        for k in ks:
            p.grad = torch.tensor([math.sin(k), math.cos(3 * k)], dtype=F64)
            opt.step()

    p = torch.nn.Parameter(t(1.0, -1.0))
    opt = Preconditioned([p], torch.optim.SGD, make(), lr=0.1, momentum=0.5)
    train(p, opt, range(3))
    saved_p, saved = p.detach().clone(), copy.deepcopy(opt.state_dict())
    train(p, opt, range(3, 6))
    q = torch.nn.Parameter(saved_p)
    opt2 = Preconditioned([q], torch.optim.SGD, make(), lr=0.1, momentum=0.5)
    opt2.load_state_dict(saved)
    train(q, opt2, range(3, 6))
    assert torch.equal(p, q)

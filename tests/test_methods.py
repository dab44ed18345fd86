"""The method registry (egalitarian.methods) against hand-computed steps and hand-written expectations."""

from __future__ import annotations

import inspect

import pytest
import torch

from egalitarian.errors import ConfigError
from egalitarian.methods import OPTIMIZERS, build_optimizer, select_whitened
from egalitarian.models import MLP

EPS32 = torch.finfo(torch.float32).eps


def _mlp(seed: int = 0, hidden=(8, 8)) -> MLP:
    torch.manual_seed(seed)
    # in 6 -> 8 -> 8 -> out 3; names layers.0.weight/bias, layers.1.weight/bias, layers.2.weight/bias
    return MLP(6, list(hidden), 3, out_bias=True)


def _batch(n: int = 10, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _backward(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    for p in model.parameters():
        p.grad = None
    torch.nn.functional.cross_entropy(model(x), y).backward()


def _polar_reference(g: torch.Tensor) -> torch.Tensor:
    """U Vᵀ of g in float64, dropping directions with s ≤ max(m, n)·ε32·s_max (the documented cutoff)."""
    U, s, Vh = torch.linalg.svd(g.double(), full_matrices=False)
    keep = (s > max(g.shape) * EPS32 * s[0]).double()
    return (U * keep) @ Vh


# ------------------------------------------------------------------------------------------------ registry


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_method_builds_with_defaults_and_takes_two_finite_steps(name):
    model = _mlp()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(list(model.named_parameters()), name)
    assert isinstance(opt, torch.optim.Optimizer)
    for seed in (1, 2):
        x, y = _batch(seed=seed)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for n, p in model.named_parameters():
        assert torch.isfinite(p).all(), (name, n)
    # every method updates the first matrix (it has a nonzero gradient)
    assert not torch.equal(model.layers[0].weight.detach(), before["layers.0.weight"]), name


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_description_and_defaults_come_from_the_builder(name):
    method = OPTIMIZERS[name]
    assert method.name == name
    assert method.description.strip()
    assert "\n" not in method.description
    sig = inspect.signature(method.build)
    kw = {k: p.default for k, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert method.defaults == kw
    assert "named_params" not in method.defaults


def test_defaults_by_hand_for_sgd_and_adamw():
    assert OPTIMIZERS["sgd"].defaults == {
        "lr": 0.1,
        "momentum": 0.0,
        "nesterov": False,
        "weight_decay": 0.0,
        "decay": "all",
    }
    d = OPTIMIZERS["adamw"].defaults
    assert d["lr"] == 1e-3 and tuple(d["betas"]) == (0.9, 0.999) and d["weight_decay"] == 0.01
    assert OPTIMIZERS["egd"].defaults["whiten"] == "all"
    assert OPTIMIZERS["egd"].defaults["lr"] == 0.7


def test_registry_has_the_documented_methods():
    for name in ("sgd", "adam", "adamw", "egd", "egd_adam", "egd_adamw", "grokfast", "column_norm", "muon"):
        assert name in OPTIMIZERS


def test_unknown_method_and_unknown_hyperparameter():
    model = _mlp()
    with pytest.raises(ConfigError) as e:
        build_optimizer(list(model.named_parameters()), "egdd")
    assert "optimizer.name" in str(e.value) and "egdd" in str(e.value) and "egd" in str(e.value)
    with pytest.raises(ConfigError) as e:
        build_optimizer(list(model.named_parameters()), "sgd", learning_rate=0.1)
    assert "optimizer.learning_rate" in str(e.value) and "lr" in str(e.value)
    with pytest.raises(ConfigError) as e:  # a real key of another method is still unknown here
        build_optimizer(list(model.named_parameters()), "sgd", whiten="all")
    assert "optimizer.whiten" in str(e.value)


def test_bad_values_become_config_errors():
    model = _mlp()
    with pytest.raises(ConfigError, match="decay"):
        build_optimizer(list(model.named_parameters()), "adamw", decay="biases")
    with pytest.raises(ConfigError, match="lr"):
        build_optimizer(list(model.named_parameters()), "egd", lr=-1.0)


# ---------------------------------------------------------------------------------------------- selection


def test_select_whitened_all_none_and_patterns():
    named = list(_mlp().named_parameters())
    assert [n for n, _ in named] == [
        "layers.0.weight",
        "layers.0.bias",
        "layers.1.weight",
        "layers.1.bias",
        "layers.2.weight",
        "layers.2.bias",
    ]
    mats = {"layers.0.weight", "layers.1.weight", "layers.2.weight"}
    assert select_whitened(named, "all") == mats
    assert select_whitened(named, "none") == set()
    assert select_whitened(named, ["layers.0.weight"]) == {"layers.0.weight"}
    assert select_whitened(named, ["layers.*.weight"]) == mats
    assert select_whitened(named, ["layers.0.weight", "layers.2.*eight"]) == {"layers.0.weight", "layers.2.weight"}


def test_select_whitened_pattern_matching_nothing_lists_the_names():
    named = list(_mlp().named_parameters())
    with pytest.raises(ConfigError) as e:
        select_whitened(named, ["blocks.*.mlp.0.weight"])
    msg = str(e.value)
    assert "blocks.*.mlp.0.weight" in msg
    for n, _ in named:
        assert n in msg


def test_select_whitened_pattern_hitting_a_bias_is_an_error():
    named = list(_mlp().named_parameters())
    with pytest.raises(ConfigError) as e:
        select_whitened(named, ["layers.1.*"])
    assert "layers.1.bias" in str(e.value)
    with pytest.raises(ConfigError):
        select_whitened(named, "layers.0.weight")  # a bare string that is neither 'all' nor 'none'


def test_egd_whiten_pattern_errors_surface_through_the_registry():
    model = _mlp()
    with pytest.raises(ConfigError, match="layers.9.weight"):
        build_optimizer(list(model.named_parameters()), "egd", whiten=["layers.9.weight"])


@pytest.mark.parametrize("name", ["sgd", "adamw", "egd", "egd_adamw"])
def test_decay_matrices_puts_zero_weight_decay_on_vectors(name):
    model = _mlp()
    opt = build_optimizer(list(model.named_parameters()), name, weight_decay=0.1, decay="matrices")
    seen = 0
    for g in opt.param_groups:
        for p in g["params"]:
            seen += 1
            assert g["weight_decay"] == (0.1 if p.ndim >= 2 else 0.0), (p.shape, g["weight_decay"])
    assert seen == 6
    opt = build_optimizer(list(model.named_parameters()), name, weight_decay=0.1, decay="all")
    assert all(g["weight_decay"] == 0.1 for g in opt.param_groups)


# ------------------------------------------------------------------------------------------ hand-checked steps


def _egd_first_layer(lr: float = 0.3, **kw):
    model = _mlp(hidden=(8,))  # layers.0 (8×6) + bias, layers.1 (3×8) + bias
    opt = build_optimizer(list(model.named_parameters()), "egd", lr=lr, whiten=["layers.0.weight"], **kw)
    return model, opt


def _snapshot(model):
    return {n: (p.detach().clone(), p.grad.detach().clone()) for n, p in model.named_parameters()}


def _check_step(model, snap, lr, whitened: set[str]):
    for n, p in model.named_parameters():
        w0, g = snap[n]
        if n in whitened:
            expected = (w0.double() - lr * _polar_reference(g)).float()
            torch.testing.assert_close(p.detach(), expected, atol=2e-6, rtol=0)
        else:
            torch.testing.assert_close(p.detach(), w0 - lr * g, atol=1e-7, rtol=1e-6)


def test_egd_step_whitens_only_w1_by_hand():
    model, opt = _egd_first_layer(lr=0.3)
    x, y = _batch(n=3)  # W1's gradient has rank ≤ 3 < 6: the cutoff must drop the null directions
    _backward(model, x, y)
    g1 = model.layers[0].weight.grad.double()
    s = torch.linalg.svdvals(g1)
    assert s[3:].max() < 1e-5 * s[0]  # the test really exercises a rank-deficient gradient
    snap = _snapshot(model)
    opt.step()
    _check_step(model, snap, 0.3, {"layers.0.weight"})
    # W1 moved by exactly lr·(a partial isometry of rank 3): the step's singular values are lr (×3) and 0
    step = (snap["layers.0.weight"][0] - model.layers[0].weight.detach()).double() / 0.3
    sv = torch.linalg.svdvals(step)
    torch.testing.assert_close(sv[:3], torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)
    assert sv[3:].max() < 1e-5


def test_set_whitening_off_before_the_first_step_gives_plain_sgd():
    model, opt = _egd_first_layer(lr=0.3)
    assert opt.set_whitening(False) is True
    flags = sorted((any(p is model.layers[0].weight for p in g["params"]), g["whiten"]) for g in opt.param_groups)
    assert flags == [(False, False), (True, False)]
    _backward(model, *_batch(n=3))
    snap = _snapshot(model)
    opt.step()
    _check_step(model, snap, 0.3, whitened=set())


def test_set_whitening_on_again_restores_whitening():
    model, opt = _egd_first_layer(lr=0.3)
    opt.set_whitening(False)
    assert opt.set_whitening(True) is True
    # the group that was never chosen stays plain
    for g in opt.param_groups:
        chosen = any(p is model.layers[0].weight for p in g["params"])
        assert g["whiten"] is chosen
    _backward(model, *_batch(n=3))
    snap = _snapshot(model)
    opt.step()
    _check_step(model, snap, 0.3, {"layers.0.weight"})


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_set_whitening_toggles_between_steps(momentum):
    """Whitened, plain, whitened again: each step and the momentum buffer against the equations by hand
    (heavy ball after the whitening, ``b₁ = d₁``, ``b ← μb + d``, ``p ← p − ηb``; ``d`` = U Vᵀ(g) for W1 while
    whitening is on, ``g`` otherwise).  The buffer is one buffer across the switches: the plain step adds the raw
    gradient to the whitened history and the next whitened step continues from there."""
    lr = 0.3
    model, opt = _egd_first_layer(lr=lr, momentum=momentum)
    x, y = _batch(n=3)
    bufs: dict[str, torch.Tensor] = {}
    for whitening in (True, False, True):
        assert opt.set_whitening(whitening) is True
        _backward(model, x, y)
        snap = _snapshot(model)
        opt.step()
        for n, p in model.named_parameters():
            w0, g = snap[n]
            d = _polar_reference(g) if (whitening and n == "layers.0.weight") else g.double()
            bufs[n] = d if n not in bufs else momentum * bufs[n] + d
            torch.testing.assert_close(p.detach().double(), w0.double() - lr * bufs[n], atol=3e-6, rtol=0)
            if momentum:
                state = opt.state[p]["momentum"]["momentum_buffer"]
                torch.testing.assert_close(state.double(), bufs[n], atol=1e-5, rtol=0)
    if momentum:  # the history really carries: the last whitened step is not the whitened gradient alone
        g1 = snap["layers.0.weight"][1]
        assert (bufs["layers.0.weight"] - _polar_reference(g1)).abs().max() > 0.1


@pytest.mark.parametrize(
    "name", ["sgd", "adamw", "muon", "grokfast", "grokfast_ma", "egd_grokfast", "column_norm", "perp_adamw"]
)
def test_set_whitening_returns_false_for_sgd_and_leaves_groups_alone(name):
    """Methods that do not whiten alone: plain torch optimizers have no switch (a caller treats that as False);
    Preconditioned ones report False.  Either way the groups stay as they are and nothing counts as whitened."""
    model = _mlp()
    opt = build_optimizer(list(model.named_parameters()), name)
    before = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    switch = getattr(opt, "set_whitening", None)
    assert switch is None or switch(False) is False
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == before
    listed = getattr(opt, "whitened_params", None)
    assert listed is None or listed() == []
    assert (switch is None) == (name in ("sgd", "adamw", "muon"))


def test_set_whitening_off_on_egd_adamw_gives_adamw():
    """egd_adamw with whitening switched off steps exactly like torch.optim.AdamW on the raw gradient."""
    m1, m2 = _mlp(), _mlp()
    kw = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.05)
    opt1 = build_optimizer(list(m1.named_parameters()), "egd_adamw", whiten=["layers.0.weight"], **kw)
    opt2 = torch.optim.AdamW(m2.parameters(), **kw)
    assert opt1.set_whitening(False) is True
    for seed in (1, 2):
        x, y = _batch(seed=seed)
        for m, o in ((m1, opt1), (m2, opt2)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)


def test_set_whitening_is_a_no_op_for_grokfast():
    model = _mlp()
    opt = build_optimizer(list(model.named_parameters()), "grokfast")
    # grokfast does not whiten: the docstring promises False, and the filter must stay on
    assert opt.set_whitening(False) is False
    assert all(g["precondition"] for g in opt.param_groups)


def _one_param_step(method: str, p0: torch.Tensor, g: torch.Tensor, **hyper) -> torch.Tensor:
    p = torch.nn.Parameter(p0.clone())
    opt = build_optimizer([("w", p)], method, **hyper)
    p.grad = g.clone()
    opt.step()
    return p.detach()


def test_sgd_adam_adamw_first_step_by_hand():
    """Closed forms of one step from zero state (Adam's bias-corrected m̂ = g, v̂ = g² on step 1)."""
    p0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    g = torch.tensor([[0.2, -0.1], [0.0, 4.0]], dtype=torch.float64)
    lr, wd, eps = 0.1, 0.01, 1e-8
    torch.testing.assert_close(_one_param_step("sgd", p0, g, lr=lr, weight_decay=wd), p0 - lr * (g + wd * p0))
    adam_dir = g / (g.abs() + eps)
    torch.testing.assert_close(
        _one_param_step("adam", p0, g, lr=lr, weight_decay=wd, eps=eps),
        p0 - lr * (g + wd * p0) / ((g + wd * p0).abs() + eps),  # Adam's L2 is added to g before the moments
    )
    torch.testing.assert_close(
        _one_param_step("adamw", p0, g, lr=lr, weight_decay=wd, eps=eps), p0 * (1 - lr * wd) - lr * adam_dir
    )


# ------------------------------------------------------------------------------------- one name per knob


WHITENING_KNOBS = {"backend": "auto", "rtol": 0.0, "clamp_eps": 0.0, "rank": 64, "power_iters": 2, "seed": 0}
VARIANT_BACKEND = {"egd_svd": "svd", "egd_rsvd": "rsvd", "egd_newton_schulz": "newton-schulz"}


@pytest.mark.parametrize(
    "name",
    ["egd", "egd_adam", "egd_grokfast", "egd_adamw", "egd_svd", "egd_rsvd", "egd_newton_schulz", "egd_momentum"],
)
def test_every_egd_method_has_the_same_whitening_knobs_and_defaults(name):
    expected = {**WHITENING_KNOBS, "backend": VARIANT_BACKEND.get(name, "auto")}
    defaults = OPTIMIZERS[name].defaults
    assert {k: defaults[k] for k in expected} == expected
    assert "eps" not in defaults or name in ("egd_adam", "egd_adamw", "egd_grokfast")  # there eps is Adam's


def _spectrum_2x3(s1: float, s2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """G = U diag(s1, s2) Vᵀ with U = I and V = the first two axes of R³ rotated by 45° in the (0, 2) plane."""
    c = 2**-0.5
    V = torch.tensor([[c, 0.0], [0.0, 1.0], [c, 0.0]], dtype=torch.float64)
    U = torch.eye(2, dtype=torch.float64)
    return (U * torch.tensor([s1, s2], dtype=torch.float64)) @ V.T, U, V


def test_egd_clamp_eps_is_the_papers_clamp_by_hand():
    # s = (1, 1e-3), clamp 1e-2: weights s / max(s, 1e-2) = (1, 0.1), so the step is U diag(1, 0.1) Vᵀ.
    G, U, V = _spectrum_2x3(1.0, 1e-3)
    p0 = torch.zeros(2, 3, dtype=torch.float64)
    out = _one_param_step("egd", p0, G, lr=1.0, backend="svd", clamp_eps=1e-2)
    torch.testing.assert_close(out, -(U * torch.tensor([1.0, 0.1], dtype=torch.float64)) @ V.T, atol=1e-12, rtol=0)
    with pytest.raises(ConfigError, match="optimizer.eps"):  # the old name is gone from the egd method
        build_optimizer([("w", torch.nn.Parameter(p0))], "egd", eps=1e-2)


@pytest.mark.parametrize("name", ["egd_newton_schulz", "egd_adam", "egd_grokfast"])
def test_a_whitening_knob_the_backend_does_not_take_is_a_config_error(name):
    p = torch.nn.Parameter(torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="^optimizer.clamp_eps = 0.01: not an option of backend 'newton-schulz'; its "
                       "options: ns_coefficients, ns_steps, ns_polish, dtype, nonfinite$"):
        build_optimizer([("w", p)], name, backend="newton-schulz", clamp_eps=1e-2)
    build_optimizer([("w", p)], name, backend="newton-schulz", rank=1, power_iters=3)  # rsvd's knobs: unused here


def test_egd_grokfast_passes_rtol_power_iters_and_seed_to_the_whitening():
    # lamb = 0 makes Grokfast the identity, so one SGD step (lr 1) is −(whitened gradient).
    # rtol = 0.5 drops the direction with s = 0.1 < 0.5·s_max: the step is −u1 v1ᵀ.
    G, U, V = _spectrum_2x3(1.0, 0.1)
    p0 = torch.zeros(2, 3, dtype=torch.float64)
    kw = dict(base="sgd", lr=1.0, weight_decay=0.0, lamb=0.0, backend="svd")
    torch.testing.assert_close(_one_param_step("egd_grokfast", p0, G, rtol=0.5, **kw), -U[:, :1] @ V[:, :1].T)
    torch.testing.assert_close(_one_param_step("egd_grokfast", p0, G, **kw), -U @ V.T)  # default: both kept
    # rank-1 rsvd of a matrix with a clear gap: with power iterations the sketch finds u1 v1ᵀ
    kw["backend"] = "rsvd"
    out = _one_param_step("egd_grokfast", p0, G, rank=1, power_iters=4, **kw)
    torch.testing.assert_close(out, -U[:, :1] @ V[:, :1].T, atol=1e-6, rtol=0)
    # without power iterations the result depends on the sketch, i.e. on the seed
    Gf, _, _ = _spectrum_2x3(1.0, 0.9)
    a, b, c = (_one_param_step("egd_grokfast", p0, Gf, rank=1, power_iters=0, seed=s, **kw) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_library_errors_get_the_optimizer_section_in_front():
    """Library messages say ``field = value: allowed``; build_optimizer puts ``optimizer.`` in front."""
    named = list(_mlp().named_parameters())
    with pytest.raises(ConfigError) as e:
        build_optimizer(named, "egd", lr=-1.0)
    assert str(e.value) == "optimizer.lr = -1.0: must be a number > 0"
    with pytest.raises(ConfigError) as e:
        build_optimizer(named, "egd", backend="qr")
    assert str(e.value) == ("optimizer.backend = 'qr': must be one of auto, svd, gram-eigh, newton-schulz, rsvd, "
                            "polar-express")
    with pytest.raises(ConfigError) as e:
        build_optimizer(named, "grokfast", alpha=1.5)
    assert str(e.value) == "optimizer.alpha = 1.5: must be in [0, 1)"
    with pytest.raises(ConfigError) as e:
        build_optimizer(named, "muon", momentum=1.0)
    assert str(e.value) == "optimizer.momentum = 1.0: must be in [0, 1)"
    with pytest.raises(ConfigError) as e:
        build_optimizer(named, "muon", ns_dtype="float16")
    assert str(e.value) == "optimizer.ns_dtype = 'float16': must be one of bfloat16, float32"


def test_muon_ns_dtype_picks_the_newton_schulz_engine():
    named = list(_mlp().named_parameters())
    assert OPTIMIZERS["muon"].defaults["ns_dtype"] == "bfloat16"  # the default is torch's bfloat16
    default = build_optimizer(named, "muon")
    assert default.muon_fp32 is None and isinstance(default.muon, torch.optim.Muon)
    fp32 = build_optimizer(named, "muon", ns_dtype="float32")
    assert fp32.muon is None and fp32.muon_fp32 is not None
    assert [g["ns_dtype"] for g in fp32.param_groups if g["use_muon"]] == ["float32"]


def test_whiten_pattern_errors_name_the_key_and_its_value():
    named = list(_mlp().named_parameters())
    with pytest.raises(ConfigError) as e:
        build_optimizer(named, "muon", select=["layers.9.*"])
    assert str(e.value).startswith("optimizer.select = ['layers.9.*']: pattern 'layers.9.*' matches no parameter")
    with pytest.raises(ConfigError) as e:
        build_optimizer(named, "egd", whiten=["layers.1.*"])
    assert str(e.value).startswith("optimizer.whiten = ['layers.1.*']: pattern 'layers.1.*' matches parameters")


def test_egd_adam_declares_that_it_whitens_and_egd_grokfast_does_not():
    model = _mlp()
    named = list(model.named_parameters())
    opt = build_optimizer(named, "egd_adam", whiten=["layers.0.weight", "layers.2.weight"])
    assert opt.whitens is True
    assert {id(p) for p in opt.whitened_params()} == {id(model.layers[0].weight), id(model.layers[2].weight)}
    opt = build_optimizer(named, "egd_grokfast")
    assert opt.whitens is False and opt.whitened_params() == []

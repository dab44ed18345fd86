"""torch.optim's ``maximize`` and tensor ``lr`` on EGD, Preconditioned and EGDWithAuxAdamW (issue #30).

References: ``maximize`` on ``L`` against the same optimizer minimizing ``−L`` (autograd's gradient of ``−L`` is
``−∇L`` exactly, so bit for bit), against the update written out (``U Vᵀ`` by an fp64 SVD) and against
``torch.optim.SGD``/``AdamW`` with ``maximize``; a tensor ``lr`` against ``lr=float(lr)``; the compiled step's
recompilations counted by ``torch._dynamo.testing.CompileCounter``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from test_optim_conventions import _uvt

from egalitarian import EGD, Preconditioned
from egalitarian import transforms as T
from egalitarian.routing import EGDWithAuxAdamW, egd_for

F64 = torch.float64


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def _loss(model, batch) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


def _train(model, opt, batches, sign: float = 1.0, step=None) -> None:
    """Minimize ``sign · L`` (``opt.step`` or the compiled ``step``), one step per batch."""
    for batch in batches:
        opt.zero_grad()
        (sign * _loss(model, batch)).backward()
        (step or opt.step)()


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _bitwise(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


EGD_KWARGS = [{}, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
              {"momentum": 0.9, "momentum_position": "before", "weight_decay": 0.1, "weight_decay_mode": "l2",
               "scale": "rms"}]


def _aux(model, **kw) -> EGDWithAuxAdamW:
    return egd_for(model, head=None, **{"lr": 0.05, "aux_lr": 0.01, "aux_weight_decay": 0.1, **kw})


def _pre(model, **kw) -> Preconditioned:
    return Preconditioned(model.parameters(), torch.optim.AdamW, **{"lr": 0.01, "weight_decay": 0.1, **kw})


MAKERS = {
    **{f"egd{i}": (lambda m, kw=kw, **k: EGD(m.parameters(), **{"lr": 0.05, **kw, **k})) for i, kw in
       enumerate(EGD_KWARGS)},
    "egd-aux-adamw": _aux,
    "preconditioned-adamw": _pre,
}


# ------------------------------------------------------------------------------------------------- maximize


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_maximize_on_L_takes_the_steps_of_minimizing_minus_L_bitwise(make):
    """torch.optim's convention: the gradient is negated before everything else (decay, momentum, whitening,
    Adam's moments), so ascending ``L`` is descending ``−L``; and it does ascend (it differs from descending ``L``)."""
    batches = _batches(3)
    runs = {}
    for name, maximize, sign in (("up", True, 1.0), ("down -L", False, -1.0), ("down L", False, 1.0)):
        model = _model()
        opt = make(model, maximize=maximize)
        assert all(g["maximize"] is maximize for g in opt.param_groups)  # every group, AdamW's too
        _train(model, opt, batches, sign)
        runs[name] = _params(model)
    assert _bitwise(runs["up"], runs["down -L"])
    assert not any(torch.equal(a, b) for a, b in zip(runs["up"], runs["down L"], strict=True))


@pytest.mark.parametrize("mode", ["decoupled", "l2"])
def test_egd_maximize_by_hand(mode):
    """Two steps written out: the l2 term joins ``−g`` (``W(−g + λW)``), the decoupled decay stays a decay."""
    lr, lam, mu = 0.1, 0.2, 0.5
    gen = torch.Generator().manual_seed(3)
    W0 = torch.randn(4, 6, dtype=F64, generator=gen)
    g1, g2 = (torch.randn(4, 6, dtype=F64, generator=gen) for _ in range(2))
    W = torch.nn.Parameter(W0.clone())
    opt = EGD([W], lr=lr, momentum=mu, weight_decay=lam, weight_decay_mode=mode, backend="svd", maximize=True)
    if mode == "l2":  # d = UVᵀ(−g + λW); b ← μb + d
        d1 = _uvt(-g1 + lam * W0)
        W1 = W0 - lr * d1
        W2 = W1 - lr * (mu * d1 + _uvt(-g2 + lam * W1))
    else:  # W ← (1 − ηλ)W − η b, with d = UVᵀ(−g) = −UVᵀ(g)
        d1 = -_uvt(g1)
        W1 = (1 - lr * lam) * W0 - lr * d1
        W2 = (1 - lr * lam) * W1 - lr * (mu * d1 - _uvt(g2))
    for g, expected in ((g1, W1), (g2, W2)):
        W.grad = g.clone()
        opt.step()
        torch.testing.assert_close(W.detach(), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("nesterov", [False, True])
def test_egd_without_whitening_is_torchs_sgd_with_maximize_and_a_tensor_lr(nesterov):
    """``whiten=False``, ``weight_decay_mode="l2"``: EGD is SGD, maximize and tensor lr included."""
    batches = _batches(4)
    out = []
    for cls, kw in ((EGD, {"whiten": False, "weight_decay_mode": "l2"}), (torch.optim.SGD, {})):
        model = _model()
        opt = cls(model.parameters(), lr=torch.tensor(0.05), momentum=0.9, nesterov=nesterov, weight_decay=0.1,
                  maximize=True, **kw)
        _train(model, opt, batches)
        out.append(_params(model))
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)  # torch fuses μ·b + g its own way: to rounding


@pytest.mark.parametrize("transform", ["identity", "l2", "whiten"])
def test_preconditioned_maximize_negates_before_the_transform(transform):
    """The step ascends along ``T(−g)``: torch's AdamW(maximize) fed ``T(g)`` negates after the transform, which
    is the same only for an odd ``T``; the reference is torch's AdamW (no maximize) fed ``T(−g)`` by hand."""
    t = {"identity": T.identity(), "l2": T.add_decayed_weights(0.3), "whiten": T.whiten("svd")}[transform]
    batches = _batches(3)
    model, ref = _model(), _model()
    opt = Preconditioned(model.parameters(), torch.optim.AdamW, t, lr=0.01, maximize=True)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=0.01)
    for batch in batches:
        for m in (model, ref):
            m.zero_grad()
            _loss(m, batch).backward()
        opt.step()
        with torch.no_grad():
            for p in ref.parameters():
                p.grad = t.update(-p.grad, t.init(p), p)[0]
        ref_opt.step()
    assert _bitwise(_params(model), _params(ref))
    if transform == "identity":  # and then it is torch's own AdamW(maximize=True), bit for bit
        model2 = _model()
        _train(model2, torch.optim.AdamW(model2.parameters(), lr=0.01, maximize=True), batches)
        assert _bitwise(_params(model), _params(model2))


# ------------------------------------------------------------------------------------------------ tensor lr


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_a_tensor_lr_steps_as_its_float(make):
    """Eager steps with ``lr=torch.tensor(v)`` equal those of ``lr=float(v)``: bit for bit where the lr only scales
    the step (``add_(d, alpha=-lr)`` reads it as that float), to rounding where ``1 − ηλ`` is then computed in
    float32 (decoupled decay: EGD's, AdamW's)."""
    batches = _batches(3)
    lr, aux_lr = torch.tensor(0.05), torch.tensor(0.01)
    out = []
    for kw in ({"lr": lr, **({"aux_lr": aux_lr} if make is _aux else {})},
               {"lr": float(lr), **({"aux_lr": float(aux_lr)} if make is _aux else {})}):
        model = _model()
        opt = make(model, **kw)
        _train(model, opt, batches)
        out.append(_params(model))
        assert all(isinstance(g["lr"], type(kw["lr"])) for g in opt.param_groups)
    decay = any(g["weight_decay"] and g.get("weight_decay_mode", "decoupled") == "decoupled"
                for g in opt.param_groups)
    if decay:
        for a, b in zip(*out, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    else:
        assert _bitwise(*out)


@pytest.mark.parametrize(
    "value,shown",
    [(torch.tensor(0.0), "tensor(0.)"), (torch.tensor(-0.1), "tensor(-0.1000)"),
     (torch.tensor(float("inf")), "tensor(inf)"), (torch.tensor(float("nan")), "tensor(nan)"),
     (torch.tensor([0.1]), "tensor([0.1000])"), (torch.tensor(1), "tensor(1)"), (float("inf"), "inf"), (True, "True")],
)
def test_a_bad_lr_is_one_line(value, shown):
    allowed = "must be a number > 0 (a float, or a 0-d floating tensor)"
    W = torch.nn.Parameter(torch.zeros(3, 3))
    for field, make in (("lr", lambda: EGD([W], lr=value)), ("lr", lambda: EGD([{"params": [W], "lr": value}], lr=1.0)),
                        ("lr", lambda: EGDWithAuxAdamW([{"params": [W], "use_egd": True}], lr=value)),
                        ("aux_lr", lambda: EGDWithAuxAdamW([{"params": [W], "use_egd": False}], lr=0.1, aux_lr=value))):
        with pytest.raises(ValueError) as e:
            make()
        assert str(e.value) == f"{field} = {shown}: {allowed}"
    with pytest.raises(ValueError) as e:
        EGD([W], lr=0.1, maximize="yes")
    assert str(e.value) == "maximize = 'yes': must be True or False"


def test_a_scheduler_fills_the_tensor_lr_in_place_and_an_lr_of_zero_reloads():
    """LRScheduler writes a tensor lr with ``fill_`` (the same tensor, which a compiled step reads); a warm-up that
    starts at 0 is a legitimate lr: an EGDWithAuxAdamW whose groups hold 0 still loads a state dict (its engines are
    rebuilt over groups it validated when they were added)."""
    for lr in (torch.tensor(0.1), 0.1):
        model = _model()
        opt = _aux(model, lr=lr)
        tensor = opt.param_groups[0]["lr"]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / 4)
        assert [float(g["lr"]) for g in opt.param_groups] == [0.0, 0.0]
        saved = copy.deepcopy(opt.state_dict())
        opt.load_state_dict(saved)
        _train(model, opt, _batches(1))
        sched.step()
        if isinstance(lr, torch.Tensor):
            assert opt.param_groups[0]["lr"] is not tensor  # the load copied the saved tensor (torch deep-copies)
            assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)
        assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.1 / 4)
    model = _model()
    lr = torch.tensor(0.2)
    opt = EGD(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    sched.step()
    assert all(g["lr"] is lr for g in opt.param_groups)  # torch's way: the default shared by the groups, filled
    assert float(lr) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------------ state_dict


@pytest.mark.parametrize("make", [MAKERS["egd1"], _aux, _pre], ids=["egd", "egd-aux-adamw", "preconditioned-adamw"])
def test_state_dict_round_trip_with_a_tensor_lr_and_maximize(make):
    batches = _batches(4)
    kw = {"lr": torch.tensor(0.05), "maximize": True}
    model = _model()
    opt = make(model, **kw)
    _train(model, opt, batches[:2])
    saved_model, saved = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    _train(model, opt, batches[2:])
    model2 = _model(5)
    model2.load_state_dict(saved_model)
    opt2 = make(model2, lr=0.3)  # float lr, no maximize: the checkpoint's win
    opt2.load_state_dict(saved)
    assert all(g["maximize"] is True for g in opt2.param_groups)
    assert isinstance(opt2.param_groups[0]["lr"], torch.Tensor)
    _train(model2, opt2, batches[2:])
    assert _bitwise(_params(model), _params(model2))


@pytest.mark.parametrize("make", [MAKERS["egd1"], _aux], ids=["egd", "egd-aux-adamw"])
def test_a_checkpoint_saved_before_maximize_loads_as_minimizing(make):
    """``maximize`` is the one key added since checkpoints exist that gets a value on load: ``False``, what every
    run saved without it did; any other missing key is still refused (test_optim_conventions)."""
    model = _model()
    opt = make(model)
    _train(model, opt, _batches(2))
    old = copy.deepcopy(opt.state_dict())
    for g in old["param_groups"]:
        if g.get("use_egd", True):  # AdamW's groups always had torch's "maximize"
            del g["maximize"]
    kept = copy.deepcopy(old)
    opt2 = make(_model(), maximize=True)
    opt2.load_state_dict(old)
    assert all(g["maximize"] is False for g in opt2.param_groups)
    assert old.keys() == kept.keys() and old["param_groups"] == kept["param_groups"]  # the caller's dict untouched


# --------------------------------------------------------------------------------------------- torch.compile


def _compiled_frames(make, lr, fullgraph: bool) -> tuple[int, int, list[torch.Tensor]]:
    """Frames compiled after 3 warm-up steps at one lr (the state fills: EGD compiles twice, as torch's optimizers),
    after 3 more steps at 3 other lrs (set as a scheduler does: ``fill_`` on a tensor, assignment of a float), and
    the parameters."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = _model()
    aux = {"aux_lr": lr.clone() if isinstance(lr, torch.Tensor) else lr} if make is _aux else {}
    opt = make(model, lr=lr, nonfinite="propagate", **aux)
    counter = CompileCounter()
    step = torch.compile(opt.step, backend=counter, fullgraph=fullgraph)
    batches = _batches(6)
    _train(model, opt, batches[:3], step=step)
    warm = counter.frame_count
    for value, batch in zip((0.04, 0.02, 0.01), batches[3:], strict=True):
        for g in opt.param_groups:
            if isinstance(g["lr"], torch.Tensor):
                g["lr"].fill_(value)
            else:
                g["lr"] = value
        _train(model, opt, [batch], step=step)
    return warm, counter.frame_count, _params(model)


@pytest.mark.parametrize("make,fullgraph", [(MAKERS["egd1"], True), (_aux, False), (_pre, False)],
                         ids=["egd", "egd-aux-adamw", "preconditioned-adamw"])
def test_a_compiled_step_follows_a_tensor_lr_without_recompiling(make, fullgraph):
    """A tensor lr is an input of the graph: 3 lrs, no new frame.  A float lr is a constant of the graph: its first
    change recompiles (torch 2.13: once, after which dynamo's automatic dynamic makes it an input).  EGD is one
    graph (``fullgraph``); EGDWithAuxAdamW and Preconditioned are not (torch's AdamW breaks the graph on purpose)."""
    warm, after, params = _compiled_frames(make, torch.tensor(0.05), fullgraph)
    assert after == warm, (warm, after)
    warm_f, after_f, params_f = _compiled_frames(make, 0.05, fullgraph)
    assert after_f > warm_f, (warm_f, after_f)
    for a, b in zip(params, params_f, strict=True):  # the same lrs, tensor or float: the same steps to rounding
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)

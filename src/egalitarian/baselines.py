r"""The baselines EGD is compared with, each next to its published equation.

Gradient transforms (:mod:`egalitarian.transforms` style, to put in front of any optimizer with
:class:`egalitarian.optim.Preconditioned`):

* :func:`grokfast_ema`, :func:`grokfast_ma` — Grokfast (Lee et al. 2024), the slow-gradient amplifiers.
* :func:`column_norm` — the EGD paper's column normalisation.
* :func:`perp_to_weights` — ⊥Grad (Prieto et al. 2025).

And one optimizer: :class:`MuonWithAdamW` — Muon for the hidden matrices, AdamW for everything else (Muon's
Newton–Schulz in torch's bfloat16, or in float32 with ``ns_dtype="float32"``: :class:`MuonFloat32`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .errors import check
from .linalg import NS_MUON
from .optim import Engine, WithAuxAdamW, evaluate_closure
from .transforms import GradientTransform, State, as_matrix, no_state

__all__ = ["MUON_TORCH", "MuonFloat32", "MuonWithAdamW", "column_norm", "grokfast_ema", "grokfast_ma",
           "muon_adjusted_lr", "newton_schulz5", "perp_to_weights", "torch_muon"]


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
    check(0 <= alpha < 1, "alpha", alpha, "must be in [0, 1)")
    check(lamb >= 0, "lamb", lamb, "must be >= 0")
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
    check(isinstance(window_size, int) and not isinstance(window_size, bool) and window_size >= 1,
          "window_size", window_size, "must be an int >= 1")
    check(lamb >= 0, "lamb", lamb, "must be >= 0")
    check(filter_type in _MA_FILTERS, "filter_type", filter_type, f"must be one of {', '.join(_MA_FILTERS)}")
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
    conv kernels flattened like :func:`~egalitarian.transforms.as_matrix`), each hidden unit's incoming-weight
    gradient — a **row** of ``G`` — is divided by its Euclidean norm, clamped below at ``min_norm``:

    .. math::
        \tilde G_{j,:} = \frac{G_{j,:}}{\max(\lVert G_{j,:}\rVert_2,\ \texttt{min\_norm})}

    The official JAX code stores W1 as ``(in, hidden)`` and normalises over ``axis=0`` ("columns"); in
    PyTorch's ``(out, in)`` layout that is the row normalisation above.  Parameters with fewer than 2
    dimensions pass through unchanged (the paper applies the rule to the first layer's matrix only and gives
    the bias and the other layers plain SGD: use a param group without the transform for those).
    """
    check(min_norm > 0, "min_norm", min_norm, "must be > 0")

    def update(grad: Tensor, state: State, param: Tensor) -> tuple[Tensor, State]:
        if grad.ndim < 2:
            return grad, state
        mat = as_matrix(grad)
        scale_ = torch.linalg.vector_norm(mat, dim=1, keepdim=True).clamp_min(min_norm)
        return (mat / scale_).reshape(grad.shape), state

    return GradientTransform(no_state, update)


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
    check(eps >= 0, "eps", eps, "must be >= 0")

    def update(grad: Tensor, state: State, param: Tensor) -> tuple[Tensor, State]:
        w = param.detach().reshape(-1)
        g = grad.reshape(-1)
        proj = torch.dot(w, g) / (torch.dot(w, w) + eps)
        g_orth = g - proj * w
        out = g_orth * (g.norm(2) / (g_orth.norm(2) + eps))
        return out.reshape(grad.shape), state

    return GradientTransform(no_state, update)


_ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
NS_DTYPES = ("bfloat16", "float32")
"""Muon's Newton–Schulz dtype: torch.optim.Muon's bfloat16, or float32 (:class:`MuonFloat32`)."""


def newton_schulz5(G: Tensor, coefficients: tuple[float, float, float] = NS_MUON, steps: int = 5,
                   eps: float = 1e-7, dtype: torch.dtype = torch.float32) -> Tensor:
    """torch.optim.Muon's Newton–Schulz (torch 2.13 ``_zeropower_via_newtonschulz``) in ``dtype``: ``G`` cast to
    ``dtype``, transposed if rows > cols, divided by ``max(‖G‖_F, eps)``, then ``steps`` times
    ``A = XXᵀ, X ← aX + (bA + cA²)X`` with the same fused ``addmm`` calls; torch's own always computes in bfloat16."""
    a, b, c = coefficients
    X = G.to(dtype)
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T
    X = X / X.norm().clamp(min=eps)  # not in place: G may be the momentum buffer itself
    for _ in range(steps):
        A = X @ X.T
        B = torch.addmm(A, A, A, beta=b, alpha=c)
        X = torch.addmm(X, B, X, beta=a)
    return X.T if tall else X


def muon_adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's step size for a (rows × cols) matrix: √max(1, rows/cols)·lr (``None``/``"original"``),
    0.2·√max(rows, cols)·lr (``"match_rms_adamw"``)."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1, rows / cols))


MUON_TORCH = "2.9"
"""The first torch with ``torch.optim.Muon``, which :class:`MuonWithAdamW` and :class:`MuonFloat32` build on."""


def torch_muon(user: str = "Muon") -> type[torch.optim.Optimizer]:
    """``torch.optim.Muon``; on an older torch an ImportError naming the version needed (one line, ``user`` being
    what asked for it), so that the package imports on any supported torch and fails only where Muon is used."""
    muon = getattr(torch.optim, "Muon", None)
    if muon is None:
        raise ImportError(f"{user} needs torch >= {MUON_TORCH} (torch.optim.Muon); this is torch {torch.__version__}")
    return muon


# Before torch 2.9 a stand-in base, so that the module imports; MuonFloat32() then raises torch_muon's ImportError.
_MuonBase: type[torch.optim.Optimizer] = getattr(torch.optim, "Muon", torch.optim.Optimizer)


class MuonFloat32(_MuonBase):
    """``torch.optim.Muon`` with its Newton–Schulz in float32 (:func:`newton_schulz5`); the same hyperparameters,
    momentum buffer (``state["momentum_buffer"]``, created by torch's ``_init_group``), decoupled decay and step
    size.  torch's Newton–Schulz casts to bfloat16; which of the two is faster depends on the CPU (bfloat16
    matmuls are fast only with bf16 units, e.g. AVX512-BF16 or AMX), and float32 is the more accurate.
    Needs torch >= 2.9 (:func:`torch_muon`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        torch_muon("MuonFloat32")
        super().__init__(*args, **kwargs)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            bufs: list[Tensor] = []
            self._init_group(group, params, grads, bufs)
            lr, mu = float(group["lr"]), group["momentum"]
            for p, g, buf in zip(params, grads, bufs, strict=True):
                buf.lerp_(g, 1 - mu)
                update = g.lerp(buf, mu) if group["nesterov"] else buf
                update = newton_schulz5(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-muon_adjusted_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


class MuonWithAdamW(WithAuxAdamW):
    r"""Muon for the hidden 2-D matrices, AdamW for every other parameter: one optimizer, as KellerJordan/Muon's
    ``MuonWithAuxAdam``.

    ``MuonWithAdamW(muon_params, adamw_params, lr=0.02, ...)`` has one list of param groups, each tagged
    ``use_muon=True/False`` and carrying its own hyperparameters under the names ``torch.optim.Muon`` and
    ``torch.optim.AdamW`` read (a Muon group's ``lr`` is ``lr``, an AdamW group's ``lr`` is ``adamw_lr``), so
    LR schedulers reach both parts; ``step()`` applies ``torch.optim.Muon``'s update to the ``use_muon`` groups
    and ``torch.optim.AdamW``'s to the others.  Those torch optimizers (``.muon``, ``.adamw``, and
    ``.muon_fp32`` for groups with ``ns_dtype="float32"``; ``None`` while no group uses one) only do the
    arithmetic: they work on this optimizer's group dicts and ``state`` themselves, so there is one copy of
    each (the shared machinery: :class:`egalitarian.optim.WithAuxAdamW`).  Route hidden weight matrices to
    ``muon_params``; biases, LayerNorm gains, embeddings and the output head go to ``adamw_params`` (the Muon
    authors' advice: embeddings and the head are not "hidden" matrices even though they are 2-D).  Either set
    may be empty, not both; each may also be a list of param-group dicts.

    What ``torch.optim.Muon`` (torch 2.13) does per matrix ``W`` (out × in) with gradient ``g``,
    η = ``lr``, μ = ``momentum``, λ = ``weight_decay``:

    .. math::
        B &\leftarrow \mathrm{lerp}(B, g, 1-\mu) = \mu B + (1-\mu)\, g \qquad (B_0 = 0,\ \text{so } B_1 = (1-\mu) g) \\
        U &\leftarrow \mathrm{lerp}(g, B, \mu) = (1-\mu)\, g + \mu B \ \text{(Nesterov)}, \quad U \leftarrow B
              \ \text{otherwise} \\
        O &\leftarrow \mathrm{NS}_5(U) \\
        W &\leftarrow (1 - \eta\lambda)\, W - \eta'\, O

    * The momentum is an EMA (``lerp``), not torch's documented ``B ← μB + g``; the two differ by the factor
      (1−μ), which the Frobenius normalisation inside NS removes (KellerJordan/Muon#52).
    * ``NS₅``: the input is cast to **bfloat16**, transposed if rows > cols, divided by ``max(‖U‖_F, 1e-7)``,
      then 5 quintic Newton–Schulz steps ``X ← aX + (bA + cA²)X`` with ``A = XXᵀ`` and Muon's coefficients
      (a, b, c) = (3.4445, −4.775, 2.0315).  This is *not* exactly ``U Vᵀ``: 1 is not a fixed point of the
      quintic, so the output's singular values scatter around 1 and directions small against ‖U‖_F stay well
      below 1 (measured: experiments/02-whitening-backends).  EGD's exact whitening gives all ones.
      The update ``O`` is bfloat16, added to the float32 weight.  ``ns_dtype="float32"`` runs the same NS₅ in
      float32 instead (:class:`MuonFloat32`, :func:`newton_schulz5`; torch hard-codes bfloat16, whose matmuls
      are slow on CPUs without bf16 units).
    * ``η'``: ``adjust_lr_fn=None`` or ``"original"`` (Keller Jordan's) η' = η·√max(1, out/in);
      ``"match_rms_adamw"`` (Moonshot's) η' = 0.2·η·√max(out, in).  The decoupled decay uses the
      *unadjusted* η, and its default is λ = 0.1 (``weight_decay`` here is Muon's; AdamW's is
      ``adamw_weight_decay``, default 0).
    * Muon takes 2-D parameters only: a non-2-D entry in ``muon_params`` raises ``ValueError`` naming
      ``muon_params``.  Conv kernels must go to AdamW (or be flattened by the model).

    The AdamW groups step exactly as ``torch.optim.AdamW(adamw_params, lr=adamw_lr, betas=adamw_betas,
    eps=adamw_eps, weight_decay=adamw_weight_decay)``.  Defaults follow KellerJordan/Muon's recommendations
    (Muon lr 0.02, momentum 0.95, Nesterov, 5 NS steps; Adam lr 3e-4, betas (0.9, 0.95)).

    ``state_dict()`` is a plain torch optimizer state dict; ``load_state_dict`` copies what it is given.  A step
    does not check gradients for NaN or inf (torch's convention: they flow into the step); a sparse gradient is a
    RuntimeError before anything changes.

    Needs torch >= 2.9 (``torch.optim.Muon``): on an older torch the constructor raises an ImportError saying so,
    while the rest of the package works.
    """

    tag, engine = "use_muon", "Muon"

    def __init__(
        self,
        muon_params: Iterable[Tensor] | Iterable[dict[str, Any]],
        adamw_params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.1,
        adjust_lr_fn: str | None = None,
        adamw_lr: float = 3e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
        *,
        ns_coefficients: tuple[float, float, float] = NS_MUON,
        ns_eps: float = 1e-7,
        ns_dtype: str = "bfloat16",
    ) -> None:
        torch_muon("MuonWithAdamW")
        check(isinstance(lr, (int, float)) and lr > 0, "lr", lr, "must be a number > 0")
        check(0 <= momentum < 1, "momentum", momentum, "must be in [0, 1)")
        check(isinstance(ns_steps, int) and 1 <= ns_steps < 100, "ns_steps", ns_steps, "must be an int in [1, 100)")
        check(weight_decay >= 0, "weight_decay", weight_decay, "must be >= 0")
        check(adjust_lr_fn in _ADJUST_LR_FNS, "adjust_lr_fn", adjust_lr_fn,
              "must be None, 'original' or 'match_rms_adamw'")
        check(ns_dtype in NS_DTYPES, "ns_dtype", ns_dtype, f"must be one of {', '.join(NS_DTYPES)}")
        muon_groups, adamw_groups = _as_groups(muon_params), _as_groups(adamw_params)
        muon_ps = [p for g in muon_groups for p in g["params"]]
        for i, p in enumerate(muon_ps):
            check(p.ndim == 2, "muon_params", f"[{i}] of shape {tuple(p.shape)}", "torch.optim.Muon takes 2-D "
                  "matrices only; put biases, gains and other non-2-D parameters in adamw_params")
        check(bool(muon_groups or adamw_groups), "adamw_params", [], "must not be empty when muon_params is empty "
              "too (both empty: nothing to optimize)")
        adamw_ids = {id(p) for g in adamw_groups for p in g["params"]}
        both = [i for i, p in enumerate(muon_ps) if id(p) in adamw_ids]
        check(not both, "muon_params", f"entries {both}", "also appear in adamw_params (each parameter goes to one)")

        muon_defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, weight_decay=weight_decay,
                             adjust_lr_fn=adjust_lr_fn, ns_coefficients=tuple(ns_coefficients), eps=ns_eps,
                             ns_dtype=ns_dtype)
        adamw_defaults = dict(lr=adamw_lr, betas=tuple(adamw_betas), eps=adamw_eps, weight_decay=adamw_weight_decay)
        groups = [{**g, "use_muon": True} for g in muon_groups] + [{**g, "use_muon": False} for g in adamw_groups]
        self.muon: torch.optim.Muon | None = None
        self.muon_fp32: MuonFloat32 | None = None
        self.adamw: torch.optim.AdamW | None = None
        super().__init__(groups, muon_defaults, adamw_defaults, "adamw_")

    def matrix_engines(self) -> list[Engine]:
        """``torch.optim.Muon`` for the groups with ``ns_dtype="bfloat16"``, :class:`MuonFloat32` for ``"float32"``."""
        return [("muon", torch_muon(), lambda g: g["ns_dtype"] == "bfloat16"),
                ("muon_fp32", MuonFloat32, lambda g: g["ns_dtype"] == "float32")]

    def check_group(self, group: dict[str, Any]) -> None:
        check(group["ns_dtype"] in NS_DTYPES, "ns_dtype", group["ns_dtype"], f"must be one of {', '.join(NS_DTYPES)}")
        for i, p in enumerate(group["params"]):
            check(p.ndim == 2, "params", f"[{i}] of shape {tuple(p.shape)}", "a use_muon=True group takes 2-D "
                  "matrices only")


def _as_groups(params: Iterable[Tensor] | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``params`` (tensors, or param-group dicts) as param-group dicts with list-valued ``params``."""
    check(not isinstance(params, Tensor), "params", "a single tensor", "must be an iterable of tensors or dicts",
          TypeError)
    items = list(params)
    if not all(isinstance(g, dict) for g in items):
        return [{"params": items}]
    return [{**g, "params": [g["params"]] if isinstance(g["params"], Tensor) else list(g["params"])} for g in items]

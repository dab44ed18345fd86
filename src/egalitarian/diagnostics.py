"""Diagnostics that tell memorization from grokking, computed at each evaluation of a training run.

Enable them by name in a config, ``diagnostics = ["spectrum", "lar"]``, or ``["default"]`` for the cheap
default set :data:`DEFAULT` (``spectrum, lar, wnorm, collapse``).  ``fourier`` and ``nlm`` (one backward) are
cheap too; ``restricted`` needs one forward over all P² pairs.  What each costs is measured by
``bench/diagnostics.py`` (experiments/06-diagnostics, "Cost of the diagnostics").  The trainer calls
:meth:`Diagnostics.compute` after every evaluation and stores each returned ``diag_<metric>`` value in
``metrics.csv`` with split ``diag``.  Sources: the log-alignment ratio is Shehper & Vaswani (2026); the
Fourier, restricted and excluded losses Nanda et al. (2023, "Progress measures for grokking via mechanistic
interpretability"); softmax collapse and the naïve-loss-minimisation cosine Prieto et al. (2025, "Grokking at
the edge of numerical stability").

=============  ====================================================================================================
name           metrics (``diag_…``), one row each per evaluation
=============  ====================================================================================================
``spectrum``   For every ≥ 2-D parameter ``W`` (conv kernels as ``(out, in·kh·kw)``), on the raw gradient ``G``
               left in ``W.grad`` by the last training step (the last batch's gradient, with the L2 term of the
               loss; EGD and Preconditioned optimizers leave the raw gradient there): ``smax.W``, ``smin.W``
               (smallest singular value above the rank cutoff ``max(m, n)·ε·smax``, ε of G's dtype),
               ``cond.W = smax/smin``, ``cond_med.W = s_1/s_⌈r₀/2⌉`` (robust to a tiny tail), ``rank.W``
               (``r₀`` = kept singular values), ``erank.W`` (Roy–Vetterli effective rank ``exp(H(s/Σs))`` over
               the kept values), ``srank.W`` (stable rank ``‖G‖_F²/smax²``) and ``gnorm.W`` (``‖G‖_F``).  For
               parameters the optimizer whitens (EGD, egd_adam/egd_adamw): ``wcos.W``, the cosine between G and
               the whitened step ``U Vᵀ = polar(G)`` (exact polar factor, :func:`egalitarian.linalg.polar`), and
               ``wangle.W``, the same angle in degrees.  Nothing is logged before the first step (no gradient).
``lar``        Log-alignment ratio of the unembedding, ``lar``, and ``keff = n^{2(1−lar)}``.  The
               unembedding is the last linear map into the logits (``model.head`` if the model has one, else
               the last ``nn.Linear``: the MLP's output layer); its inputs (after the final norm, at the answer
               position) are captured by a forward hook on a fixed subsample of the training set (the first
               ``sample_size`` = 256 training rows; the split is already shuffled), ``Z = X Wᵀ`` without bias
               (the layer's output minus its bias), pooled sums of squares in float64.  Also
               ``lar_centered``: the same with ``X`` centred over the sample (not the paper's definition).
``wnorm``      ``wnorm`` = ``‖θ‖₂`` over all parameters, and ``wnorm.<name>`` per parameter tensor.
``travel``     Distance travelled from the initialization θ₀ (a detached copy of every parameter taken when the
               :class:`Diagnostics` object is made: the trainer makes it right after building the model, before a
               checkpoint is loaded, and the init is a function of ``train.seed``, so θ₀ is the init also on
               resume): ``travel`` = ``‖θ − θ₀‖₂`` over all parameters, ``travel.<name>`` per parameter tensor,
               and ``travel_rel.<name>`` = ``‖W − W₀‖_F / ‖W₀‖_F`` per ≥ 2-D parameter (NaN if ``W₀ = 0``).
``fourier``    Modular tasks only.  Embedding = the first layer's one-hot blocks of ``a`` and ``b``
               (MLP: ``W1[:, :P]ᵀ`` and ``W1[:, P:2P]ᵀ``) or the token embedding rows ``0..P−1`` (transformer);
               Fourier-component norms ``N_k`` (k = 1..⌊P/2⌋, blocks combined as ``√(N_{k,a}² + N_{k,b}²)``):
               ``fourier_gini`` (Gini of ``N_1..N_K``), ``fourier_top5`` (energy share of the 5 largest
               ``N_k²``), ``fourier_nfreq`` (frequencies holding 90% of the energy), ``fourier_key1..5`` (the
               5 strongest frequencies, strongest first); ``fourier_*.unembed``: Gini, top-5 share and count
               for the unembedding's class axis.
``restricted`` Modular addition only.  One forward over all ``P²`` pairs; key frequencies = the
               ``n_key`` (5) frequencies ``k`` with the most logit energy on ``cos/sin(w_k(a+b))``, or the
               fixed ``key_frequencies``.  ``restricted`` = CE of ``mean + D Dᵀ(L − mean)`` on the held-out
               pairs (logit-level variant), ``excluded`` = CE of ``L − D Dᵀ L`` on the training pairs,
               ``grid_loss`` = CE of the logits on all pairs.
``collapse``   On the same sample, in the loss's dtype: ``collapse_frac`` (softmax collapse: ``Σ exp(z − max) ==
               1`` exactly) and ``zero_loss_frac`` (per-sample softmax CE exactly 0).  Class targets only.
``nlm``        ``nlm`` = ``cos(−∇L, θ)`` over all parameters and ``nlm.W`` per ≥ 2-D parameter, with the
               gradient of the training loss *without* the L2 term, on the sample at the current weights.
=============  ====================================================================================================

Numerics never raise: ``log 0 → −inf``, zero norms → NaN.  Diagnostics run in eval mode under their own
hooks, use no global RNG, and leave ``.grad`` untouched, so a run with diagnostics trains bit-identically to
one without.

Whether a run is memorizing, progressing, grokked or stalled is :func:`egalitarian.grokking.grok_status`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError
from .linalg import polar

__all__ = [
    "DEFAULT",
    "NAMES",
    "Diagnostics",
    "collapse_fractions",
    "fourier_basis",
    "fourier_norms",
    "fourier_stats",
    "gini",
    "gradient_spectrum",
    "lar_from_sums",
    "log_alignment_ratio",
    "logit_frequency_energy",
    "nlm_cosine",
    "restricted_excluded_loss",
    "sum_frequency_basis",
    "whitened_cosine",
]

NAMES = ("spectrum", "lar", "wnorm", "travel", "fourier", "restricted", "collapse", "nlm")
DEFAULT = ("spectrum", "lar", "wnorm", "collapse")
"""The cheap default set, ``diagnostics = ["default"]``: ≤ 10% overhead on the paper's MLP recipe."""

TOP_K = 5  # top-k energy share and number of key frequencies reported by "fourier"
_NAN = float("nan")


# --------------------------------------------------------------------------------------- gradient spectrum


def singular_values(G: Tensor) -> Tensor:
    """Singular values of ``G`` viewed as ``(out, rest)``, descending, float64.

    fp64 inputs: ``torch.linalg.svdvals``.  fp32/fp16/bf16 inputs: eigenvalues of the smaller Gram matrix
    accumulated in fp64 (2-3× faster than an SVD; it resolves ``s`` down to ``~√(n·ε64)·s_max ≈ 1e-7·s_max``,
    far below the fp32 rank cutoff ``max(m, n)·ε32·s_max``).
    """
    X = G.detach().reshape(G.shape[0], -1).to(torch.float64)
    if G.dtype == torch.float64:
        return torch.linalg.svdvals(X)
    A = X @ X.mT if X.shape[0] <= X.shape[1] else X.mT @ X
    return torch.linalg.eigvalsh(A).clamp_min(0).sqrt().flip(0)


def gradient_spectrum(G: Tensor, rtol: float | None = None) -> dict[str, float]:
    """Spectral quantities of one gradient matrix: smax, smin, cond, cond_med, rank, erank, srank, gnorm.

    ``smin`` is the smallest singular value above ``rtol·smax`` (default ``max(m, n)·ε`` of G's dtype,
    fp16/bf16 counted as fp32), so a rank-1 matrix has ``cond = 1``.  The effective rank (Roy & Vetterli
    2007) is ``exp(−Σ π_i ln π_i)`` with ``π = s/Σs`` over the kept values; the stable rank is
    ``Σ s_i²/s_1²``.  A zero matrix gives ``smax = 0``, ``rank = 0`` and NaN for the ratios.
    """
    m = G.shape[0]
    n = G.numel() // max(m, 1)
    if rtol is None:
        dt = torch.float32 if G.dtype in (torch.float16, torch.bfloat16) else G.dtype
        rtol = max(m, n) * torch.finfo(dt).eps
    s = singular_values(G)
    smax = float(s[0]) if len(s) else 0.0
    gnorm = float(torch.linalg.vector_norm(G.detach().to(torch.float64)))
    if not smax > 0 or not math.isfinite(smax):
        return {"smax": smax, "smin": _NAN, "cond": _NAN, "cond_med": _NAN, "rank": 0.0, "erank": _NAN,
                "srank": _NAN, "gnorm": gnorm}
    kept = s[s > rtol * smax]
    r0 = len(kept)
    pi = kept / kept.sum()
    erank = float(torch.exp(-(pi * torch.log(pi)).sum()))
    return {
        "smax": smax,
        "smin": float(kept[-1]),
        "cond": smax / float(kept[-1]),
        "cond_med": smax / float(kept[math.ceil(r0 / 2) - 1]),
        "rank": float(r0),
        "erank": erank,
        "srank": float((s**2).sum()) / smax**2,
        "gnorm": gnorm,
    }


def whitened_cosine(G: Tensor) -> float:
    """``⟨G, UVᵀ⟩ / (‖G‖_F ‖UVᵀ‖_F)`` with ``UVᵀ = polar(G)``: 1 iff all kept singular values are equal."""
    X = G.detach().reshape(G.shape[0], -1)
    if not bool(torch.isfinite(X).all()):
        return _NAN
    P = polar(X).to(torch.float64)
    X = X.to(torch.float64)
    den = float(torch.linalg.vector_norm(X)) * float(torch.linalg.vector_norm(P))
    return float((X * P).sum()) / den if den > 0 else _NAN


def whitened_params(opt: Any) -> set[int]:
    """ids of the parameters ``opt.whitened_params()`` lists (EGD, Preconditioned); none for other optimizers."""
    listed = getattr(opt, "whitened_params", None)
    return {id(p) for p in listed()} if listed is not None else set()


# ---------------------------------------------------------------------------------------------------- LAR


def lar_from_sums(ss_z: float, n_z: float, ss_w: float, n_w: float, ss_x: float, n_x: float, n: int) -> float:
    """``LAR = ½ [ln ms(Z) − ln ms(W) − ln ms(X)] / ln n`` from pooled sums of squares and counts.

    ``Z = 0`` gives ``−inf``; a zero ``W`` or ``X``, or ``n = 1``, gives NaN.
    """
    if n <= 1 or not (ss_w > 0 and ss_x > 0) or not all(c > 0 for c in (n_z, n_w, n_x)):
        return _NAN
    if not ss_z > 0:
        return -math.inf
    return 0.5 * (math.log(ss_z / n_z) - math.log(ss_w / n_w) - math.log(ss_x / n_x)) / math.log(n)


def k_eff(lar: float, n: int) -> float:
    """``n^{2(1−LAR)}`` (= ``1/Σ p_i q_i``); ``inf`` for ``LAR = −inf``."""
    if math.isnan(lar) or n <= 1:
        return _NAN
    e = 2 * (1 - lar) * math.log(n)
    return math.exp(e) if e < 700 else math.inf


def _sumsq(t: Tensor) -> float:
    """Sum of squares accumulated in float64 (no float64 copy of ``t``)."""
    return float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64)) ** 2


def log_alignment_ratio(W: Tensor, X: Tensor, Z: Tensor | None = None) -> tuple[float, float]:
    """``(LAR, k_eff)`` of ``W`` (m×n, fan-in n) on inputs ``X`` (…, n); ``Z = X Wᵀ`` unless given (no bias)."""
    n = W.shape[-1]
    X = X.detach().reshape(-1, n)
    if Z is None:
        Z = X.to(torch.float64) @ W.detach().to(torch.float64).mT
    lar = lar_from_sums(_sumsq(Z), Z.numel(), _sumsq(W), W.numel(), _sumsq(X), X.numel(), n)
    return lar, k_eff(lar, n)


def find_unembedding(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last linear map into the logits: ``model.head`` if it is an ``nn.Linear``, else the last ``nn.Linear``."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return "head", head
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("diagnostics = 'lar' needs a model with an nn.Linear output layer")
    return linears[-1]


# ------------------------------------------------------------------------------------------------ Fourier


def fourier_basis(p: int) -> Tensor:
    """Orthonormal real Fourier basis of ℤ_p as rows, float64 ``(p, p)``.

    Row 0 is the constant ``1/√p``; rows ``2k−1, 2k`` are ``√(2/p)·cos(2πkx/p)``, ``√(2/p)·sin(2πkx/p)`` for
    ``k = 1..(p−1)//2``; an even ``p`` ends with the Nyquist row ``cos(πx)/√p``.
    """
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64)]
    for k in range(1, (p - 1) // 2 + 1):
        w = 2 * math.pi * k * x / p
        rows += [math.sqrt(2 / p) * torch.cos(w), math.sqrt(2 / p) * torch.sin(w)]
    if p % 2 == 0:
        rows.append(torch.cos(math.pi * x) / math.sqrt(p))
    return torch.stack(rows)


def fourier_norms(E: Tensor) -> Tensor:
    """Norms ``N_0..N_K`` of the Fourier components of ``E`` (p, d) along its first (token) axis.

    ``N_0`` = constant component; ``N_k = √(‖Ê[cos_k]‖² + ‖Ê[sin_k]‖²)``, ``k = 1..⌊p/2⌋``.
    """
    p = E.shape[0]
    Eh = fourier_basis(p).to(E.device) @ E.detach().reshape(p, -1).to(torch.float64)
    sq = Eh.pow(2).sum(-1)
    K = (p - 1) // 2
    pairs = sq[1 : 2 * K + 1].reshape(K, 2).sum(-1)
    out = [sq[:1], pairs] + ([sq[-1:]] if p % 2 == 0 else [])
    return torch.cat(out).sqrt()


def gini(x: Tensor) -> float:
    """Gini coefficient of non-negative values: ``Σ_i (2i − K − 1) x_(i) / (K Σ x)`` (ascending, i = 1..K)."""
    x = torch.sort(x.detach().to(torch.float64).flatten()).values
    K, total = len(x), float(x.sum())
    if K == 0 or not total > 0:
        return _NAN
    i = torch.arange(1, K + 1, dtype=torch.float64, device=x.device)
    return float(((2 * i - K - 1) * x).sum()) / (K * total)


def fourier_stats(norms: Tensor, top: int = TOP_K, energy: float = 0.9) -> dict[str, Any]:
    """From ``N_0..N_K``: Gini of ``N_1..N_K``, top-``top`` energy share, #frequencies for ``energy``, key freqs."""
    N = norms[1:].to(torch.float64)
    e = N.pow(2)
    total = float(e.sum())
    order = torch.argsort(e, descending=True)
    if not total > 0:
        return {"gini": _NAN, "top": _NAN, "nfreq": _NAN, "keys": [_NAN] * top}
    cum = torch.cumsum(e[order], 0) / total
    return {
        "gini": gini(N),
        "top": float(cum[min(top, len(e)) - 1]),
        "nfreq": float(int((cum < energy - 1e-12).sum()) + 1),
        "keys": [float(k + 1) for k in order[:top].tolist()],
    }


def sum_frequency_basis(p: int, freqs: Iterable[int]) -> Tensor:
    """``D`` (p², 2|freqs|): orthonormal columns ``cos(w_k(a+b))``, ``sin(w_k(a+b))`` over the full grid.

    Rows in row-major pair order ``a·p + b``; ``w_k = 2πk/p``; frequencies in ``1..(p−1)//2``.
    """
    a = torch.arange(p, dtype=torch.float64).repeat_interleave(p)
    b = torch.arange(p, dtype=torch.float64).repeat(p)
    cols = []
    for k in freqs:
        if not 1 <= int(k) <= (p - 1) // 2:
            raise ValueError(f"key frequency {k!r}: must be an integer in [1, {(p - 1) // 2}]")
        w = 2 * math.pi * int(k) * (a + b) / p
        cols += [torch.cos(w), torch.sin(w)]
    if not cols:
        return torch.zeros(p * p, 0, dtype=torch.float64)
    D = torch.stack(cols, 1)
    return D / torch.linalg.vector_norm(D, dim=0, keepdim=True)


def logit_frequency_energy(logits: Tensor, p: int) -> Tensor:
    """Energy of the full-grid logits (p², C), centred over the grid, on ``cos/sin(w_k(a+b))``, k = 1..K."""
    L = logits.detach().to(torch.float64)
    L = L - L.mean(0, keepdim=True)
    s = (torch.arange(p).repeat_interleave(p) + torch.arange(p).repeat(p)) % p
    A = torch.zeros(p, L.shape[1], dtype=torch.float64, device=L.device).index_add_(0, s.to(L.device), L)
    F_ = fourier_basis(p).to(L.device)  # projections on the grid = √p · (row of F) · A, up to a common factor
    sq = (F_ @ A).pow(2).sum(-1)
    K = (p - 1) // 2
    return sq[1 : 2 * K + 1].reshape(K, 2).sum(-1)


def restricted_excluded_loss(
    logits: Tensor, labels: Tensor, train_mask: Tensor, p: int, freqs: Sequence[int]
) -> dict[str, float]:
    """Restricted and excluded loss of full-grid logits ``L`` (p², C) (Nanda et al. 2023).

    * ``excluded``: CE of ``L − D Dᵀ L`` on the training pairs (``train_mask``);
    * ``restricted``: CE of ``mean(L) + D Dᵀ (L − mean(L))`` (mean over the grid) on the other pairs;
    * ``grid_loss``: CE of ``L`` on all pairs.

    ``D`` = :func:`sum_frequency_basis` ``(p, freqs)``; CE in float64.
    """
    L = logits.detach().to(torch.float64)
    D = sum_frequency_basis(p, freqs).to(L.device)
    mean = L.mean(0, keepdim=True)
    proj = D @ (D.mT @ (L - mean))
    y = labels.to(L.device)
    m = train_mask.to(L.device)
    out = {
        "restricted": float(F.cross_entropy((mean + proj)[~m], y[~m])) if bool((~m).any()) else _NAN,
        "excluded": float(F.cross_entropy((L - D @ (D.mT @ L))[m], y[m])) if bool(m.any()) else _NAN,
        "grid_loss": float(F.cross_entropy(L, y)),
    }
    return out


# ------------------------------------------------------------------------------------------ collapse, NLM


def collapse_fractions(logits: Tensor, y: Tensor, dtype: torch.dtype = torch.float32) -> tuple[float, float]:
    """``(softmax-collapse fraction, zero-loss fraction)`` of class logits (N, C) in ``dtype``.

    Collapse: ``Σ_k exp(z_k − max z) == 1`` exactly (every wrong class absorbed); zero loss: per-sample softmax
    cross-entropy exactly 0.
    """
    z = logits.detach().to(dtype)
    sum_exp = torch.exp(z - z.amax(-1, keepdim=True)).sum(-1)
    sc = float((sum_exp == 1).to(torch.float64).mean())
    zero = float((F.cross_entropy(z, y, reduction="none") == 0).to(torch.float64).mean())
    return sc, zero


def nlm_cosine(grad: Tensor | Sequence[Tensor], theta: Tensor | Sequence[Tensor]) -> float:
    """``cos(−g, θ) = −⟨g, θ⟩ / (‖g‖ ‖θ‖)`` over one tensor or a list of tensors; NaN if a norm is 0."""
    gs = [grad] if isinstance(grad, Tensor) else list(grad)
    ts = [theta] if isinstance(theta, Tensor) else list(theta)
    dot = sum(float((g.detach().double() * t.detach().double()).sum()) for g, t in zip(gs, ts, strict=True))
    ng = math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in gs))
    nt = math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in ts))
    return -dot / (ng * nt) if ng > 0 and nt > 0 else _NAN


# ------------------------------------------------------------------------------------------- the object


class Diagnostics:
    """The enabled diagnostics of one run; :meth:`compute` returns ``{"diag_<metric>": value}``.

    Args:
        names: diagnostic names from :data:`NAMES`, or ``"default"`` for :data:`DEFAULT`.
        model, data, loss_fn: the run's model, :class:`~egalitarian.tasks.TaskData` and training loss
            (without the L2 term).  With ``travel``, the model's parameters at this moment are θ₀ (copied).
        sample_size: training rows (the first ones) used by ``lar``, ``collapse`` and ``nlm``.
        key_frequencies: fixed key frequencies for ``restricted`` (default: the ``n_key`` strongest in the
            current logits, re-detected at each evaluation).
        n_key: number of auto-detected key frequencies.

    Raises:
        ConfigError: an unknown name, or a diagnostic that does not apply to the task (``fourier`` and
            ``restricted`` need a modular task, ``restricted`` modular addition, ``collapse`` class targets).
    """

    def __init__(self, names: Sequence[str], model: nn.Module, data: Any, loss_fn: Any, *, sample_size: int = 256,
                 key_frequencies: Sequence[int] | None = None, n_key: int = TOP_K) -> None:
        self.names = chosen_names(names)
        check_applicable(self.names, names, data)
        self.model, self.data, self.loss_fn = model, data, loss_fn
        info = getattr(data, "info", {}) or {}
        self.p = info.get("p")
        if "restricted" in self.names and key_frequencies is not None:
            sum_frequency_basis(self.p, key_frequencies)  # validates
        self.key_frequencies = None if key_frequencies is None else [int(k) for k in key_frequencies]
        self.n_key = n_key
        # travel: θ₀, the parameters now (in the trainer: the init, before a checkpoint is loaded)
        self.theta0 = ({n: p.detach().clone() for n, p in model.named_parameters()} if "travel" in self.names
                       else {})
        self.unembed_name, self.unembed = find_unembedding(model) if "lar" in self.names else ("", None)
        n = min(sample_size, data.n_train)
        self.x_sample, self.y_sample = data.x_train[:n], data.y_train[:n]
        if "restricted" in self.names:
            self.grid_x, self.grid_y, self.grid_train = addition_grid(self.p, info, data.x_train.device)

    def compute(self, opt: Any = None) -> dict[str, float]:
        """All enabled diagnostics at the current state; ``opt`` tells which parameters are whitened."""
        out: dict[str, float] = {}
        if "spectrum" in self.names:
            out.update(spectrum_metrics(self.model, opt))
        if {"lar", "collapse", "nlm"} & set(self.names):
            out.update(self._sample_pass())
        if "wnorm" in self.names:
            out.update(weight_norms(self.model))
        if "travel" in self.names:
            out.update(travel_metrics(self.model, self.theta0))
        if "fourier" in self.names:
            out.update(fourier_metrics(self.model, self.p))
        if "restricted" in self.names:
            out.update(self._restricted())
        return out

    def _sample_pass(self) -> dict[str, float]:
        """One forward over the sample (with backward for ``nlm``): LAR, collapse, NLM."""
        want_lar, want_nlm = "lar" in self.names, "nlm" in self.names
        captured: list[tuple[Tensor, Tensor]] = []
        handle = None
        if want_lar:
            handle = self.unembed.register_forward_hook(lambda mod, args, z: captured.append((args[0], z)))
        out: dict[str, float] = {}
        try:
            with _eval_mode(self.model), torch.set_grad_enabled(want_nlm):
                logits = self.model(self.x_sample)
                if want_nlm:
                    out.update(nlm_metrics(self.model, self.loss_fn(logits, self.y_sample)))
        finally:
            if handle is not None:
                handle.remove()
        logits = logits.detach()
        if want_lar and captured:
            out.update(lar_metrics(self.unembed, *captured[-1]))
        if "collapse" in self.names:
            out.update(collapse_metrics(logits, self.y_sample, self.loss_fn))
        return out

    @torch.no_grad()
    def _restricted(self) -> dict[str, float]:
        with _eval_mode(self.model):
            logits = self.model(self.grid_x)
        p = self.p
        freqs = self.key_frequencies
        if freqs is None:
            energy = logit_frequency_energy(logits[:, :p], p)
            freqs = (torch.argsort(energy, descending=True)[: self.n_key] + 1).tolist()
        r = restricted_excluded_loss(logits, self.grid_y, self.grid_train, p, freqs)
        return {f"diag_{k}": v for k, v in r.items()}


# ------------------------------------------------------------------------------------ the object's parts


def chosen_names(names: Sequence[str]) -> tuple[str, ...]:
    """The diagnostics ``names`` ask for (``"default"`` expanded to :data:`DEFAULT`), in :data:`NAMES` order;
    anything but a list of known names is a ConfigError."""
    allowed = ("default", *NAMES)
    if isinstance(names, str) or not all(isinstance(x, str) for x in names):
        raise ConfigError(f"diagnostics = {names!r}: must be a list of names; allowed: {', '.join(allowed)}")
    chosen: set[str] = set()
    for name in names:
        if name not in allowed:
            raise ConfigError(
                f"diagnostics = {list(names)!r}: unknown diagnostic {name!r}; allowed: {', '.join(allowed)}"
            )
        chosen.update(DEFAULT if name == "default" else (name,))
    return tuple(x for x in NAMES if x in chosen)


def check_applicable(chosen: Sequence[str], names: Sequence[str], data: Any) -> None:
    """A ConfigError (quoting the config's ``names``) for a chosen diagnostic the task has no use for:
    ``fourier`` and ``restricted`` need a modular task, ``restricted`` modular addition, ``collapse`` class
    targets."""
    info = getattr(data, "info", {}) or {}
    modular = info.get("p") is not None and "op" in info
    for name in ("fourier", "restricted"):
        if name in chosen and not modular:
            raise ConfigError(f"diagnostics = {list(names)!r}: {name!r} needs a modular task (task.name = 'modular')")
    if "restricted" in chosen and info.get("op") != "add":
        raise ConfigError(
            f"diagnostics = {list(names)!r}: 'restricted' is defined for modular addition only "
            f"(task.op = 'add'), not task.op = {info.get('op')!r}"
        )
    if "collapse" in chosen and getattr(data, "target", "class") != "class":
        raise ConfigError(f"diagnostics = {list(names)!r}: 'collapse' needs class targets (softmax outputs)")


def addition_grid(p: int, info: dict[str, Any], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """All ``P²`` pairs ``(a, b)`` in the task's encoding (on ``device``), their labels ``(a + b) mod p``, and the
    mask of the training pairs (``info["pairs_train"]``), for ``restricted``."""
    from .tasks.modular import encode

    pairs = torch.cartesian_prod(torch.arange(p), torch.arange(p))
    mask = torch.zeros(p * p, dtype=torch.bool)
    tp = info["pairs_train"]
    mask[tp[:, 0] * p + tp[:, 1]] = True
    return encode(pairs, p, info.get("encoding", "onehot")).to(device), (pairs[:, 0] + pairs[:, 1]) % p, mask


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` inside, its training mode as it was after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def spectrum_metrics(model: nn.Module, opt: Any) -> dict[str, float]:
    """``spectrum``: :func:`gradient_spectrum` of every ≥ 2-D parameter's ``.grad``, and ``wcos``/``wangle`` for
    those ``opt`` whitens."""
    out: dict[str, float] = {}
    whitened = whitened_params(opt)
    for name, p in model.named_parameters():
        if p.ndim < 2 or p.grad is None:
            continue
        for k, v in gradient_spectrum(p.grad).items():
            out[f"diag_{k}.{name}"] = v
        if id(p) in whitened:
            c = whitened_cosine(p.grad)
            out[f"diag_wcos.{name}"] = c
            out[f"diag_wangle.{name}"] = math.degrees(math.acos(max(-1.0, min(1.0, c)))) if c == c else _NAN
    return out


def nlm_metrics(model: nn.Module, loss: Tensor) -> dict[str, float]:
    """``nlm``: :func:`nlm_cosine` of ``−∇loss`` and θ over every trainable parameter, and per ≥ 2-D one."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    pairs = [(n, p, torch.zeros_like(p) if g is None else g) for (n, p), g in zip(named, grads, strict=True)]
    out = {"diag_nlm": nlm_cosine([g for _, _, g in pairs], [p for _, p, _ in pairs])}
    for n, p, g in pairs:
        if p.ndim >= 2:
            out[f"diag_nlm.{n}"] = nlm_cosine(g, p)
    return out


def lar_metrics(unembed: nn.Linear, X: Tensor, Z: Tensor) -> dict[str, float]:
    """``lar``: :func:`log_alignment_ratio` of the unembedding from its captured input ``X`` and output ``Z``
    (less the bias: ``Z = X Wᵀ``), and ``lar_centered`` with both centred over the sample."""
    W = unembed.weight.detach()
    X, Z = X.detach().reshape(-1, W.shape[1]), Z.detach().reshape(-1, W.shape[0])
    if unembed.bias is not None:
        Z = Z - unembed.bias.detach()  # Z = X Wᵀ without the bias
    out: dict[str, float] = {}
    out["diag_lar"], out["diag_keff"] = log_alignment_ratio(W, X, Z)
    # centred over the sample: X - mean(X) maps to Z - mean(Z) (linear map)
    out["diag_lar_centered"], _ = log_alignment_ratio(W, X - X.mean(0), Z - Z.mean(0))
    return out


def collapse_metrics(logits: Tensor, y: Tensor, loss_fn: Any) -> dict[str, float]:
    """``collapse``: :func:`collapse_fractions` in the loss's dtype (at least float32)."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    with torch.no_grad():
        ld = loss_fn(logits[:1], y[:1]).dtype
    dtype = torch.promote_types(dtype, ld) if ld.is_floating_point else dtype
    out: dict[str, float] = {}
    out["diag_collapse_frac"], out["diag_zero_loss_frac"] = collapse_fractions(logits, y, dtype)
    return out


def weight_norms(model: nn.Module) -> dict[str, float]:
    """``wnorm``: ``‖θ‖₂`` over all parameters, then per parameter tensor (float64 sums)."""
    out: dict[str, float] = {}
    total = 0.0
    for name, p in model.named_parameters():
        sq = float(p.detach().to(torch.float64).pow(2).sum())
        total += sq
        out[f"diag_wnorm.{name}"] = math.sqrt(sq)
    return {"diag_wnorm": math.sqrt(total), **out}


def travel_metrics(model: nn.Module, theta0: dict[str, Tensor]) -> dict[str, float]:
    """``travel``: ``‖θ − θ₀‖₂`` over all parameters, per parameter tensor, and relative per ≥ 2-D one."""
    out: dict[str, float] = {}
    total = 0.0
    for name, p in model.named_parameters():
        p0 = theta0.get(name)
        if p0 is None:  # a parameter added after construction: no θ₀ to measure from
            continue
        sq = float((p.detach().to(torch.float64) - p0.to(torch.float64)).pow(2).sum())
        total += sq
        out[f"diag_travel.{name}"] = math.sqrt(sq)
        if p.ndim >= 2:
            n0 = float(p0.to(torch.float64).pow(2).sum())
            out[f"diag_travel_rel.{name}"] = math.sqrt(sq / n0) if n0 > 0 else _NAN
    return {"diag_travel": math.sqrt(total), **out}


def embedding_blocks(model: nn.Module, p: int) -> tuple[list[Tensor], Tensor | None]:
    """Embedding blocks (p, d) along the token axis, and the unembedding (p, n) along the class axis."""
    tok = getattr(model, "tok_emb", None)
    if isinstance(tok, nn.Embedding):
        blocks = [tok.weight.detach()[:p]]
    else:
        first = next(m for m in model.modules() if isinstance(m, nn.Linear))
        W1 = first.weight.detach()
        blocks = [W1[:, :p].mT, W1[:, p : 2 * p].mT] if W1.shape[1] >= 2 * p else [W1[:, :p].mT]
    _, un = find_unembedding(model)
    U = un.weight.detach()
    return blocks, (U[:p] if U.shape[0] >= p else None)


def fourier_metrics(model: nn.Module, p: int) -> dict[str, float]:
    """``fourier``: :func:`fourier_stats` of the embedding (blocks combined) and of the unembedding's class axis."""
    blocks, U = embedding_blocks(model, p)
    norms = torch.stack([fourier_norms(B) for B in blocks]).pow(2).sum(0).sqrt()
    s = fourier_stats(norms)
    out = {"diag_fourier_gini": s["gini"], "diag_fourier_top5": s["top"], "diag_fourier_nfreq": s["nfreq"]}
    out.update({f"diag_fourier_key{i + 1}": k for i, k in enumerate(s["keys"])})
    if U is not None:
        su = fourier_stats(fourier_norms(U))
        out.update({"diag_fourier_gini.unembed": su["gini"], "diag_fourier_top5.unembed": su["top"],
                    "diag_fourier_nfreq.unembed": su["nfreq"]})
    return out

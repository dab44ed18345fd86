"""Gradient transforms: small pure functions that compose, in the style of optax.

A :class:`GradientTransform` is a pair of functions acting on **one parameter** at a time:

    init(param)                      -> state
    update(grad, state, param)       -> (new_grad, new_state)

``update`` never changes ``grad``, ``state`` or ``param`` in place; it returns new objects.  States are plain
tuples/dicts of tensors and Python numbers, so they survive ``torch.optim.Optimizer.state_dict()``.
:func:`chain` composes transforms left to right, exactly like applying them in sequence by hand.

A transform may also have a third function that updates many parameters in one call,

    update_many(grads, states, params)  -> (new_grads, new_states)     (lists, one entry per parameter)

whose results are those of ``update`` on each parameter in turn; :meth:`GradientTransform.update_all` calls it
when there is one and loops over ``update`` otherwise.  :func:`whiten` has one: it whitens the matrices of
equal shape, dtype and device in one batched :func:`~egalitarian.linalg.polar` call (on CPU for small matrices
only, where it pays: :func:`batched`; equal to the loop to rounding) and the others in one
:func:`~egalitarian.linalg.polar_many` call (the exact Gram route decomposes their equal-size Grams as one batch);
:func:`chain` passes the lists through its transforms' ``update_all``.

Optimizers in :mod:`egalitarian.optim` apply a chain to every parameter and then take a base step
(SGD's ``p ← p − lr·u``, or hand the transformed gradient to Adam/AdamW/...).  This module holds EGD's own
transforms; the baselines' (Grokfast, column normalisation, ⊥Grad) live in :mod:`egalitarian.baselines`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import distributed
from .errors import check
from .linalg import check_options, default_rtol, gram_inverse_root, polar, polar_many, resolve_backend

__all__ = [
    "CPU_BATCH_MAX_SIDE",
    "SCALES",
    "GradientTransform",
    "add_decayed_weights",
    "as_matrix",
    "chain",
    "batched",
    "identity",
    "no_state",
    "scale",
    "stack_layout",
    "trace",
    "whiten",
    "whitening_options",
]

State = Any

UpdateMany = Callable[[Sequence[Tensor], Sequence[State], Sequence[Tensor]], tuple[list[Tensor], list[State]]]

SCALES = ("none", "muon", "rms", "frobenius")
"""The step-size conventions of :func:`whiten` (``scale=``): see there."""


class GradientTransform(NamedTuple):
    """``init(param) -> state`` and ``update(grad, state, param) -> (grad, state)``, both pure; optionally
    ``update_many(grads, states, params) -> (grads, states)``, the same for many parameters in one call."""

    init: Callable[[Tensor], State]
    update: Callable[[Tensor, State, Tensor], tuple[Tensor, State]]
    update_many: UpdateMany | None = None

    def update_all(
        self, grads: Sequence[Tensor], states: Sequence[State], params: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[State]]:
        """``update`` of every parameter: ``update_many`` when the transform has one, else a loop over ``update``."""
        if self.update_many is not None:
            return self.update_many(grads, states, params)
        return _loop(self.update, grads, states, params)


def _loop(
    update: Callable[[Tensor, State, Tensor], tuple[Tensor, State]],
    grads: Sequence[Tensor],
    states: Sequence[State],
    params: Sequence[Tensor],
) -> tuple[list[Tensor], list[State]]:
    out = [update(g, s, p) for g, s, p in zip(grads, states, params, strict=True)]
    return [g for g, _ in out], [s for _, s in out]


def no_state(param: Tensor) -> State:
    """``init`` of a transform without state."""
    return ()


def identity() -> GradientTransform:
    """Leaves the gradient unchanged."""
    return GradientTransform(no_state, lambda g, s, p: (g, s))


def chain(*transforms: GradientTransform) -> GradientTransform:
    """Apply ``transforms`` in order: ``chain(a, b)`` maps g to ``b(a(g))``; the state is a tuple of states."""

    def init(param: Tensor) -> State:
        return tuple(t.init(param) for t in transforms)

    def update(grad: Tensor, state: State, param: Tensor) -> tuple[Tensor, State]:
        new_states = []
        for t, s in zip(transforms, state, strict=True):
            grad, s = t.update(grad, s, param)
            new_states.append(s)
        return grad, tuple(new_states)

    def update_many(
        grads: Sequence[Tensor], states: Sequence[State], params: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[State]]:
        out, columns = list(grads), []
        for j, t in enumerate(transforms):
            out, column = t.update_all(out, [s[j] for s in states], params)
            columns.append(column)
        return out, [tuple(column[i] for column in columns) for i in range(len(out))]

    return GradientTransform(init, update, update_many)


def scale(factor: float) -> GradientTransform:
    """``g ← factor · g``."""
    return GradientTransform(no_state, lambda g, s, p: (g * factor, s))


def add_decayed_weights(weight_decay: float) -> GradientTransform:
    """Coupled L2 decay: ``g ← g + wd · p``, the gradient of ``0.5·wd·‖p‖²`` added to the loss.

    Placed before :func:`whiten` it reproduces the EGD paper's SGD runs, where the decay term is part of the
    gradient that gets whitened.
    """
    if weight_decay == 0:
        return identity()
    return GradientTransform(no_state, lambda g, s, p: (g + weight_decay * p, s))


def trace(momentum: float, nesterov: bool = False) -> GradientTransform:
    """Heavy-ball momentum as ``torch.optim.SGD`` (dampening 0): ``b ← μ b + g``; output ``b``, or
    ``g + μ b`` with Nesterov.  The buffer starts at the first gradient (``b₁ = g₁``), as in torch.  With μ = 0
    it is the identity, Nesterov or not (``g + 0·b``; torch.optim.SGD refuses nesterov without momentum)."""
    if momentum == 0:
        return identity()

    def init(param: Tensor) -> State:
        return {"momentum_buffer": None}

    def update(grad: Tensor, state: State, param: Tensor) -> tuple[Tensor, State]:
        buf = state["momentum_buffer"]
        buf = grad.clone() if buf is None else momentum * buf + grad
        out = grad + momentum * buf if nesterov else buf
        return out, {"momentum_buffer": buf}

    return GradientTransform(init, update)


def as_matrix(t: Tensor) -> Tensor:
    """View a ≥2-D parameter as the matrix EGD whitens: ``(out, in·k1·k2…)`` (conv kernels flattened)."""
    return t.reshape(t.shape[0], -1)


def whiten(
    backend: str = "auto",
    *,
    rtol: float | None = None,
    clamp_eps: float | None = None,
    seed: int = 0,
    resample: bool = True,
    scale: str = "none",
    rms_target: float = 0.2,
    row_blocks: int = 1,
    experts: bool = False,
    transposed: bool = False,
    **polar_options: Any,
) -> GradientTransform:
    """EGD's whitening ``G ← (G Gᵀ)^(-1/2) G = U Vᵀ`` for every parameter with ≥ 2 dimensions.

    Parameters with fewer than 2 dimensions (biases, LayerNorm gains) pass through unchanged (never scaled).
    Conv kernels ``(out, in, kh, kw)`` are whitened as ``(out, in·kh·kw)`` matrices and reshaped back.
    ``backend``, ``rtol``, ``clamp_eps`` (the paper's clamp ``1/max(s, clamp_eps)``; ``None``, the default, is
    polar's cutoff) and ``polar_options`` go to :func:`egalitarian.linalg.polar`; an option the backend does not
    take is a ConfigError here, when the transform is built (``"auto"``: :data:`~egalitarian.linalg.AUTO_OPTIONS`).

    ``row_blocks = k`` (default 1) splits the matrix ``(out, in)`` into ``k`` blocks of ``out/k`` rows, each
    whitened by itself (a fused ``[Q; K; V]`` projection: ``k = 3``; per attention head: ``3·heads``); ``out``
    must be a multiple of ``k`` (else a ValueError naming the parameter's shape).

    ``experts=True``: every parameter is a stack of matrices along its first dimension, ``(E, out, in…)`` (the
    experts of a mixture-of-experts layer), each whitened by itself as ``(out, in·…)`` (and in ``row_blocks``
    blocks), all ``E`` in one batched ``polar`` call (:func:`stack_layout`).

    ``transposed=True``: every parameter is a matrix stored as ``(in, out)`` (Hugging Face's ``Conv1D``, as in
    GPT-2), whitened as its transpose ``(out, in)`` and transposed back.  The polar factor is the same either way
    (``polar(Gᵀ) = polar(G)ᵀ``); what the orientation changes is that ``row_blocks`` splits the stored matrix's
    *columns* (GPT-2's fused ``c_attn``, ``(d, 3·d)``: ``row_blocks = 3``) and that ``scale="muon"`` reads the
    shape as ``(out, in)``, as for an ``nn.Linear``.  Only 2-D parameters (a ValueError names another shape).

    ``scale`` multiplies each whitened block of shape ``(m, n)`` by ``c``:

    * ``"none"`` (default, the paper): ``c = 1``, every kept singular value is 1;
    * ``"muon"``: ``c = √max(1, m/n)`` (Keller Jordan's Muon);
    * ``"rms"``: ``c = ρ·√max(m, n)`` with ``ρ = rms_target`` (default 0.2): a full-rank ``U Vᵀ`` has RMS
      ``1/√max(m, n)``, so the block's RMS becomes ``ρ``, AdamW's typical update RMS (Moonshot's Moonlight);
    * ``"frobenius"``: ``c = ‖G‖_F / ‖U Vᵀ‖_F = ‖G‖_F/√r`` (``r`` kept directions; ``c = 0`` if none), magnitude
      preserving: the step has the gradient's Frobenius norm and equal singular values, so it shrinks as the
      gradient does (every kept singular value becomes the RMS singular value of ``G``).

    For ``backend="rsvd"`` the Gaussian sketch is drawn from a generator seeded by ``(seed, step)``: a fresh
    sketch per step like the paper's PyTorch code (``resample=False`` reuses one sketch forever, like its JAX
    code), reproducible and resumable because the step count lives in the state.

    ``update_many`` whitens the matrices of equal block shape, dtype and device in one batched ``polar`` call
    (rsvd: one call per parameter, each with its own generator), where :func:`batched` says it pays (on CPU: the
    smaller side ≤ 64), and the others in one :func:`~egalitarian.linalg.polar_many` call, which with the exact
    Gram route (``auto`` on CPU) decomposes the Grams of equal size in one batched ``eigh`` (a transformer's
    ``d × d``, ``4d × d`` and ``d × 4d`` matrices all have ``d × d`` Grams).  A batch equals one call per matrix
    to rounding, not bit for bit; the choice depends on the shapes and device only, so a rerun or resume on the
    same machine is bit-identical.

    Under a process group of more than one rank (DDP, FSDP2), ``update_many`` whitens each matrix once, on its
    owner rank, and shares the result (:mod:`egalitarian.distributed`; ``EGD_DISTRIBUTED=off`` opts out).
    """
    options = {**whitening_options(backend, rtol=rtol, clamp_eps=clamp_eps), **polar_options}
    check_options(backend, options, options)  # the backend's name and its options
    check(scale in SCALES, "scale", scale, f"must be one of {', '.join(map(repr, SCALES))}")
    check(isinstance(rms_target, (int, float)) and not isinstance(rms_target, bool) and math.isfinite(rms_target)
          and rms_target > 0, "rms_target", rms_target, "must be a number > 0")
    check(isinstance(row_blocks, int) and not isinstance(row_blocks, bool) and row_blocks >= 1, "row_blocks",
          row_blocks, "must be an integer >= 1")
    check(isinstance(experts, bool), "experts", experts, "must be True or False")
    check(isinstance(transposed, bool), "transposed", transposed, "must be True or False")
    check(not (experts and transposed), "transposed", transposed, "cannot be combined with experts=True")
    is_rsvd = backend == "rsvd"

    def orient(grad: Tensor) -> Tensor:
        """``grad`` as EGD whitens it: ``(out, in)`` (its transpose when ``transposed``); its own inverse."""
        if not transposed:
            return grad
        check(grad.ndim == 2, "transposed", True, f"needs 2-D parameters (in, out): a parameter of shape "
              f"{tuple(grad.shape)}")
        return grad.mT

    def init(param: Tensor) -> State:
        return {"step": 0} if is_rsvd else ()

    def polar_kw(state: State, device: torch.device) -> tuple[dict[str, Any], State]:
        kwargs = dict(options)
        if is_rsvd:
            step = state["step"]
            gen = torch.Generator(device=device)
            gen.manual_seed(seed * 1_000_003 + (step if resample else 0))
            kwargs["generator"] = gen
            state = {"step": step + 1}
        return kwargs, state

    def finish(out: Tensor, X: Tensor) -> Tensor:
        """``c`` times the whitened stack ``out`` of the stack ``X``."""
        if scale == "frobenius":  # per block: ‖G_block‖_F / ‖U Vᵀ‖_F, 0 where nothing was kept
            g, w = X.norm(dim=(-2, -1), keepdim=True), out.norm(dim=(-2, -1), keepdim=True)
            return out * torch.where(w > 0, g / torch.where(w > 0, w, 1), 0)
        c = _scale_factor(scale, rms_target, out.shape[-2], out.shape[-1])
        return out if c is None else out * c

    def update(grad: Tensor, state: State, param: Tensor) -> tuple[Tensor, State]:
        if grad.ndim < 2:
            return grad, state
        g = orient(grad)
        X = _blocks(g, row_blocks, experts)
        kwargs, state = polar_kw(state, grad.device)
        return orient(finish(polar(X, backend, **kwargs), X).reshape(g.shape)), state

    def local(stacks: list[Tensor]) -> list[Tensor]:
        """The whitened ``stacks``: equal shapes (block shape, and block count), dtype and device in one batched
        ``polar`` call where :func:`batched` says it pays; the others in one :func:`~egalitarian.linalg.polar_many`
        call (the exact Gram route decomposes their equal-size Grams as one batch)."""
        out: list[Tensor] = list(stacks)
        batches: dict[tuple[Any, ...], list[int]] = {}
        for i, X in enumerate(stacks):
            batches.setdefault((tuple(X.shape), X.dtype, X.device), []).append(i)
        singles: list[int] = []
        for (shape, _, device), items in batches.items():
            if len(items) == 1 or not batched(shape, device):
                singles += items
                continue
            whitened = polar(torch.stack([stacks[i] for i in items]), backend, **options)
            for i, W in zip(items, whitened.unbind(0), strict=True):
                out[i] = finish(W, stacks[i])
        if singles:
            for i, W in zip(singles, polar_many([stacks[i] for i in singles], backend, **options), strict=True):
                out[i] = finish(W, stacks[i])
        return out

    def gram_ok(t: Tensor) -> bool:
        """Whether :func:`gram` computes this whitening for a gradient like ``t``: the fp64 Gram route of
        ``gram-eigh``, on a Gram that cannot overflow unscaled (inputs below fp64, or the paper's clamp, which is
        not rescaled), with valid ``rtol`` and ``clamp_eps`` (else ``polar`` raises, as on one process)."""
        return (resolve_backend(backend, t, clamp_eps) == "gram-eigh"
                and options.get("dtype") in (None, torch.float64)
                and (t.dtype != torch.float64 or clamp_eps is not None)
                and (rtol is None or 0 <= rtol < 1) and (clamp_eps is None or clamp_eps > 0))

    def gram(A: Tensor, b: int, dtype: torch.dtype) -> Tensor:
        """``c·P`` per block from the fp64 Grams ``A = GᵀG`` (``(K, n, n)``) of ``K`` blocks of ``b × n`` in
        ``dtype``: ``G @ (c·P)`` is the block's whitened step (the ``"gram-eigh"`` backend's right-hand route,
        the same spectral cutoff or clamp; a block whose Gram holds a NaN or an inf gives NaN, or raises with
        ``nonfinite="raise"``)."""
        n = A.shape[-1]
        bad = ~torch.isfinite(A).all(dim=-1).all(dim=-1)
        if options.get("nonfinite", "raise") == "raise":
            check(not bool(bad.any()), "max|G|", "NaN or inf", "must be finite (G has NaN or inf); pass "
                  "nonfinite='propagate' to let it through", FloatingPointError)
        A = torch.where(bad[:, None, None], torch.zeros((), dtype=A.dtype, device=A.device), A)
        cut = default_rtol((b, n), dtype) if rtol is None else rtol
        P, w = gram_inverse_root(A, max(b, n), cut, clamp_eps)
        if scale == "frobenius":  # ‖G‖_F² = tr(GᵀG), ‖U diag(w) Vᵀ‖_F² = Σ w²
            g = A.diagonal(dim1=-2, dim2=-1).sum(-1).sqrt()
            kept = w.square().sum(-1).sqrt()
            P = P * torch.where(kept > 0, g / torch.where(kept > 0, kept, 1), 0)[:, None, None]
        else:
            c = _scale_factor(scale, rms_target, b, n)
            P = P if c is None else P * c
        return P.masked_fill(bad[:, None, None], math.nan)

    how = distributed.Whitening(lambda shape: stack_layout(shape, row_blocks, experts), local, gram_ok, gram)

    def update_many(
        grads: Sequence[Tensor], states: Sequence[State], params: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[State]]:
        if is_rsvd:
            return _loop(update, grads, states, params)
        out = list(grads)
        mats = [i for i, g in enumerate(grads) if g.ndim >= 2]
        oriented = [orient(grads[i]) for i in mats]
        whitened = distributed.whiten_split(oriented, how)  # None: one process, or opted out
        if whitened is None:
            unwrapped = [distributed.one_rank_local(g) for g in oriented]
            stacks = local([_blocks(g, row_blocks, experts) for g, _ in unwrapped])
            whitened = [W.reshape(g.shape) if wrap is None else wrap(W.reshape(g.shape))
                        for (g, wrap), W in zip(unwrapped, stacks, strict=True)]
        for i, W in zip(mats, whitened, strict=True):
            out[i] = orient(W)
        return out, list(states)

    return GradientTransform(init, update, update_many)


def whitening_options(
    backend: str, *, rtol: float | None = None, clamp_eps: float | None = None, rank: int = 64, power_iters: int = 2
) -> dict[str, Any]:
    """The :func:`~egalitarian.linalg.polar` options of EGD's whitening keys for ``backend``: ``rtol`` and
    ``clamp_eps`` where given (``None``: polar's default), ``rank`` and ``power_iters`` for ``"rsvd"`` only (no
    other backend has them).  Every EGD optimizer and method carries all five keys, whatever its backend."""
    options: dict[str, Any] = {k: v for k, v in (("rtol", rtol), ("clamp_eps", clamp_eps)) if v is not None}
    if backend == "rsvd":
        options.update(rank=rank, power_iters=power_iters)
    return options


def stack_layout(shape: Sequence[int], row_blocks: int = 1, experts: bool = False) -> tuple[int, int, int]:
    """``(K, b, n)``: a parameter of ``shape`` is whitened as ``K`` blocks of ``b × n``, stacked along its first
    dimension: the matrix ``(out, in·…)`` (:func:`as_matrix`) in ``row_blocks`` blocks of rows, or, with
    ``experts``, each of the ``E`` matrices ``(out, in·…)`` of a ``(E, out, in…)`` stack in ``row_blocks``
    blocks (``K = E·row_blocks``)."""
    if experts:
        check(len(shape) >= 3, "experts", True, f"needs parameters of >= 3 dims (experts, out, in): a parameter of "
              f"shape {tuple(shape)}")
    lead, rows, cols = (shape[0], shape[1], math.prod(shape[2:])) if experts else (1, shape[0], math.prod(shape[1:]))
    check(rows % row_blocks == 0, "row_blocks", row_blocks,
          f"must divide the rows of every whitened matrix: a parameter of shape {tuple(shape)} has {rows} rows")
    return lead * row_blocks, rows // row_blocks, cols


def _blocks(grad: Tensor, row_blocks: int, experts: bool = False) -> Tensor:
    """The stack EGD whitens for ``grad`` (:func:`stack_layout`): ``(K, b, n)``, or the matrix ``(b, n)`` when
    ``K = 1``."""
    K, b, n = stack_layout(grad.shape, row_blocks, experts)
    return grad.reshape(K, b, n) if K > 1 else grad.reshape(b, n)


def _scale_factor(scale: str, rms_target: float, m: int, n: int) -> float | None:
    """The factor ``c`` of :func:`whiten`'s ``scale`` for a whitened block of shape ``(m, n)`` (None: ``c = 1``)."""
    if scale == "muon":
        return math.sqrt(max(1.0, m / n))
    if scale == "rms":
        return rms_target * math.sqrt(max(m, n))
    return None


CPU_BATCH_MAX_SIDE = 64
"""On CPU, matrices whose smaller side is at most this are whitened in one batched call (see :func:`batched`)."""


def batched(shape: tuple[int, ...], device: torch.device) -> bool:
    """Whether :func:`whiten` whitens several matrices of ``shape`` (``(..., m, n)``) on ``device`` in one batched
    :func:`~egalitarian.linalg.polar` call, rather than one call each.

    The two agree to rounding, not bit for bit: a batched BLAS/LAPACK call can take another code path than one
    call per matrix, and which one depends on the CPU (MKL dispatches by CPU model, alignment and thread count).
    Whether the bits agree can even depend on the values (on an AMD EPYC, fp32 inputs that ``svd``/``gram-eigh``
    compute in fp64: the last rounding hides the fp64 difference for some matrices only; ``bench/batch_probe.py``),
    so no shape rule and no run-time probe can promise bits.  The choice depends on the shape and the device only,
    so one step on one machine takes the same path every time: a rerun and a resume are bit-identical.

    Off CPU (CUDA, ...) and under ``torch.compile``: always (the GPU's main speed lever; fewer, larger ops make a
    smaller graph).  On CPU: where the smaller side is at most :data:`CPU_BATCH_MAX_SIDE` (64), where one call per
    matrix is mostly per-call overhead.  Measured on a 2-core AMD EPYC, one thread
    (experiments/23-cpu-portability): the batch is 2.5–5.4× faster at 16 × 16 and 16 × 64, 1.1–1.9× at 64 × 64
    and 64 × 256; the gain fades around 100 (0.99–1.38× at 97 × 128 over three runs), and from 128 × 128 up a
    batch is 0.75–1.08× the loop (LAPACK decomposes one matrix at a time either way), so larger matrices go one by
    one.
    """
    if device.type != "cpu" or torch.compiler.is_compiling():
        return True
    return min(shape[-2:]) <= CPU_BATCH_MAX_SIDE

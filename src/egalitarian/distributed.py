r"""EGD across processes: each whitened matrix is whitened once, by one rank, and the result reaches every rank.

Under ``DistributedDataParallel`` every rank holds the same averaged gradient, and under FSDP2 (``fully_shard``)
each rank holds a block of rows of it; either way a polar factor computed on every rank is work done ``W`` times.
When a process group of more than one rank is initialised, :func:`egalitarian.transforms.whiten` (EGD's whitening,
``Preconditioned``'s default transform) hands its matrices to :func:`whiten_split`, which

* **assigns each whitened matrix** (all its row blocks, or all its experts, together) **to one owner rank**, greedily
  by cost (largest first, to the least loaded rank; cost ``K·b·n·min(b, n)`` for ``K`` blocks of ``b × n``,
  :func:`assign`), the same assignment on every rank because it depends on the shapes only;
* **replicated gradients** (DDP, plain tensors): the owner whitens its matrices (batched by shape as on one
  process), and **one** ``all_gather_into_tensor`` of a byte buffer per call (every dtype packed together) gives
  every rank every result;
* **row-sharded gradients** (FSDP2: DTensors ``Shard(0)`` on a 1-D mesh; uneven shards and empty ones included),
  per matrix the route that moves the fewest bytes, decided from the shapes:

  - ``"local"`` (no bytes): every shard boundary falls between blocks (an expert stack ``(E, out, in)`` always;
    fused ``[Q; K; V]`` rows when the shards hold whole blocks), so each rank whitens its own blocks;
  - ``"gather"``: one ``all_to_all_single`` sends each rank's rows to the owner, which whitens the whole matrix,
    and a second sends each rank its rows of the result: ``2·R·n·e·(W−1)/W`` bytes for ``R`` rows of ``e``-byte
    elements;
  - ``"gram"``: the ``n × n`` Gram of a row-sharded block is the sum of its shards' Grams, so each rank sends its
    fp64 Gram of every block it touches to the owner, which sums them in rank order, computes
    ``c·(GᵀG)^(-1/2)`` (the ``"gram-eigh"`` backend's factor, :func:`egalitarian.linalg.gram_inverse_root`) and
    sends it back, and each rank multiplies its own rows by it: ``2·8·n²·T·(W−1)/W`` bytes for ``T`` (block,
    rank) pairs; chosen when that is fewer bytes (``8·n·T < e·R``: tall blocks, ``b ≳ 2·W·n`` for fp32) and the
    whitening is the exact fp64 Gram route (``backend="auto"`` on CPU or with ``clamp_eps``, or
    ``"gram-eigh"``).

  Both exchanges of one call are the same two ``all_to_all_single`` collectives (none when every matrix is
  ``"local"``).

Results equal one process's to rounding (a batch split among ranks rounds like a smaller batch; the Gram route
sums the shards' Grams), and every rank holds the same bits.  Every buffer starts with a header: a rank whose
whitening raised says so, and every rank then raises (``FloatingPointError`` if that rank's error was one) before
anything is written; under DDP the header also carries a fingerprint of the rank's gradients, and ranks whose
gradients differ (independent models, not data parallel) raise a ValueError instead of mixing them.

Opt out with the environment variable ``EGD_DISTRIBUTED=off`` (every rank then whitens every matrix itself, the
redundant behaviour); anything else but ``split`` (the default) is an error.  Without a process group, or with
one rank, nothing here runs and the step is exactly the single-process one.  ``rsvd`` (a random sketch per
parameter) and DTensors of other layouts (``Replicate``, ``Shard(1)`` as a transposed ``Shard(0)``, 2-D meshes)
are gathered and whitened whole by every rank, each keeping its part.

:func:`comm_log` records, for a bench or a test, the collectives and bytes a step issues and the route of each
matrix.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from .errors import check

__all__ = ["ENV", "Collective", "CommLog", "Whitening", "assign", "comm_log", "enabled", "global_peaks",
           "whiten_split"]

ENV = "EGD_DISTRIBUTED"
"""The environment variable of the opt-out: ``split`` (default) or ``off``."""

_HEADER = 16  # bytes: (status, fingerprint) as two float64
_ALIGN = 8  # every packed tensor starts at a multiple of 8 bytes (a view as fp64 needs it)
_FAILED = {1: FloatingPointError, 2: RuntimeError}


class Whitening(NamedTuple):
    """What :func:`whiten_split` needs of a whitening transform (:func:`egalitarian.transforms.whiten` builds it).

    * ``layout(shape)``: ``(K, b, n)``, the ``K`` blocks of ``b × n`` a gradient of ``shape`` is whitened as,
      stacked along the gradient's first dimension (row blocks, experts);
    * ``local(stacks)``: the whitened stacks (``(K, b, n)``, or ``(b, n)`` when ``K = 1``), step size included,
      batched by shape as on one process;
    * ``gram_ok(t)``: whether ``gram`` computes the whitening of a gradient like ``t`` (the fp64 Gram route);
    * ``gram(A, b, dtype)``: the factor ``c·P`` (``(K, n, n)``, fp64) by which the rows of ``K`` blocks of
      ``b × n`` (``dtype``) are multiplied, from their Grams ``A = GᵀG`` (``(K, n, n)``, fp64, not rescaled).
    """

    layout: Callable[[Sequence[int]], tuple[int, int, int]]
    local: Callable[[list[Tensor]], list[Tensor]]
    gram_ok: Callable[[Tensor], bool]
    gram: Callable[[Tensor, int, torch.dtype], Tensor]


@dataclass
class Collective:
    """One collective of a split: ``op`` (``all_gather_into_tensor``, ``all_to_all_single``), the group's size and
    the bytes this rank sent to and received from the other ranks."""

    op: str
    group_size: int
    sent: int
    received: int


@dataclass
class CommLog:
    """What :func:`comm_log` recorded: the collectives, and ``(shape, route, owner)`` per whitened matrix
    (``route``: ``"replicated"``, ``"local"``, ``"gather"``, ``"gram"`` or ``"redundant"``; ``owner`` -1 where
    there is none)."""

    collectives: list[Collective] = field(default_factory=list)
    routes: list[tuple[tuple[int, ...], str, int]] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(c.sent for c in self.collectives)

    @property
    def received(self) -> int:
        return sum(c.received for c in self.collectives)


_LOG: CommLog | None = None


@contextlib.contextmanager
def comm_log() -> Iterator[CommLog]:
    """Record the split's collectives and routes while the block runs (``with comm_log() as log: opt.step()``)."""
    global _LOG
    outer, _LOG = _LOG, CommLog()
    try:
        yield _LOG
    finally:
        _LOG = outer


def _record(*, collective: Collective | None = None, route: tuple[tuple[int, ...], str, int] | None = None) -> None:
    if _LOG is not None:
        if collective is not None:
            _LOG.collectives.append(collective)
        if route is not None:
            _LOG.routes.append(route)


def enabled() -> bool:
    """Whether the whitening is split: a process group is initialised with more than one rank, and
    ``EGD_DISTRIBUTED`` is not ``off``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return False
    mode = os.environ.get(ENV, "split")
    check(mode in ("split", "off"), ENV, mode, "must be 'split' (default) or 'off'")
    return mode == "split"


def global_peaks(grads: Sequence[Tensor]) -> Tensor:
    """``max|g|`` of each of ``grads`` (fp64, one fused reduction): of the whole tensor on every rank.  A DTensor's
    (FSDP2) is its local shard's (0 if empty) maxed over the ranks of its mesh, one all-reduce per mesh dimension;
    there a non-finite local peak stays as it is, and a finite one becomes inf where another rank's shard is not
    finite (a MAX reduction need not propagate NaN).  Without DTensors: no collective."""
    mod = sys.modules.get("torch.distributed.tensor")  # not imported: there is no DTensor (and one process
    DTensor = getattr(mod, "DTensor", None)  # need not pay for the import)
    meshes: dict[Any, list[int]] = {}
    for i, g in enumerate(grads):
        if DTensor is not None and isinstance(g, DTensor):
            meshes.setdefault(g.device_mesh, []).append(i)
    if not meshes:
        return _abs_max(list(grads))
    local = [g.to_local() if isinstance(g, DTensor) else g for g in grads]  # type: ignore[arg-type]
    full = [i for i, t in enumerate(local) if t.numel()]  # an empty shard has no peak: 0
    peaks = torch.zeros(len(local), dtype=torch.float64, device=local[0].device)
    if full:
        peaks[full] = _abs_max([local[i] for i in full])
    out = peaks.clone()
    for mesh, idx in meshes.items():
        sub = torch.where(torch.isfinite(peaks[idx]), peaks[idx], math.inf)
        for d in range(mesh.ndim):
            dist.all_reduce(sub, op=dist.ReduceOp.MAX, group=mesh.get_group(d))
        out[idx] = torch.where(torch.isfinite(peaks[idx]), sub, peaks[idx])
    return out


def _abs_max(tensors: list[Tensor]) -> Tensor:
    """``max|t|`` of each of ``tensors`` (non-empty, one device) as fp64: NaN where ``t`` has a NaN, else inf where it
    has an inf.  On CPU ``_foreach_max`` of ``_foreach_abs`` (the same values, ~8× faster than the infinity norm
    there, for a transient copy); elsewhere, and under ``torch.compile`` (which cannot trace ``_foreach_max``), the
    fused infinity norm."""
    if tensors[0].device.type == "cpu" and hasattr(torch, "_foreach_max") and not torch.compiler.is_compiling():
        peaks = torch._foreach_max(torch._foreach_abs(tensors))
    else:
        peaks = torch._foreach_norm(tensors, ord=math.inf)
    return torch.stack([n.double() for n in peaks])


def assign(costs: Sequence[float], world: int, loads: Sequence[float] | None = None) -> list[int]:
    """The owner rank of each item: longest processing time first (by decreasing cost, ties by index), each to the
    least loaded rank so far (ties: the lowest rank), starting from ``loads`` (default zeros).  A function of its
    arguments only, so every rank computes the same assignment."""
    load = list(loads) if loads is not None else [0.0] * world
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owners[i] = r
        load[r] += costs[i]
    return owners


def _cost(K: int, b: int, n: int) -> float:
    return float(K * b * n * min(b, n))


def _stack(t: Tensor, K: int, b: int, n: int) -> Tensor:
    return t.reshape(K, b, n) if K > 1 else t.reshape(b, n)


def _nbytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    return -(-math.prod(shape) * dtype.itemsize // _ALIGN) * _ALIGN


def _pack(parts: Sequence[Tensor], size: int, device: torch.device) -> Tensor:
    """``parts`` as one uint8 buffer of ``size`` bytes, each part starting at a multiple of 8 bytes."""
    pieces, at = [], 0
    for t in parts:
        n = t.numel() * t.element_size()
        pieces += [t.detach().contiguous().reshape(-1).view(torch.uint8),
                   torch.zeros(_nbytes(t.shape, t.dtype) - n, dtype=torch.uint8, device=device)]
        at += _nbytes(t.shape, t.dtype)
    return torch.cat([*pieces, torch.zeros(size - at, dtype=torch.uint8, device=device)])


def _unpack(buf: Tensor, specs: Sequence[tuple[Sequence[int], torch.dtype]]) -> list[Tensor]:
    """The tensors of ``specs`` (shape, dtype) read from ``buf`` as :func:`_pack` wrote them (views of ``buf``)."""
    out, at = [], 0
    for shape, dtype in specs:
        n = math.prod(shape) * dtype.itemsize
        out.append(buf[at : at + n].view(dtype).reshape(shape))
        at += _nbytes(shape, dtype)
    return out


def _header(status: int, fingerprint: Tensor, device: torch.device) -> Tensor:
    return torch.cat([torch.tensor([float(status)], dtype=torch.float64, device=device),
                      fingerprint.to(device=device, dtype=torch.float64).reshape(1)])


def _status(error: BaseException | None) -> int:
    return 0 if error is None else 1 if isinstance(error, FloatingPointError) else 2


def _raise_failed(statuses: Sequence[float], error: BaseException | None) -> None:
    """Raise on every rank alike when any rank's whitening failed: this rank's own error, else the failed rank's
    kind of error naming it.  Nothing has been written yet."""
    if error is not None:
        raise error
    for r, s in enumerate(statuses):
        if s:
            raise _FAILED.get(int(s), RuntimeError)(f"the whitening failed on rank {r} (see its error); no parameter "
                                                    "or state was changed on any rank")


def one_rank_local(g: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor] | None]:
    """A DTensor on a mesh of one rank as its local tensor (which is the whole tensor, whatever the placement) and
    the function that wraps a result of the same shape back; any other tensor as it is, and ``None``.  The whitening
    of such a gradient then runs on a plain tensor: no DTensor operations (some, such as ``clamp_min``, have no
    sharding rule on torch 2.7-2.8) and none of their overhead."""
    mod = sys.modules.get("torch.distributed.tensor")
    DTensor = getattr(mod, "DTensor", None)
    if DTensor is None or not isinstance(g, DTensor) or g.device_mesh.size() != 1 or torch.compiler.is_compiling():
        return g, None
    mesh, placements, shape, stride = g.device_mesh, g.placements, g.shape, g.stride()
    return g.to_local(), lambda W: DTensor.from_local(W, mesh, placements, run_check=False, shape=shape,
                                                       stride=stride)


def whiten_split(grads: Sequence[Tensor], how: Whitening) -> list[Tensor] | None:
    """The whitened ``grads`` (≥ 2-D gradients, in order; DTensors stay DTensors), each computed once, by its owner
    rank, or ``None`` when the split is off (:func:`enabled`): then the caller whitens every matrix itself.

    Every rank must call this with the same shapes in the same order (the parameters of data-parallel replicas or
    of one sharded model).  Plain tensors are treated as DDP replicas (the world group); ``Shard(0)`` DTensors on a
    1-D mesh are exchanged within their mesh; any other tensor is whitened by every rank.
    """
    if not grads or torch.compiler.is_compiling() or not enabled():  # compiled: every rank whitens (one graph)
        return None
    from torch.distributed.tensor import DTensor, Shard

    out: list[Tensor | None] = [None] * len(grads)
    plain, sharded, other = [], {}, []
    for i, g in enumerate(grads):
        if not isinstance(g, DTensor):
            plain.append(i)
        elif g.device_mesh.ndim == 1 and tuple(g.placements) == (Shard(0),) and _in_rank_order(g.device_mesh):
            sharded.setdefault(g.device_mesh, []).append(i)
        else:
            other.append(i)
    for idx, results in [(plain, _replicated([grads[i] for i in plain], how) if plain else []),
                         *[(idx, _sharded([grads[i] for i in idx], how, mesh)) for mesh, idx in sharded.items()]]:
        for i, r in zip(idx, results, strict=True):
            out[i] = r
    if other:
        # every rank whitens the whole matrix as a plain tensor (gathered: no DTensor op, some of which, such as
        # clamp_min, have no sharding rule on torch 2.7-2.8) and keeps its own part of the result
        from torch.distributed.tensor import distribute_tensor

        full = [grads[i].full_tensor() for i in other]
        stacks = [_stack(f, *how.layout(f.shape)) for f in full]
        for i, f, w in zip(other, full, how.local(stacks), strict=True):
            g = grads[i]
            out[i] = distribute_tensor(w.reshape(f.shape), g.device_mesh, g.placements, src_data_rank=None)
            _record(route=(tuple(g.shape), "redundant", -1))
    return out  # type: ignore[return-value]


def _in_rank_order(mesh: Any) -> bool:
    """Whether the mesh's coordinates are its group's ranks (``Shard(0)`` gives chunk ``q`` to coordinate ``q``,
    ``all_to_all_single`` sends chunk ``q`` to group rank ``q``); a permuted mesh is whitened by every rank."""
    group = mesh.get_group()
    return [dist.get_group_rank(group, r) for r in mesh.mesh.tolist()] == list(range(mesh.size()))


# torch >= 2.13 names it all_gather_single (the old name warns); the same collective on every torch
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _replicated(grads: list[Tensor], how: Whitening) -> list[Tensor]:
    """DDP: the owner whitens, one ``all_gather_into_tensor`` of every rank's results (and header)."""
    world, me = dist.get_world_size(), dist.get_rank()
    layouts = [how.layout(g.shape) for g in grads]
    stacks = [_stack(g, *lay) for g, lay in zip(grads, layouts, strict=True)]
    owners = assign([_cost(*lay) for lay in layouts], world)
    for g, o in zip(grads, owners, strict=True):
        _record(route=(tuple(g.shape), "replicated", o))
    owned = [[i for i, o in enumerate(owners) if o == r] for r in range(world)]
    error: BaseException | None = None
    try:
        mine = how.local([stacks[i] for i in owned[me]])
    except Exception as e:  # every rank must still join the collective, then all raise alike
        error, mine = e, [torch.zeros_like(stacks[i]) for i in owned[me]]
    device = grads[0].device
    # the replicas' fingerprint: DDP's all-reduce leaves the same bits on every rank
    fingerprint = torch.stack([n.double() for n in torch._foreach_norm(stacks)]).sum()
    sizes = [_HEADER + sum(_nbytes(stacks[i].shape, stacks[i].dtype) for i in owned[r]) for r in range(world)]
    size = max(sizes)
    gathered = torch.empty(world * size, dtype=torch.uint8, device=device)
    _all_gather(gathered, _pack([_header(_status(error), fingerprint, device), *mine], size, device))
    _record(collective=Collective("all_gather_into_tensor", world, size * (world - 1), size * (world - 1)))
    rows = gathered.view(world, size)
    headers = rows[:, :_HEADER].view(torch.float64).cpu()
    _raise_failed(headers[:, 0].tolist(), error)
    prints = headers[:, 1]
    check(bool(torch.isclose(prints, prints[:1], rtol=1e-6, atol=0.0, equal_nan=True).all()),
          "the gradients' norms on the ranks", prints.tolist(),
          f"must agree (data-parallel replicas, e.g. DDP); ranks that train different models or data must set "
          f"{ENV}=off; nothing was changed")
    results: list[Tensor | None] = [None] * len(grads)
    for r in range(world):
        parts = mine if r == me else _unpack(rows[r, _HEADER:], [(stacks[i].shape, stacks[i].dtype) for i in owned[r]])
        for i, w in zip(owned[r], parts, strict=True):
            results[i] = w.reshape(grads[i].shape)
    return results  # type: ignore[return-value]


class _Sharded:
    """One row-sharded gradient as the exchange sees it: its ``K`` blocks of ``b × n``, the matrix rows of every
    rank (``torch.chunk`` of the first dimension, as FSDP2 and ``Shard(0)`` cut it), the blocks each rank's rows
    touch, and the route."""

    def __init__(self, g: Any, how: Whitening, world: int) -> None:
        self.g, self.local = g, g.to_local()
        self.K, self.b, self.n = how.layout(g.shape)
        rows = self.K * self.b
        per = rows // g.shape[0]  # matrix rows per index of the first dimension (an expert: its out rows)
        chunk = -(-g.shape[0] // world)
        self.ranges = [(min(q * chunk, g.shape[0]) * per, min((q + 1) * chunk, g.shape[0]) * per) for q in range(world)]
        self.touched = [range(lo // self.b, -(-hi // self.b)) if hi > lo else range(0) for lo, hi in self.ranges]
        self.dtype = g.dtype
        e = g.dtype.itemsize
        if all(lo % self.b == 0 and hi % self.b == 0 for lo, hi in self.ranges):
            self.route = "local"
        elif how.gram_ok(self.local) and 8 * self.n * sum(map(len, self.touched)) < e * rows:
            self.route = "gram"
        else:
            self.route = "gather"

    def rows(self, q: int) -> int:
        lo, hi = self.ranges[q]
        return hi - lo

    def mine(self, me: int) -> Tensor:
        """This rank's rows as a ``(rows, n)`` matrix."""
        return self.local.reshape(self.rows(me), self.n)

    def block_rows(self, q: int, j: int) -> slice:
        """Rank ``q``'s rows (0-based in its shard) that lie in block ``j``."""
        lo, hi = self.ranges[q]
        return slice(max(lo, j * self.b) - lo, min(hi, (j + 1) * self.b) - lo)

    def grams(self, me: int) -> Tensor:
        """fp64 Grams ``XᵀX`` of this rank's part of every block it touches: ``(len(touched), n, n)``."""
        X = self.mine(me).double()
        return torch.stack([X[self.block_rows(me, j)].mT @ X[self.block_rows(me, j)] for j in self.touched[me]]
                           ) if self.touched[me] else X.new_zeros(0, self.n, self.n)

    def cost(self) -> float:
        return float(self.K * self.n**3) if self.route == "gram" else _cost(self.K, self.b, self.n)


def _sharded(grads: list[Any], how: Whitening, mesh: Any) -> list[Any]:
    """FSDP2: per matrix the ``local``, ``gather`` or ``gram`` route; two ``all_to_all_single`` for all of them."""
    from torch.distributed.tensor import DTensor

    group, world, me = mesh.get_group(), mesh.size(), mesh.get_local_rank()
    items = [_Sharded(g, how, world) for g in grads]
    for it in items:
        check(it.local.shape[0] * (it.K * it.b // it.g.shape[0]) == it.rows(me), "the local shard of a gradient",
              tuple(it.local.shape), f"must hold rows {it.ranges[me]} of the whitened matrix (torch.chunk of dim 0)")
    exchanged = [i for i, it in enumerate(items) if it.route != "local"]
    # the local routes' work counts toward each rank's load, so the owners even it out
    loads = [sum(_cost(len(it.touched[q]), it.b, it.n) for it in items if it.route == "local") for q in range(world)]
    owners = dict(zip(exchanged, assign([items[i].cost() for i in exchanged], world, loads), strict=True))
    for i, it in enumerate(items):
        _record(route=(tuple(it.g.shape), it.route, owners.get(i, -1)))
    owned = [[i for i in exchanged if owners[i] == q] for q in range(world)]
    at = {i: k for q_items in owned for k, i in enumerate(q_items)}  # item i's place in its owner's lists
    device = items[0].local.device

    def contribution(q: int, i: int) -> tuple[tuple[int, ...], torch.dtype]:  # phase 1: rank q's part of item i
        it = items[i]
        return ((len(it.touched[q]), it.n, it.n), torch.float64) if it.route == "gram" else ((it.rows(q), it.n),
                                                                                               it.dtype)

    error: BaseException | None = None
    # phase 1: rows (gather) or Grams (gram) to the owners
    received: list[list[Tensor]] = [[] for _ in range(world)]
    if exchanged:
        try:
            parts = {i: (items[i].grams(me) if items[i].route == "gram" else items[i].mine(me)) for i in exchanged}
        except Exception as e:
            error, parts = e, {i: torch.zeros(contribution(me, i)[0], dtype=contribution(me, i)[1], device=device)
                               for i in exchanged}
        received, statuses = _all_to_all(
            [[parts[i] for i in owned[q]] for q in range(world)],
            [[contribution(q, i) for i in owned[me]] for q in range(world)], _status(error), group, device)
        _raise_failed(statuses, error)
    # the owner's work, and every rank's local blocks: one batched call of the whitening
    try:
        local = [i for i, it in enumerate(items) if it.route == "local" and it.touched[me]]
        gathers = [i for i in owned[me] if items[i].route == "gather"]
        stacks = [items[i].local.reshape(len(items[i].touched[me]), items[i].b, items[i].n) for i in local]
        for i in gathers:
            it = items[i]
            full = torch.cat([received[q][at[i]] for q in range(world)])
            stacks.append(_stack(full, it.K, it.b, it.n))
        whitened = dict(zip(local + gathers, how.local(stacks), strict=True)) if stacks else {}
        roots = {}
        for i in owned[me]:
            it = items[i]
            if it.route == "gram":
                A = torch.zeros(it.K, it.n, it.n, dtype=torch.float64, device=device)
                for q in range(world):  # in rank order: every run sums alike
                    A[it.touched[q].start : it.touched[q].stop] += received[q][at[i]]
                roots[i] = how.gram(A, it.b, it.dtype)
    except Exception as e:
        if not exchanged:
            raise
        error, whitened, roots = e, {}, {}
    # phase 2: each rank's rows of the result (gather) or the factors of the blocks it touches (gram)
    back: list[list[Tensor]] = [[] for _ in range(world)]
    if exchanged:
        def result_for(q: int, i: int) -> Tensor:
            it = items[i]
            if it.route == "gram":
                root = roots.get(i)
                shape = (len(it.touched[q]), it.n, it.n)
                return root[it.touched[q].start : it.touched[q].stop] if root is not None else torch.zeros(
                    shape, dtype=torch.float64, device=device)
            W = whitened.get(i)
            lo, hi = it.ranges[q]
            return W.reshape(it.K * it.b, it.n)[lo:hi] if W is not None else torch.zeros(
                hi - lo, it.n, dtype=it.dtype, device=device)

        def received_from(q: int, i: int) -> tuple[tuple[int, ...], torch.dtype]:
            it = items[i]
            return ((len(it.touched[me]), it.n, it.n), torch.float64) if it.route == "gram" else (
                (it.rows(me), it.n), it.dtype)

        back, statuses = _all_to_all([[result_for(q, i) for i in owned[me]] for q in range(world)],
                                     [[received_from(q, i) for i in owned[q]] for q in range(world)],
                                     _status(error), group, device)
        _raise_failed(statuses, error)
    out = []
    for i, it in enumerate(items):
        if it.route == "local":
            mine = whitened[i] if i in whitened else it.local
        elif it.route == "gather":
            mine = back[owners[i]][at[i]]
        else:
            P = back[owners[i]][at[i]]
            X = it.mine(me)
            mine = torch.empty_like(X)
            for k, j in enumerate(it.touched[me]):
                rows = it.block_rows(me, j)
                mine[rows] = (X[rows].double() @ P[k]).to(it.dtype)
        out.append(DTensor.from_local(mine.reshape(it.local.shape), it.g.device_mesh, it.g.placements,
                                      run_check=False, shape=it.g.shape, stride=it.g.stride()))
    return out


def _all_to_all(parts: list[list[Tensor]], specs: list[list[tuple[tuple[int, ...], torch.dtype]]], status: int,
                group: Any, device: torch.device) -> tuple[list[list[Tensor]], list[float]]:
    """One ``all_to_all_single``: ``parts[q]`` to rank ``q`` (each chunk after a header carrying ``status``), and
    the tensors of ``specs[q]`` (shape, dtype) from rank ``q``; returns those and every rank's status."""
    world, me = len(parts), dist.get_rank(group)
    header = _header(status, torch.zeros(()), device)
    send_sizes = [_HEADER + sum(_nbytes(t.shape, t.dtype) for t in p) for p in parts]
    recv_sizes = [_HEADER + sum(_nbytes(s, d) for s, d in spec) for spec in specs]
    send = torch.cat([_pack([header, *p], n, device) for p, n in zip(parts, send_sizes, strict=True)])
    recv = torch.empty(sum(recv_sizes), dtype=torch.uint8, device=device)
    dist.all_to_all_single(recv, send, output_split_sizes=recv_sizes, input_split_sizes=send_sizes, group=group)
    _record(collective=Collective("all_to_all_single", world, sum(send_sizes) - send_sizes[me],
                                  sum(recv_sizes) - recv_sizes[me]))
    chunks = recv.split(recv_sizes)
    statuses = torch.stack([c[:_HEADER].view(torch.float64)[0] for c in chunks]).tolist()
    return [_unpack(c[_HEADER:], spec) for c, spec in zip(chunks, specs, strict=True)], statuses

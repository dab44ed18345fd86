r"""EGD on any model in one call: which parameters EGD whitens, which go to an auxiliary AdamW, and one optimizer.

* :func:`route` decides, for every parameter of a model (each listed once, also when tied), whether EGD whitens
  it or AdamW updates it, with a reason; :class:`Routing` holds the decision, prints it as a table
  (``print(routing)``) and turns it into param groups.
* :class:`EGDWithAuxAdamW` is one ``torch.optim.Optimizer`` over those groups: :class:`egalitarian.optim.EGD`'s
  update for the ``use_egd=True`` groups, ``torch.optim.AdamW``'s for the others.
* :func:`egd_for` is both: ``egd_for(model, lr=0.02)``.

Routing rules, applied to each parameter in this order (the first that applies decides):

1. ``aux=`` patterns (fnmatch, on parameter names; a tied parameter matches by any of its names) → AdamW.
2. ``whiten=`` patterns → EGD (only parameters with ≥ 2 dims; aux wins when both match).  ``experts=`` patterns
   (checked before ``whiten=``) → EGD as a stack of experts: a parameter ``(E, out, in…)`` (≥ 3 dims, else a
   ValueError) is ``E`` matrices ``(out, in·…)``, each whitened by itself, all in one batched ``polar`` call (EGD's
   group key ``experts``).  Opt-in only, no rule guesses it: a raw 3-D parameter is not always a stack of linear
   maps, and an ``nn.Conv1d`` kernel ``(out, in, k)`` is one matrix ``(out, in·k)``.
3. Tied or shared parameters (one tensor under several names, e.g. ``head.weight is tok_emb.weight``) → AdamW.
4. The output head (``head=``, below) → AdamW.
5. Parameters of normalization layers (LayerNorm, RMSNorm, BatchNorm, GroupNorm, InstanceNorm) → AdamW.
6. ``nn.Embedding`` / ``nn.EmbeddingBag`` weights → AdamW.
7. ``nn.MultiheadAttention``: ``in_proj_weight`` → EGD as a fused [Q; K; V] matrix (3 row blocks);
   ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight`` (when q, k, v have different dims) → EGD;
   ``bias_k``, ``bias_v`` → AdamW.  ``out_proj`` is an ``nn.Linear`` (rule 9).
8. Parameters with fewer than 2 dims (biases, gains) → AdamW.
9. ``nn.Linear`` weights → EGD; fused layouts (below) as row blocks.
10. ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d`` kernels → EGD; EGD views a kernel as the matrix
    ``(shape[0], prod(shape[1:]))`` (``(out, in·k…)``; ``(in, out/groups·k…)`` for a transposed conv).
11. Hugging Face's ``Conv1D`` weights (GPT-2's ``c_attn``, ``c_proj``, ``c_fc``: a Linear stored ``(in, out)``,
    recognised by its class name ``Conv1D`` and its ``nf`` attribute, the weight's second dimension; transformers
    is not imported) → EGD, whitened as the transpose ``(out, in)`` (the group key ``transposed``): the same polar
    factor, with fused blocks (``c_attn``, ``(d, 3·d)``) split along the columns and ``scale="muon"`` reading
    ``(out, in)``, exactly as for the equivalent ``nn.Linear``.
12. Any other ≥ 2-D parameter (a raw ``nn.Parameter`` such as a ViT's ``pos_embed``, or the weight of a module
    type not listed here) → AdamW, with a reason naming its module type; ``whiten=`` puts it in EGD.

The output head, ``head="auto"`` (default): the **last** ``nn.Linear`` in module registration order
(``model.named_modules()``; an ``nn.MultiheadAttention``'s ``out_proj`` is never the head), if it is a
top-level child of the model (``model.fc``, ``model.head``, ``model.lm_head``, the last layer of an
``nn.Sequential``) or if its name or its parent's name is one of :data:`HEAD_NAMES` (``head``, ``lm_head``,
``classifier``, ``fc_out``, ``output``, …, e.g. ``classifier.6`` of torchvision's VGG, ``heads.head`` of its
ViT).  A head tied to the embedding is caught by rule 3 whatever its name.  When no Linear qualifies there is
no head (e.g. the project's ``models.MLP``, whose ``layers.2`` is whitened like the paper's "EGD on both
matrices").  ``head=None`` disables the rule; ``head="lm_head"`` (an fnmatch pattern on module names; it must
match one) names the head's module(s) yourself: all their parameters go to AdamW.

Fused projections.  EGD whitens a fused matrix ``[Q; K; V]`` (3·d × d) as 3 separate blocks of rows (EGD's
``row_blocks``): the polar factors of Q, K and V stacked, not the polar factor of the stack.  ``per_head=True``
whitens each head's rows separately instead (3·heads blocks; the head count is the ``num_heads``, ``n_head``,
``n_heads``, ``heads``, ``num_attention_heads`` or ``nhead`` int attribute of the Linear or of its parent
module, e.g. ``nn.MultiheadAttention.num_heads``, ``models.CausalSelfAttention.heads``, nanoGPT's ``n_head``,
timm's ``num_heads``; not found: ValueError).  Which Linears are fused:

* ``fused=None`` (default): :data:`DEFAULT_FUSED`, ``*qkv.weight`` (timm, this package's ``models.Transformer``),
  ``*c_attn.weight`` (nanoGPT), ``*Wqkv.weight`` (MosaicBERT, flash-attn) and ``*in_proj_weight``, each 3 blocks
  and only for an ``nn.Linear`` weight of shape (3·d, d) laid out [Q; K; V] (rows ``[3][heads][head_dim]``),
  which these layouts are, or a Hugging Face ``Conv1D`` weight stored (d, 3·d) (GPT-2's ``c_attn``: the same
  layout along its columns).  A match of another shape (grouped-query attention's (h + 2·kv)·d_h × h·d_h, say) is
  whitened as one matrix, with the reason saying so.  ``nn.MultiheadAttention``'s ``in_proj_weight`` is fused
  whatever ``fused`` says (it is [Q; K; V] by definition), unless a ``fused`` entry of your own matches it.
* ``fused={pattern: n}``: replaces the defaults (``{}``: no fused Linear; ``{**DEFAULT_FUSED, ...}`` extends
  them).  Each matching whitened parameter is split into exactly ``n`` row blocks, **not** multiplied by the
  head count under ``per_head`` (write ``3 * heads`` for per-head blocks), any shape whose rows ``n`` divides.
  Interleaved layouts (GPT-NeoX's ``query_key_value``, rows ``[heads][3][head_dim]``) must not be split into 3
  blocks; 3·heads blocks of head_dim rows are right for both layouts.

Every pattern of ``whiten=``, ``aux=``, ``head=`` and an explicit ``fused=`` must match something (a one-line
ValueError names the pattern that does not).  Frozen parameters (``requires_grad=False``) are routed like the
others; an optimizer skips them while they have no gradient.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .errors import check
from .optim import EGD, Engine, WithAuxAdamW, check_egd_group

__all__ = ["DEFAULT_FUSED", "HEAD_NAMES", "EGDWithAuxAdamW", "ParamInfo", "Route", "Routing", "check_patterns_used",
           "classify", "egd_for", "fused_blocks", "head_modules", "model_params", "route"]

#: Names (of the last ``nn.Linear`` or of its parent) that make it the output head under ``head="auto"``.
HEAD_NAMES = frozenset({"head", "lm_head", "classifier", "fc_out", "output", "out_head", "output_layer",
                        "output_projection", "score", "logits", "cls_head"})

#: The fused [Q; K; V] projections recognised by default: fnmatch pattern on parameter names → row blocks.
DEFAULT_FUSED: dict[str, int] = {"*qkv.weight": 3, "*c_attn.weight": 3, "*Wqkv.weight": 3, "*in_proj_weight": 3}

#: Attributes read (on the Linear, then on its parent module) for the head count under ``per_head=True``.
HEAD_COUNT_ATTRS = ("num_heads", "n_head", "n_heads", "heads", "num_attention_heads", "nhead")

_NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase,
                                        *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))
_CONVS = (nn.modules.conv._ConvNd,)  # Conv1d/2d/3d and ConvTranspose1d/2d/3d (and their lazy forms, once built)


class Route(NamedTuple):
    """Where one parameter goes: EGD (``use_egd``, whitened as ``row_blocks`` blocks of rows; with ``experts``, each
    expert of a stack ``(E, out, in…)`` by itself) or AdamW."""

    name: str
    param: Tensor
    use_egd: bool
    reason: str
    row_blocks: int = 1
    experts: bool = False
    transposed: bool = False


@dataclass
class Routing:
    """The decision of :func:`route`: one :class:`Route` per parameter, in model order (``routes``).

    ``print(routing)`` (or ``routing.table()``) shows name, shape, route and reason; ``param_groups()`` gives
    the groups :class:`EGDWithAuxAdamW` takes.
    """

    routes: list[Route]

    @property
    def whitened(self) -> list[Route]:
        """The parameters EGD whitens."""
        return [r for r in self.routes if r.use_egd]

    @property
    def aux(self) -> list[Route]:
        """The parameters the auxiliary AdamW updates."""
        return [r for r in self.routes if not r.use_egd]

    def param_groups(self, egd: Mapping[str, Any] | None = None,
                     aux: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Param groups tagged ``use_egd``: one EGD group per ``row_blocks`` value (ascending, each carrying
        ``row_blocks``), then one per ``row_blocks`` value of the expert stacks (each also carrying
        ``"experts": True``), then one AdamW group; empty groups are left out.  ``egd`` and ``aux`` add keys to the
        EGD and the AdamW groups (e.g. ``aux={"weight_decay": 0.1}``)."""
        extra = {True: dict(egd or {}), False: dict(aux or {})}
        for field, keys in (("egd", extra[True]), ("aux", extra[False])):
            bad = sorted(set(keys) & {"params", "use_egd", "row_blocks", "experts", "transposed"})
            check(not bad, field, keys, f"must not set {', '.join(bad)} (the routing sets them)")
        by_blocks: dict[tuple[bool, bool, int], list[Tensor]] = {}
        for r in self.whitened:
            by_blocks.setdefault((r.experts, r.transposed, r.row_blocks), []).append(r.param)
        groups = [{"params": by_blocks[e, t, n], "use_egd": True, "row_blocks": n,
                   **({"experts": True} if e else {}), **({"transposed": True} if t else {}), **extra[True]}
                  for e, t, n in sorted(by_blocks)]
        if self.aux:
            groups.append({"params": [r.param for r in self.aux], "use_egd": False, **extra[False]})
        return groups

    def table(self) -> str:
        """A readable summary: one line per parameter (name, shape, route, reason), totals first."""
        def count(routes: list[Route]) -> str:
            n = len(routes)
            return f"{n} parameter{'s' * (n != 1)} ({sum(r.param.numel() for r in routes):,} elements)"

        rows = [("name", "shape", "route", "reason")]
        for r in self.routes:
            shape = "×".join(map(str, r.param.shape)) or "scalar"
            where = ("EGD" + (f" ×{r.row_blocks} blocks" if r.row_blocks > 1 else "")
                     + (f" ×{r.param.shape[0]} experts" if r.experts else "")
                     + (" (transposed)" if r.transposed else "")) if r.use_egd else "AdamW"
            rows.append((r.name, shape, where, r.reason))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [f"EGD: {count(self.whitened)}; AdamW: {count(self.aux)}"]
        lines += ["  ".join([*(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)), row[3]]).rstrip()
                  for row in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _patterns(field: str, value: str | Iterable[str]) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    check(all(isinstance(p, str) for p in items), field, value, "must be a list of fnmatch patterns (strings)",
          TypeError)
    return items


def _head_count(model: nn.Module, module_name: str) -> int | None:
    """The head count of the attention layer that owns the Linear/MHA ``module_name``: the first positive int
    among :data:`HEAD_COUNT_ATTRS` on that module, then on its parent."""
    names = [module_name] + ([module_name.rpartition(".")[0]] if module_name else [])
    for name in names:
        module = model.get_submodule(name)
        for attr in HEAD_COUNT_ATTRS:
            value = getattr(module, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _auto_head(model: nn.Module) -> str | None:
    """The module name of the output head under ``head="auto"`` (module docstring), or None."""
    modules = dict(model.named_modules())
    linears = [n for n, m in modules.items() if n and isinstance(m, nn.Linear)
               and not isinstance(modules[n.rpartition(".")[0]], nn.MultiheadAttention)]
    if not linears:
        return None
    name = linears[-1]
    parent = name.rpartition(".")[0]
    if "." not in name or name.rpartition(".")[2] in HEAD_NAMES or parent.rpartition(".")[2] in HEAD_NAMES:
        return name
    return None


class ParamInfo(NamedTuple):
    """One parameter of a model as :func:`route` sees it: every name it has (``names[0]`` is the one listed; more
    than one: tied), the module that owns it under that name and that module's name."""

    names: list[str]
    module_name: str
    module: nn.Module
    param: Tensor

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def key(self) -> str:
        """The attribute name in its module (``weight``, ``bias``, ``in_proj_weight``, …)."""
        return self.name.rpartition(".")[2]


def model_params(model: nn.Module) -> list[ParamInfo]:
    """Every parameter of ``model`` once, in model order (``named_parameters(remove_duplicate=False)``), with all
    its names (a tied tensor has several) and its owner under the first."""
    names: dict[int, list[str]] = {}
    owner: dict[str, tuple[str, nn.Module]] = {}
    params: dict[int, Tensor] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for key, p in module._parameters.items():
            if p is None:
                continue
            name = f"{module_name}.{key}" if module_name else key
            owner[name] = (module_name, module)
            names.setdefault(id(p), []).append(name)
            params[id(p)] = p
    first = dict.fromkeys(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    return [ParamInfo(names[pid], *owner[names[pid][0]], params[pid]) for pid in first]


def head_modules(model: nn.Module, head: str | None) -> tuple[set[str], str]:
    """The module names of the output head under ``head`` (``"auto"``, None or a pattern) and the reason words."""
    if head == "auto":
        found = _auto_head(model)
        where = "a top-level module" if found is not None and "." not in found else "named like a head"
        return ({found} if found is not None else set()), f"output head (head='auto': the last nn.Linear, {where})"
    if head is None:
        return set(), ""
    found_all = {n for n, _ in model.named_modules() if fnmatch.fnmatchcase(n, head)}
    check(bool(found_all), "head", head, "matches no module name of the model (e.g. 'lm_head', 'fc')")
    return found_all, f"output head (head={head!r})"


def stored_in_out(p: ParamInfo) -> bool:
    """Whether ``p`` is the weight of a Hugging Face ``Conv1D`` (GPT-2's projections), a Linear stored ``(in, out)``:
    duck-typed (class name ``Conv1D``, an int ``nf`` equal to the weight's second dimension), as this package does
    not import transformers; ``torch.nn.Conv1d`` is another class."""
    module = p.module
    nf = getattr(module, "nf", None)
    return (type(module).__name__ == "Conv1D" and not isinstance(module, _CONVS) and p.key == "weight"
            and p.param.ndim == 2 and isinstance(nf, int) and p.param.shape[1] == nf)


def classify(p: ParamInfo, head_why: str | None) -> tuple[str, bool]:
    """Rules 3–12 of the module docstring for a parameter no ``aux=``/``whiten=`` pattern decided: the reason and
    whether EGD whitens it.  ``head_why``: the reason words when ``p`` belongs to the output head, else None."""
    module, key, ndim = p.module, p.key, p.param.ndim
    kind = type(module).__name__
    if len(p.names) > 1:
        return f"tied: the same tensor as {', '.join(map(repr, p.names[1:]))}", False
    if head_why is not None:
        return head_why, False
    if isinstance(module, _NORMS):
        return f"{kind} {key}", False
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return f"{kind} table", False
    if isinstance(module, nn.MultiheadAttention) and key in ("bias_k", "bias_v"):
        return f"MultiheadAttention {key}", False
    if ndim < 2:
        return "< 2 dims (bias or gain)", False
    if isinstance(module, nn.MultiheadAttention) and key.endswith("proj_weight"):
        return f"MultiheadAttention {key}", True
    if isinstance(module, nn.Linear) and key == "weight":
        return f"{kind} weight", True
    if isinstance(module, _CONVS) and key == "weight":
        return f"{kind} kernel, whitened as {p.param.shape[0]}×{math.prod(p.param.shape[1:])}", True
    if stored_in_out(p):
        return f"{kind} weight (a Linear stored in×out: whitened as its transpose)", True
    return f"{ndim}-D parameter of {kind} (not a known module type; whiten= to whiten it)", False


def _matching(patterns: Iterable[str], names: list[str]) -> str | None:
    """The first pattern that matches any of ``names``."""
    return next((pat for pat in patterns if any(fnmatch.fnmatchcase(n, pat) for n in names)), None)


def fused_blocks(model: nn.Module, p: ParamInfo, fused: Mapping[str, int] | None, per_head: bool,
                 used: set[str]) -> tuple[int, str]:
    """The row blocks EGD whitens the whitened parameter ``p`` as, and the words for its reason ("" for 1).

    ``fused``: the explicit ``fused=`` of :func:`route` (exact counts; the patterns it uses are added to
    ``used``), or None for :data:`DEFAULT_FUSED` (3 blocks, only for an ``nn.Linear`` of shape (3·d) × d or a
    ``Conv1D`` stored d × (3·d), per head with ``per_head``); ``nn.MultiheadAttention``'s ``in_proj_weight`` is
    fused unless ``fused`` says otherwise.  A ``Conv1D``'s blocks are those of its transpose (its columns).
    """
    name, shape = p.name, p.param.shape
    linear = isinstance(p.module, nn.Linear)
    if stored_in_out(p):  # whitened as its transpose: blocks of the transpose's rows
        shape, linear = p.param.shape[::-1], True
    own = _matching(fused, p.names) if fused is not None else None
    if fused is not None and own is not None:
        n = fused[own]
        used.add(own)
        check(shape[0] % n == 0, f"fused[{own!r}]", n, f"must divide the {shape[0]} rows of {name!r}"
              + (" (stored in×out: the rows of its transpose, its columns)" if shape != p.param.shape else ""))
        return n, f"fused (fused[{own!r}] = {n})" if n > 1 else ""
    is_mha = isinstance(p.module, nn.MultiheadAttention) and name.endswith("in_proj_weight")
    pattern = None if fused is not None else _matching(DEFAULT_FUSED, p.names)
    if not is_mha and (pattern is None or not linear):
        return 1, ""
    if not is_mha and shape[0] != 3 * shape[1]:
        return 1, f"matches {pattern!r} but {'×'.join(map(str, shape))} is not (3·d)×d: whitened as one matrix"
    n, what = 3, "fused QKV" + (f" ({pattern!r})" if pattern is not None and not is_mha else "")
    if per_head:
        heads = _head_count(model, p.module_name)
        check(heads is not None and shape[0] % (3 * heads) == 0, "per_head", per_head,
              f"cannot find the head count of {name!r} (an int attribute {', '.join(HEAD_COUNT_ATTRS)} on "
              f"{p.module_name!r} or its parent, dividing its rows); give its blocks yourself: "
              f"fused={{{name!r}: 3 * heads}}")
        n, what = 3 * heads, f"{what} per head ({heads} heads)"
    return n, f"{what}, {n} {'column' if shape != p.param.shape else 'row'} blocks"


def check_patterns_used(aux: list[str], whiten: list[str], fused: Mapping[str, int] | None,
                        used: Mapping[str, set[str]], whiten_small: set[str], example: str) -> None:
    """Every pattern of ``aux=``, ``whiten=`` and an explicit ``fused=`` must have matched (``used[field]``): a
    ValueError names the first that did not (a ``whiten=`` pattern in ``whiten_small`` matched only parameters
    with < 2 dims; ``example`` is a parameter name of the model, for the message)."""
    for field, patterns in (("aux", aux), ("whiten", whiten)):
        for pattern in patterns:
            small = field == "whiten" and pattern in whiten_small
            check(pattern in used[field], field, pattern,
                  "matches only parameters with < 2 dims (EGD whitens matrices; biases and gains go to AdamW)"
                  if small else f"matches no parameter name of the model (names look like {example!r})")
    for pattern in fused or ():
        check(pattern in used["fused"], "fused", pattern, "matches no parameter that EGD whitens")


def route(
    model: nn.Module,
    *,
    whiten: str | Iterable[str] = (),
    aux: str | Iterable[str] = (),
    fused: Mapping[str, int] | None = None,
    per_head: bool = False,
    head: str | None = "auto",
    experts: str | Iterable[str] = (),
) -> Routing:
    """Decide for every parameter of ``model`` whether EGD whitens it or the auxiliary AdamW updates it.

    The rules, the head rule and the fused layouts are in the module docstring (:mod:`egalitarian.routing`).
    The parts: :func:`model_params` (every parameter once, ties found), :func:`head_modules`, the ``aux=`` and
    ``whiten=`` patterns, :func:`classify` (rules 3–11), :func:`fused_blocks` (row blocks of a whitened
    parameter) and :func:`check_patterns_used`.

    Args:
        model: any ``nn.Module``; every parameter is listed once (``named_parameters(remove_duplicate=False)``
            finds ties: a tied parameter is listed under its first name and goes to AdamW).
        whiten: fnmatch patterns on parameter names that EGD whitens whatever the rules say (≥ 2-D only).
        aux: fnmatch patterns on parameter names that go to AdamW whatever the rules say; wins over ``whiten``.
        fused: fnmatch pattern → number of row blocks for fused projections; ``None``: :data:`DEFAULT_FUSED`.
        per_head: whiten fused QKV projections per head (3·heads blocks) instead of per Q, K, V (3 blocks).
        head: ``"auto"``, ``None`` (no head rule) or an fnmatch pattern on module names.
        experts: fnmatch patterns on parameter names of expert stacks ``(E, out, in…)`` (≥ 3 dims): EGD whitens
            each expert's ``(out, in·…)`` by itself (rule 2); ``aux`` wins over it, it wins over ``whiten``.
    """
    check(isinstance(model, nn.Module), "model", type(model).__name__, "must be a torch.nn.Module", TypeError)
    whiten_patterns, aux_patterns = _patterns("whiten", whiten), _patterns("aux", aux)
    expert_patterns = _patterns("experts", experts)
    check(isinstance(per_head, bool), "per_head", per_head, "must be True or False")
    check(head is None or isinstance(head, str), "head", head, "must be 'auto', None or a module name pattern")
    for pattern, n in (fused or {}).items():
        check(isinstance(pattern, str), "fused", fused, "must map fnmatch patterns (strings) to row-block counts",
              TypeError)
        check(isinstance(n, int) and not isinstance(n, bool) and n >= 1, f"fused[{pattern!r}]", n,
              "must be an int >= 1 (the number of row blocks)")
    fused = dict(fused) if fused is not None else None
    params = model_params(model)
    heads, head_why = head_modules(model, head)
    used: dict[str, set[str]] = {"whiten": set(), "aux": set(), "fused": set(), "experts": set()}
    whiten_small: set[str] = set()
    routes: list[Route] = []
    for p in params:
        check(not isinstance(p.param, nn.parameter.UninitializedParameter), "model", p.name,
              "has an uninitialized (lazy) parameter: run one forward pass before routing")
        a, w = _matching(aux_patterns, p.names), _matching(whiten_patterns, p.names)
        x = _matching(expert_patterns, p.names)
        if a is not None:
            used["aux"].add(a)
            for field, pattern in (("whiten", w), ("experts", x)):
                if pattern is not None:
                    used[field].add(pattern)
            lost = w or x
            routes.append(Route(p.name, p.param, False, f"aux={a!r}" + (f" (wins over {'whiten' if w else 'experts'}"
                                                                         f"={lost!r})" if lost else "")))
            continue
        if x is not None:
            shape = tuple(p.param.shape)
            check(len(shape) >= 3, "experts", x, f"matches {p.name!r} of shape {shape}: an expert stack has >= 3 "
                  "dims (experts, out, in)")
            used["experts"].add(x)
            routes.append(Route(p.name, p.param, True, f"experts={x!r}: {shape[0]} experts, each whitened as "
                                f"{shape[1]}×{math.prod(shape[2:])}", 1, True))
            continue
        if w is not None and p.param.ndim >= 2:
            used["whiten"].add(w)
            reason, egd = f"whiten={w!r}", True
        else:
            if w is not None:
                whiten_small.add(w)
            in_head = any(p.module_name == h or p.module_name.startswith(h + ".") for h in heads)
            reason, egd = classify(p, head_why if in_head else None)
        if egd:
            n, words = fused_blocks(model, p, fused, per_head, used["fused"])
            routes.append(Route(p.name, p.param, True, reason + (f"; {words}" if words else ""), n,
                                transposed=stored_in_out(p)))
        else:
            routes.append(Route(p.name, p.param, False, reason))
    example = params[0].name if params else "layer.weight"
    check_patterns_used(aux_patterns, whiten_patterns, fused, used, whiten_small, example)
    for pattern in expert_patterns:
        check(pattern in used["experts"], "experts", pattern,
              f"matches no parameter name of the model (names look like {example!r})")
    return Routing(routes)


class EGDWithAuxAdamW(WithAuxAdamW):
    r"""EGD for the matrices a :class:`Routing` whitens, AdamW for the rest: one ``torch.optim.Optimizer``.

    ``EGDWithAuxAdamW(route(model), lr=0.02)`` (or ``egd_for(model, lr=0.02)``) has one list of param groups,
    each tagged ``use_egd=True/False`` and carrying its own hyperparameters under the names
    :class:`egalitarian.optim.EGD` and ``torch.optim.AdamW`` read (an EGD group's ``lr`` is ``lr``, an AdamW
    group's is ``aux_lr``), so LR schedulers reach both parts.  ``step()`` applies EGD's update to the
    ``use_egd`` groups and AdamW's to the others.  The inner ``EGD`` (``.egd``) and ``torch.optim.AdamW``
    (``.adamw``; ``None`` while no group uses one) only do the arithmetic: they work on this optimizer's group
    dicts and ``state``, so there is one copy of each, and ``state_dict()`` is a plain torch optimizer state
    dict that continues a run bit-identically after ``load_state_dict`` (the shared machinery:
    :class:`egalitarian.optim.WithAuxAdamW`).

    The EGD groups step exactly as ``EGD(groups, lr=lr, **egd_kwargs)``: every EGD keyword (``momentum``,
    ``nesterov``, ``weight_decay``, ``weight_decay_mode``, ``momentum_position``, ``scale``, ``rms_target``,
    ``backend``, ``rtol``, ``clamp_eps``, …) goes there unchanged, with EGD's defaults and EGD's equations (see
    :class:`egalitarian.optim.EGD`).  A group's ``row_blocks`` (set by the routing for fused QKV matrices)
    whitens its matrices as that many separate blocks of rows.  The AdamW groups step exactly as
    ``torch.optim.AdamW(groups, lr=aux_lr, betas=aux_betas, eps=aux_eps, weight_decay=aux_weight_decay)``.

    ``lr`` and ``aux_lr`` may be 0-d floating tensors (``torch.optim``'s tensor lr: a scheduler fills them in
    place, and a compiled step follows without recompiling; each is shared by the groups that take it as a
    default, as in ``torch.optim``).  ``maximize=True`` (EGD's keyword) ascends in every group, EGD's and AdamW's:
    both negate the gradient before everything else.

    A step is all or nothing, as EGD's: with ``nonfinite="raise"`` (EGD's keyword and default, here for every
    group, AdamW's too) every gradient is checked before anything changes, and a sparse gradient anywhere is a
    RuntimeError before anything changes.  ``set_whitening(on)`` and ``whitened_params()`` act on the EGD
    groups (the paper's switch-off rule).

    Args:
        params: a :class:`Routing`, or param-group dicts each tagged ``use_egd`` (``Routing.param_groups()``).
        lr: EGD's step size (required, as for EGD).
        aux_lr, aux_betas, aux_eps, aux_weight_decay: the AdamW groups' ``lr``, ``betas``, ``eps``,
            ``weight_decay``.
        **egd_kwargs: any keyword of :class:`egalitarian.optim.EGD`.
    """

    tag, engine = "use_egd", "EGD"

    def __init__(
        self,
        params: Routing | Iterable[dict[str, Any]],
        lr: float | Tensor,
        *,
        aux_lr: float | Tensor = 3e-4,
        aux_betas: tuple[float, float] = (0.9, 0.95),
        aux_eps: float = 1e-8,
        aux_weight_decay: float = 0.0,
        **egd_kwargs: Any,
    ) -> None:
        accepted = [k for k in inspect.signature(EGD).parameters if k not in ("params", "lr")]
        for k in egd_kwargs:
            check(k in accepted, k, egd_kwargs[k], f"is not a keyword of EGD (EGD takes {', '.join(accepted)})",
                  TypeError)
        aux_defaults = dict(lr=aux_lr, betas=tuple(aux_betas), eps=aux_eps, weight_decay=aux_weight_decay)
        egd_defaults = EGD([torch.zeros(1)], lr, **egd_kwargs).defaults  # EGD validates its own keywords
        # the engine's own default lr: a copy of a tensor lr, which a scheduler may fill with 0 before a reload
        self._egd_kwargs = {"lr": lr.detach().clone() if isinstance(lr, Tensor) else lr, **egd_kwargs}
        self.routing = params if isinstance(params, Routing) else None
        if isinstance(params, Routing):
            groups = params.param_groups()
        else:
            check(not isinstance(params, (Tensor, nn.Module)), "params", type(params).__name__,
                  "must be a Routing (route(model)) or param-group dicts tagged use_egd", TypeError)
            groups = list(params)
            check(all(isinstance(g, dict) for g in groups), "params", "a list of tensors",
                  "must be a Routing (route(model)) or param-group dicts tagged use_egd (each parameter goes to "
                  "EGD or to AdamW)", TypeError)
        check(bool(groups), "params", [], "must not be empty (nothing to optimize)")
        self.egd: EGD | None = None
        self.adamw: torch.optim.AdamW | None = None
        shared = {k: egd_defaults[k] for k in ("nonfinite", "maximize")}  # EGD's keywords, for AdamW's groups too
        super().__init__(groups, egd_defaults, {**aux_defaults, **shared}, "aux_")

    def matrix_engines(self) -> list[Engine]:
        return [("egd", functools.partial(_EGDEngine, **self._egd_kwargs), lambda g: True)]

    def check_group(self, group: dict[str, Any]) -> None:
        check_egd_group(group)  # also: row_blocks must divide the rows of every matrix of the group

    def set_whitening(self, on: bool) -> bool:
        """Turn whitening on/off in the EGD groups first chosen for it (the paper's switch-off rule); ``True``."""
        return self.egd.set_whitening(on) if self.egd is not None else True

    def whitened_params(self) -> list[Tensor]:
        """The ≥ 2-D parameters whose gradient is whitened (also while :meth:`set_whitening` has it off)."""
        return self.egd.whitened_params() if self.egd is not None else []


class _EGDEngine(EGD):
    """The EGD of an :class:`EGDWithAuxAdamW`, over its groups: the owner validated each group when it was added and
    checks every gradient before a step (:attr:`EGD._checked_by_owner`)."""

    _checked_by_owner = True


_ROUTE_KEYWORDS = frozenset(k for k, p in inspect.signature(route).parameters.items() if p.kind is p.KEYWORD_ONLY)


def egd_for(model: nn.Module, lr: float, **kwargs: Any) -> EGDWithAuxAdamW:
    """``EGDWithAuxAdamW(route(model, whiten=..., aux=..., fused=..., per_head=..., head=..., experts=...), lr,
    **kwargs)``.

    The keywords of :func:`route` (``whiten``, ``aux``, ``fused``, ``per_head``, ``head``, ``experts``) go to the
    routing (so EGD's own ``whiten=True/False`` switch is not reachable here); every other keyword (``aux_lr``,
    ``momentum``, ``weight_decay``, ``scale``, …) goes to :class:`EGDWithAuxAdamW`.  ``print(opt.routing)``
    shows where each parameter went.
    """
    routing = route(model, **{k: v for k, v in kwargs.items() if k in _ROUTE_KEYWORDS})
    if not routing.whitened:  # said once per call site (the default warnings filter), not silently
        warnings.warn(f"egd_for: {type(model).__name__} has no matrix EGD whitens; every parameter goes to AdamW, "
                      "so this is plain AdamW (print(opt.routing) says why)", stacklevel=2)
    return EGDWithAuxAdamW(routing, lr, **{k: v for k, v in kwargs.items() if k not in _ROUTE_KEYWORDS})

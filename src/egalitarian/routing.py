r"""EGD on any model in one call: which parameters EGD whitens, which go to an auxiliary AdamW, and one optimizer.

* :func:`route` decides, for every parameter of a model (each listed once, also when tied), whether EGD whitens
  it or AdamW updates it, with a reason; :class:`Routing` holds the decision, prints it as a table
  (``print(routing)``) and turns it into param groups.
* :class:`EGDWithAuxAdamW` is one ``torch.optim.Optimizer`` over those groups: :class:`egalitarian.optim.EGD`'s
  update for the ``use_egd=True`` groups, ``torch.optim.AdamW``'s for the others.
* :func:`egd_for` is both: ``egd_for(model, lr=0.02)``.

Routing rules, applied to each parameter in this order (the first that applies decides):

1. ``aux=`` patterns (fnmatch, on parameter names; a tied parameter matches by any of its names) → AdamW.
2. ``whiten=`` patterns → EGD (only parameters with ≥ 2 dims; aux wins when both match).
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
11. Any other ≥ 2-D parameter (a raw ``nn.Parameter`` such as a ViT's ``pos_embed``, or the weight of a module
    type not listed here, e.g. Hugging Face's ``Conv1D``, which stores ``(in, out)``) → AdamW, with a reason
    naming its module type; ``whiten=`` puts it in EGD.

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
  which these layouts are.  A match of another shape (grouped-query attention's (h + 2·kv)·d_h × h·d_h, say) is
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

import copy
import fnmatch
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from .errors import check
from .linalg import AUTO, backend_alias
from .optim import EGD, _check_finite, _evaluate_closure, _switch_whitening, _whitened

__all__ = ["DEFAULT_FUSED", "HEAD_NAMES", "EGDWithAuxAdamW", "Route", "Routing", "egd_for", "route"]

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
    """Where one parameter goes: EGD (``use_egd``, whitened as ``row_blocks`` blocks of rows) or AdamW."""

    name: str
    param: Tensor
    use_egd: bool
    reason: str
    row_blocks: int = 1


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
        ``row_blocks``), then one AdamW group; empty groups are left out.  ``egd`` and ``aux`` add keys to the
        EGD and the AdamW groups (e.g. ``aux={"weight_decay": 0.1}``)."""
        extra = {True: dict(egd or {}), False: dict(aux or {})}
        for field, keys in (("egd", extra[True]), ("aux", extra[False])):
            bad = sorted(set(keys) & {"params", "use_egd", "row_blocks"})
            check(not bad, field, keys, f"must not set {', '.join(bad)} (the routing sets them)")
        by_blocks: dict[int, list[Tensor]] = {}
        for r in self.whitened:
            by_blocks.setdefault(r.row_blocks, []).append(r.param)
        groups = [{"params": by_blocks[n], "use_egd": True, "row_blocks": n, **extra[True]} for n in sorted(by_blocks)]
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
            where = ("EGD" + (f" ×{r.row_blocks} blocks" if r.row_blocks > 1 else "")) if r.use_egd else "AdamW"
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


def route(
    model: nn.Module,
    *,
    whiten: str | Iterable[str] = (),
    aux: str | Iterable[str] = (),
    fused: Mapping[str, int] | None = None,
    per_head: bool = False,
    head: str | None = "auto",
) -> Routing:
    """Decide for every parameter of ``model`` whether EGD whitens it or the auxiliary AdamW updates it.

    The rules, the head rule and the fused layouts are in the module docstring (:mod:`egalitarian.routing`).

    Args:
        model: any ``nn.Module``; every parameter is listed once (``named_parameters(remove_duplicate=False)``
            finds ties: a tied parameter is listed under its first name and goes to AdamW).
        whiten: fnmatch patterns on parameter names that EGD whitens whatever the rules say (≥ 2-D only).
        aux: fnmatch patterns on parameter names that go to AdamW whatever the rules say; wins over ``whiten``.
        fused: fnmatch pattern → number of row blocks for fused projections; ``None``: :data:`DEFAULT_FUSED`.
        per_head: whiten fused QKV projections per head (3·heads blocks) instead of per Q, K, V (3 blocks).
        head: ``"auto"``, ``None`` (no head rule) or an fnmatch pattern on module names.
    """
    check(isinstance(model, nn.Module), "model", type(model).__name__, "must be a torch.nn.Module", TypeError)
    whiten_patterns, aux_patterns = _patterns("whiten", whiten), _patterns("aux", aux)
    check(isinstance(per_head, bool), "per_head", per_head, "must be True or False")
    check(head is None or isinstance(head, str), "head", head, "must be 'auto', None or a module name pattern")
    explicit_fused = fused is not None
    fused_map = dict(DEFAULT_FUSED if fused is None else fused)
    for pattern, n in fused_map.items():
        check(isinstance(pattern, str), "fused", fused, "must map fnmatch patterns (strings) to row-block counts",
              TypeError)
        check(isinstance(n, int) and not isinstance(n, bool) and n >= 1, f"fused[{pattern!r}]", n,
              "must be an int >= 1 (the number of row blocks)")

    # every name of every parameter, its owning module and that module's name; ties share one entry
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
    ordered = [(n, p) for n, p in model.named_parameters(remove_duplicate=False)]
    first = list(dict.fromkeys(id(p) for _, p in ordered))  # model order, each parameter once

    if head == "auto":
        found = _auto_head(model)
        head_modules = {found} if found is not None else set()
        where = "a top-level module" if found is not None and "." not in found else "named like a head"
        head_why = f"output head (head='auto': the last nn.Linear, {where})"
    elif head is None:
        head_modules, head_why = set(), ""
    else:
        head_modules = {n for n, _ in model.named_modules() if fnmatch.fnmatchcase(n, head)}
        check(bool(head_modules), "head", head, "matches no module name of the model (e.g. 'lm_head', 'fc')")
        head_why = f"output head (head={head!r})"

    used: dict[str, set[str]] = {"whiten": set(), "aux": set(), "fused": set()}
    whiten_small: set[str] = set()

    def matching(patterns: Iterable[str], all_names: list[str]) -> str | None:
        return next((pat for pat in patterns if any(fnmatch.fnmatchcase(n, pat) for n in all_names)), None)

    def blocks(name: str, all_names: list[str], p: Tensor, module_name: str, module: nn.Module) -> tuple[int, str]:
        """Row blocks of a whitened parameter and the words for its reason."""
        own = matching(fused_map, all_names) if explicit_fused else None
        if own is not None:
            n = fused_map[own]
            used["fused"].add(own)
            check(p.shape[0] % n == 0, f"fused[{own!r}]", n, f"must divide the {p.shape[0]} rows of {name!r}")
            return n, f"fused (fused[{own!r}] = {n})" if n > 1 else ""
        is_mha = isinstance(module, nn.MultiheadAttention) and name.endswith("in_proj_weight")
        pattern = None if explicit_fused else matching(fused_map, all_names)
        if not is_mha and (pattern is None or not isinstance(module, nn.Linear)):
            return 1, ""
        if not is_mha and p.shape[0] != 3 * p.shape[1]:
            shape = "×".join(map(str, p.shape))
            return 1, f"matches {pattern!r} but {shape} is not (3·d)×d: whitened as one matrix"
        n, what = 3, "fused QKV" + (f" ({pattern!r})" if pattern is not None and not is_mha else "")
        if per_head:
            heads = _head_count(model, module_name)
            check(heads is not None and p.shape[0] % (3 * heads) == 0, "per_head", per_head,
                  f"cannot find the head count of {name!r} (an int attribute {', '.join(HEAD_COUNT_ATTRS)} on "
                  f"{module_name!r} or its parent, dividing its rows); give its blocks yourself: "
                  f"fused={{{name!r}: 3 * heads}}")
            n, what = 3 * heads, f"{what} per head ({heads} heads)"
        return n, f"{what}, {n} row blocks"

    routes: list[Route] = []
    for pid in first:
        p = params[pid]
        all_names = names[pid]
        name = all_names[0]
        module_name, module = owner[name]
        kind = type(module).__name__
        key = name.rpartition(".")[2]
        check(not isinstance(p, nn.parameter.UninitializedParameter), "model", name,
              "has an uninitialized (lazy) parameter: run one forward pass before routing")
        a, w = matching(aux_patterns, all_names), matching(whiten_patterns, all_names)
        if a is not None:
            used["aux"].add(a)
            if w is not None:
                used["whiten"].add(w)
            routes.append(Route(name, p, False, f"aux={a!r}" + (f" (wins over whiten={w!r})" if w else "")))
            continue
        if w is not None and p.ndim >= 2:
            used["whiten"].add(w)
            n, words = blocks(name, all_names, p, module_name, module)
            routes.append(Route(name, p, True, f"whiten={w!r}" + (f"; {words}" if words else ""), n))
            continue
        if w is not None:
            whiten_small.add(w)
        in_head = any(module_name == h or module_name.startswith(h + ".") for h in head_modules)
        if len(all_names) > 1:
            others = ", ".join(map(repr, all_names[1:]))
            reason, egd = f"tied: the same tensor as {others}", False
        elif in_head:
            reason, egd = head_why, False
        elif isinstance(module, _NORMS):
            reason, egd = f"{kind} {key}", False
        elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            reason, egd = f"{kind} table", False
        elif isinstance(module, nn.MultiheadAttention) and key in ("bias_k", "bias_v"):
            reason, egd = f"MultiheadAttention {key}", False
        elif p.ndim < 2:
            reason, egd = "< 2 dims (bias or gain)", False
        elif isinstance(module, nn.MultiheadAttention) and key.endswith("proj_weight"):
            reason, egd = f"MultiheadAttention {key}", True
        elif isinstance(module, nn.Linear) and key == "weight":
            reason, egd = f"{kind} weight", True
        elif isinstance(module, _CONVS) and key == "weight":
            reason, egd = f"{kind} kernel, whitened as {p.shape[0]}×{math.prod(p.shape[1:])}", True
        else:
            reason, egd = f"{p.ndim}-D parameter of {kind} (not a known module type; whiten= to whiten it)", False
        if egd:
            n, words = blocks(name, all_names, p, module_name, module)
            routes.append(Route(name, p, True, reason + (f"; {words}" if words else ""), n))
        else:
            routes.append(Route(name, p, False, reason))

    for field, patterns in (("aux", aux_patterns), ("whiten", whiten_patterns)):
        for pattern in patterns:
            small = field == "whiten" and pattern in whiten_small
            check(pattern in used[field], field, pattern,
                  "matches only parameters with < 2 dims (EGD whitens matrices; biases and gains go to AdamW)"
                  if small else "matches no parameter name of the model (names look like "
                  f"{next(iter(owner), 'layer.weight')!r})")
    for pattern in fused_map if explicit_fused else ():
        check(pattern in used["fused"], "fused", pattern, "matches no parameter that EGD whitens")
    return Routing(routes)


_AUX_KEYS = ("lr", "betas", "eps", "weight_decay")


def _check_aux(group: Mapping[str, Any], prefix: str) -> None:
    lr, betas, eps, wd = (group[k] for k in _AUX_KEYS)
    check(isinstance(lr, (int, float)) and lr > 0, f"{prefix}lr", lr, "must be a number > 0")
    check(len(betas) == 2 and all(0 <= b < 1 for b in betas), f"{prefix}betas", betas,
          "must be two numbers in [0, 1)")
    check(eps >= 0, f"{prefix}eps", eps, "must be >= 0")
    check(wd >= 0, f"{prefix}weight_decay", wd, "must be >= 0")


class EGDWithAuxAdamW(Optimizer):
    r"""EGD for the matrices a :class:`Routing` whitens, AdamW for the rest: one ``torch.optim.Optimizer``.

    ``EGDWithAuxAdamW(route(model), lr=0.02)`` (or ``egd_for(model, lr=0.02)``) has one list of param groups,
    each tagged ``use_egd=True/False`` and carrying its own hyperparameters under the names
    :class:`egalitarian.optim.EGD` and ``torch.optim.AdamW`` read (an EGD group's ``lr`` is ``lr``, an AdamW
    group's is ``aux_lr``), so LR schedulers reach both parts.  ``step()`` applies EGD's update to the
    ``use_egd`` groups and AdamW's to the others.  The inner ``EGD`` (``.egd``) and ``torch.optim.AdamW``
    (``.adamw``; ``None`` while no group uses one) only do the arithmetic: they work on this optimizer's group
    dicts and ``state``, so there is one copy of each, and ``state_dict()`` is a plain torch optimizer state
    dict that continues a run bit-identically after ``load_state_dict``.

    The EGD groups step exactly as ``EGD(groups, lr=lr, **egd_kwargs)``: every EGD keyword (``momentum``,
    ``nesterov``, ``weight_decay``, ``weight_decay_mode``, ``momentum_position``, ``scale``, ``rms_target``,
    ``backend``, ``rtol``, ``eps``, …) goes there unchanged, with EGD's defaults and EGD's equations (see
    :class:`egalitarian.optim.EGD`).  A group's ``row_blocks`` (set by the routing for fused QKV matrices)
    whitens its matrices as that many separate blocks of rows.  The AdamW groups step exactly as
    ``torch.optim.AdamW(groups, lr=aux_lr, betas=aux_betas, eps=aux_eps, weight_decay=aux_weight_decay)``.

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

    def __init__(
        self,
        params: Routing | Iterable[dict[str, Any]],
        lr: float,
        *,
        aux_lr: float = 3e-4,
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
        _check_aux(aux_defaults, "aux_")
        self._egd_kwargs = {"lr": lr, **egd_kwargs}
        egd_defaults = EGD([torch.zeros(1)], **self._egd_kwargs).defaults  # EGD validates its own keywords
        self.group_defaults = {True: egd_defaults, False: {**aux_defaults, "nonfinite": egd_defaults["nonfinite"]}}
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
        super().__init__(groups, {})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """``use_egd`` (required) picks the update; the group's other keys override that part's defaults."""
        use_egd = param_group.get("use_egd")
        check(isinstance(use_egd, bool), "use_egd", use_egd, "must be True (EGD's update) or False (AdamW's)")
        given = dict(param_group)
        if use_egd and "method" in given:  # EGD's deprecated name of "backend", renamed as EGD does
            given["backend"] = backend_alias(given.get("backend", AUTO), given.pop("method"))
        ps = given.get("params")
        given["params"] = [ps] if isinstance(ps, Tensor) else list(ps if ps is not None else [])
        group = {**self.group_defaults[use_egd], **given}
        if use_egd:
            EGD._validate(group)  # also: row_blocks must divide the rows of every matrix of the group
        else:
            _check_aux(group, "")
        super().add_param_group(group)
        try:
            self._bind()
        except Exception:
            self.param_groups.pop()
            self._bind()
            raise

    def _bind(self) -> None:
        """(Re)build ``.egd`` and ``.adamw`` over this optimizer's own group dicts and ``state``."""
        egd_groups = [g for g in self.param_groups if g["use_egd"]]
        aux_groups = [g for g in self.param_groups if not g["use_egd"]]
        self.egd = EGD(egd_groups, **self._egd_kwargs) if egd_groups else None
        self.adamw = torch.optim.AdamW(aux_groups) if aux_groups else None  # the groups hold every hyperparameter
        for opt, groups in ((self.egd, egd_groups), (self.adamw, aux_groups)):
            if opt is not None:
                assert all(a is b for a, b in zip(opt.param_groups, groups, strict=True))  # shared, not copied
                opt.state = self.state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = _evaluate_closure(closure)
        for i, p in enumerate(p for g in self.param_groups for p in g["params"]):
            if p.grad is not None and p.grad.is_sparse:
                raise RuntimeError(f"EGDWithAuxAdamW does not support sparse gradients (params[{i}], shape "
                                   f"{tuple(p.shape)}); nothing was changed")
        _check_finite(self.param_groups, self.group_defaults[True]["nonfinite"])
        for opt in (self.egd, self.adamw):
            if opt is not None:
                opt.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(copy.deepcopy(state_dict))  # torch's load would alias the caller's tensors
        self._bind()  # torch's load replaced the group dicts and the state

    def set_whitening(self, on: bool) -> bool:
        """Turn whitening on/off in the EGD groups first chosen for it (the paper's switch-off rule); ``True``."""
        _switch_whitening([g for g in self.param_groups if g["use_egd"]], "whiten", on)
        return True

    def whitened_params(self) -> list[Tensor]:
        """The ≥ 2-D parameters whose gradient is whitened (also while :meth:`set_whitening` has it off)."""
        return _whitened([g for g in self.param_groups if g["use_egd"]], "whiten")


def egd_for(
    model: nn.Module,
    lr: float,
    *,
    whiten: str | Sequence[str] = (),
    aux: str | Sequence[str] = (),
    fused: Mapping[str, int] | None = None,
    per_head: bool = False,
    head: str | None = "auto",
    **kwargs: Any,
) -> EGDWithAuxAdamW:
    """``EGDWithAuxAdamW(route(model, whiten=..., aux=..., fused=..., per_head=..., head=...), lr, **kwargs)``.

    The routing keywords are those of :func:`route` (so EGD's own ``whiten=True/False`` switch is not reachable
    here); every other keyword (``aux_lr``, ``momentum``, ``weight_decay``, ``scale``, …) goes to
    :class:`EGDWithAuxAdamW`.  ``print(opt.routing)`` shows where each parameter went.
    """
    routing = route(model, whiten=whiten, aux=aux, fused=fused, per_head=per_head, head=head)
    return EGDWithAuxAdamW(routing, lr, **kwargs)

"""egalitarian: Egalitarian Gradient Descent (EGD) and a laboratory for grokking.

EGD (Saheb Pasand & Dohmatob, ICLR 2026, arXiv 2510.04930) replaces each weight-matrix gradient ``G`` by its
polar factor ``(G Gᵀ)^(-1/2) G = U Vᵀ`` so that every principal direction moves at the same speed.

Main entry points:
    egalitarian.polar          the polar factor, with exact and fast backends (linalg)
    egalitarian.EGD            the optimizer (torch.optim style)
    egalitarian.Preconditioned any gradient transform in front of any torch optimizer (e.g. EGD+AdamW)
    egalitarian.egd_for        EGD on any model in one call: route(model) + EGDWithAuxAdamW (routing)
    egalitarian.transforms     composable gradient transforms (whiten, momentum, ...)
    egalitarian.baselines      the methods EGD is compared with (Grokfast, column norm, ⊥Grad, Muon+AdamW)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["EGD", "EGDWithAuxAdamW", "Preconditioned", "Routing", "baselines", "egd_for", "polar", "route",
           "transforms", "__version__"]

# The entry points are imported on first use (PEP 562), so that `import egalitarian.cli` does not import torch:
# the `egd` command then starts its own error handling (Ctrl-C during start-up: exit 130, one line) first.
_LAZY = {"EGD": ".optim", "Preconditioned": ".optim", "polar": ".linalg", "baselines": None, "transforms": None,
         "route": ".routing", "Routing": ".routing", "EGDWithAuxAdamW": ".routing", "egd_for": ".routing"}

if TYPE_CHECKING:
    from . import baselines, transforms
    from .linalg import polar
    from .optim import EGD, Preconditioned
    from .routing import EGDWithAuxAdamW, Routing, egd_for, route


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _LAZY[name]
    value = (importlib.import_module(f".{name}", __name__) if module is None
             else getattr(importlib.import_module(module, __name__), name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

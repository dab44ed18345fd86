"""egalitarian: Egalitarian Gradient Descent (EGD) and a laboratory for grokking.

EGD (Saheb Pasand & Dohmatob, ICLR 2026, arXiv 2510.04930) replaces each weight-matrix gradient ``G`` by its
polar factor ``(G Gᵀ)^(-1/2) G = U Vᵀ`` so that every principal direction moves at the same speed.

Main entry points:
    egalitarian.polar          the polar factor, with exact and fast backends (linalg)
    egalitarian.EGD            the optimizer (torch.optim style)
    egalitarian.Preconditioned any gradient transform in front of any torch optimizer (e.g. EGD+AdamW)
    egalitarian.transforms     composable gradient transforms (whiten, momentum, ...)
    egalitarian.baselines      the methods EGD is compared with (Grokfast, column norm, ⊥Grad, Muon+AdamW)
"""

from . import baselines, transforms
from .linalg import polar
from .optim import EGD, Preconditioned

__version__ = "0.1.0"
__all__ = ["EGD", "Preconditioned", "baselines", "polar", "transforms", "__version__"]

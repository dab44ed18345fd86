"""``egd reproduce NAME``: the EGD paper's artifacts (Saheb Pasand & Dohmatob, ICLR 2026, arXiv 2510.04930), with
seeds and error bars where they are sweeps, next to the paper's numbers.

Every artifact is declared once in :data:`ARTIFACTS` (its name, what it reproduces, the options it takes) and made
by one pipeline, plan → run → analyse → write (:mod:`~egalitarian.reproduce.base`), whose four steps its module
defines:

* ``table2``, ``table3``, ``table4``, ``table6``, ``table7`` (:mod:`~egalitarian.reproduce.paper_tables`): sweeps
  over the paper's recipes into ``OUT/TABLE.sqlite``, ours (median [IQR] over seeds) next to the paper's single
  runs;
* ``table5`` (:mod:`~egalitarian.reproduce.table5`): the average speed-ups over the tasks of Tables 2–4, from their
  stores;
* ``table8`` (:mod:`~egalitarian.reproduce.table8`): App. E's label shuffling, a sweep of its own;
* ``fig6`` (:mod:`~egalitarian.reproduce.fig6`): the linear toy model of §3 and App. A
  (:mod:`~egalitarian.reproduce.toy_model`), checked numerically;
* ``appf`` (:mod:`~egalitarian.reproduce.appf`): App. F, where EGD's and SGD's solutions end up, a sweep of its own.

A sweep is resumable (rerun the command to continue; more ``--seeds`` continue the same store); ``--quick`` is a
smoke version that finishes in minutes on 2 cores, into ``-quick`` stores and files.

    from egalitarian.reproduce import reproduce
    reproduce("table2", quick=True, out="reproduce")
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import SEEDS_ALLOWED, Artifact, Options, Plan, RunResult, check_options, make, parse_seeds

__all__ = ["ARTIFACTS", "SEEDS_ALLOWED", "Artifact", "Options", "Plan", "RunResult", "get", "listing", "names",
           "parse_seeds", "reproduce"]

_SWEEP = (5, 2)  # default seeds of the paper's tables: 5, 2 with --quick

ARTIFACTS: dict[str, Artifact] = {a.name: a for a in (
    Artifact("table2", "modular addition, p = 79, 97, 127: epochs to 95% test accuracy", "paper_tables", _SWEEP),
    Artifact("table3", "modular multiplication, p = 79, 97, 127", "paper_tables", _SWEEP),
    Artifact("table4", "sparse parity, k = 2, 3, 4", "paper_tables", _SWEEP),
    Artifact("table5", "the average speed-ups over the tasks of Tables 2-4, from their stores in --out", "table5"),
    Artifact("table6", "MNIST-1k MLP: steps to 85% (genuine MNIST from `egd data mnist`, else a stand-in)",
             "paper_tables", _SWEEP),
    Artifact("table7", "the Grokfast transformer, a·b mod 97: steps to 95%", "paper_tables", _SWEEP),
    Artifact("table8", "App. E, label shuffling: a small CNN under Adam, RAdam, RMSprop with and without EGD, "
             "training accuracy after the labels are reshuffled", "table8", (3, 2), ("fashion-mnist", "cifar10")),
    Artifact("fig6", "the theory's linear toy model (§3, App. A): a figure and a table of checks", "fig6"),
    Artifact("appf", "App. F, where the solutions end up: EGD vs SGD on mod-add p=97, distances travelled, norms, "
             "spectra", "appf", (3, 1)),
)}
"""Every artifact of ``egd reproduce``, in the paper's order."""


def names() -> list[str]:
    """The artifacts' names, in the paper's order."""
    return list(ARTIFACTS)


def listing(width: int = 96) -> str:
    """``egd reproduce --help``'s list: each artifact, what it reproduces and the options it takes."""
    lines = ["artifacts (NAME):"]
    for a in ARTIFACTS.values():
        takes = [f"A sweep: --seeds (default {a.seeds[0]}, {a.seeds[1]} with --quick), --workers"] if a.seeds else []
        if a.datasets:
            takes.append(f"--dataset {' | '.join(a.datasets)} (default {a.datasets[0]})")
        text = f"{a.what}. {'; '.join(takes) if takes else 'Takes only --quick and --out'}."
        lines += textwrap.wrap(text, width, initial_indent=f"  {a.name:<8}", subsequent_indent=" " * 10)
    return "\n".join(lines)


def get(name: str) -> Artifact:
    """The artifact called ``name``; a ConfigError listing every artifact otherwise."""
    if name not in ARTIFACTS:
        raise ConfigError(f"NAME = {name!r}: allowed: {', '.join(ARTIFACTS)}")
    return ARTIFACTS[name]


def reproduce(name: str, *, quick: bool = False, seeds: int | str | list[int] | None = None,
              workers: int | None = None, out: str | Path = "reproduce", dataset: str | None = None) -> dict[str, Any]:
    """Make the artifact ``name`` (run or continue its sweep, analyse, print and write its table); returns its
    numbers and the paths it wrote.  An option it does not take (``None``: not given) is a ConfigError.

    ``seeds``: a count, a range ``"A-B"`` or a list (:func:`parse_seeds`); default per artifact (``egd reproduce
    --help``)."""
    from ..io import make_dir

    artifact = get(name)
    options = check_options(artifact, Options(quick, seeds, workers, out, dataset), ARTIFACTS)
    make_dir(out, "--out")  # one line naming a file in the way, before anything is planned
    return make(artifact, options)

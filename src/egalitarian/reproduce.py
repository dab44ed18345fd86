"""``egd reproduce TABLE``: the EGD paper's tables, with seeds and error bars, next to the paper's numbers.

Each table is a sweep over the paper's recipes (:mod:`egalitarian.recipes`): settings × methods × seeds,
run with the local executor into ``reproduce/TABLE.sqlite`` (resumable: rerun the command to continue). It
prints, per setting and method, our median [IQR] over the seeds that grokked, how many grokked, and the
paper's single-run number; then writes the report (``reproduce/TABLE-report/``).

Tables (arXiv 2510.04930):

* ``table2`` modular addition, p ∈ {79, 97, 127}, epochs to 95% test accuracy
* ``table3`` modular multiplication, p ∈ {79, 97, 127}
* ``table4`` sparse parity, k ∈ {2, 3, 4}
* ``table6`` MNIST-1k MLP, steps to 85% (genuine MNIST from ``egd data mnist``; without it the sklearn-digits
  stand-in, not comparable: the report's "data" column says which ran)
* ``table7`` the Grokfast transformer, a·b mod 97, steps to 95%

Not sweeps (``egd reproduce NAME`` runs them too): ``table5``, the average speed-ups over the tasks of Tables 2–4,
computed from their stores (:mod:`egalitarian.table5`); ``fig6``, the theory's linear toy model checked
numerically (:mod:`egalitarian.theory`).  And ``appf``, App. F's "where the solutions end up" (issue #16): a sweep of
its own (EGD and SGD on mod-add p = 97 with the ``travel`` diagnostic, Table 2's stop rule, 3 seeds, into
``reproduce/appf.sqlite``), then the distances travelled, the EGD–SGD distance, the norms and the spectra of the
final weights: a figure and a table (:mod:`egalitarian.appf`).  And ``table8``, App. E's label shuffling (issue #15): a
sweep of its own (a small CNN under Adam, RAdam and RMSprop with and without EGD, the training labels reshuffled
after 1, 3, 4 or 9 epochs, into ``reproduce/table8.sqlite``), then the mean training accuracy over the 10 epochs
after the shuffle, ours next to the paper's (:mod:`egalitarian.table8`; ``--dataset fashion-mnist|cifar10``).

``--seeds`` is a count N (seeds 0..N-1), a range ``5-9`` (inclusive) or a list ``0,3,7``; the store does not
depend on it, so more seeds continue the same store.

``--quick`` is a smoke version that finishes in minutes on 2 cores: 2 seeds, the smallest setting, EGD and
SGD (or the table's baseline) only, and a capped budget, so slow baselines end censored (``> budget``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import load_config
from .errors import ConfigError, check
from .sweep import Store, Sweep, expand, group_stats, run_sweep
from .sweep.spec import group_label


@dataclass(frozen=True)
class Table:
    title: str
    unit: str  # "epochs" or "steps"
    settings: dict[str, str]  # setting label -> recipe
    paper: dict[tuple[str, str], int | None]  # (setting, method) -> the paper's number (None: never)
    quick_settings: list[str]
    quick_methods: list[str]
    quick_set: dict[str, Any] = field(default_factory=dict)
    baseline: str = "sgd"
    full_set: dict[str, Any] = field(default_factory=dict)  # overrides of the full (not --quick) version
    extra_methods: tuple[str, ...] = ()  # methods of ours that the paper's table does not have (controls)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys([*(m for _, m in self.paper), *self.extra_methods]))


def _modular(op: str, numbers: dict[int, tuple[int, int, int, int, int]]) -> Table:
    methods = ("sgd", "egd", "egd_rsvd128", "egd_rsvd64", "column_norm")
    return Table(
        title=f"modular {'addition' if op == 'add' else 'multiplication'}, paper MLP, SGD lr 0.7",
        unit="epochs",
        settings={f"p={p}": f"mod-{op}-p{p}" for p in numbers},
        paper={(f"p={p}", m): v for p, row in numbers.items() for m, v in zip(methods, row, strict=True)},
        quick_settings=["p=97"],
        quick_methods=["egd", "sgd"],
        quick_set={"train.max_epochs": 300},
    )


TABLES: dict[str, Table] = {
    "table2": _modular(
        "add", {79: (10099, 222, 224, 397, 863), 97: (5392, 116, 139, 237, 328), 127: (3293, 62, 76, 146, 133)}
    ),
    "table3": _modular(
        "mult", {79: (10116, 221, 233, 371, 814), 97: (5715, 107, 126, 233, 328), 127: (3261, 65, 74, 142, 142)}
    ),
    "table4": Table(
        title="sparse parity, MLP, SGD, batch 32",
        unit="epochs",
        settings={"k=2 (n=400)": "parity-k2", "k=3 (n=100)": "parity-k3", "k=4 (n=50)": "parity-k4"},
        paper={
            ("k=2 (n=400)", "sgd"): 7873, ("k=2 (n=400)", "egd"): 109, ("k=2 (n=400)", "egd_rsvd30"): 424,
            ("k=3 (n=100)", "sgd"): 1784, ("k=3 (n=100)", "egd"): 115, ("k=3 (n=100)", "egd_rsvd30"): 76,
            ("k=4 (n=50)", "sgd"): 5273, ("k=4 (n=50)", "egd"): 254, ("k=4 (n=50)", "egd_rsvd30"): 176,
        },
        quick_settings=["k=3 (n=100)"],
        quick_methods=["egd", "sgd"],
        quick_set={"train.max_epochs": 150},
    ),
    "table6": Table(
        title="MNIST-1k MLP, AdamW, steps to 85% (digits stand-in unless `egd data mnist` or task.path)",
        unit="steps",
        settings={"1k train": "mnist-1k-mlp"},
        paper={("1k train", "adamw"): 43100, ("1k train", "grokfast"): 1800, ("1k train", "egd_adamw"): 700,
               ("1k train", "egd_rsvd16"): 600, ("1k train", "egd_rsvd8"): 500, ("1k train", "egd_rsvd4"): 500},
        quick_settings=["1k train"],
        quick_methods=["egd_adamw", "adamw"],
        quick_set={"train.max_steps": 1000},
        baseline="adamw",
        # AdamW at wd 0.01 needs ~43k steps (~3 min a seed here): capped and reported censored (Kaplan-Meier)
        full_set={"train.max_steps": 20000},
        extra_methods=("adamw_wd2",),  # AdamW at the accelerated rows' weight decay 2.0: the equal-wd control
    ),
    "table7": Table(
        title="transformer, a·b mod 97, Adam, 10-update linear warm-up (official code), steps to 95%",
        unit="steps",
        settings={"a*b mod 97": "transformer-modmult-p97"},
        paper={
            # the slow baseline last: the sweep runs in this order, so the fast methods finish first
            ("a*b mod 97", "grokfast_warmup"): 910, ("a*b mod 97", "egd_adam_warmup"): 1170,
            ("a*b mod 97", "egd_rsvd36_adam_warmup"): 980, ("a*b mod 97", "adam_warmup"): 55780,
        },
        quick_settings=["a*b mod 97"],
        quick_methods=["egd_adam_warmup", "adam_warmup"],
        quick_set={"train.max_steps": 300},
        baseline="adam_warmup",
        # Adam needs ~56k steps (~1 h a seed here): every method gets the same stated budget of 20k steps, and the
        # baseline is reported censored (Kaplan-Meier) at it
        full_set={"train.max_steps": 20000},
    ),
}


SEEDS_ALLOWED = "a count N >= 1 (seeds 0..N-1), a range A-B with A <= B, or a list A,B,C of distinct seeds >= 0"


def parse_seeds(seeds: int | str | Sequence[int]) -> list[int]:
    """``--seeds``: a count (``5``: 0-4), an inclusive range (``"5-9"``) or a list (``"0,3,7"``, or a list of ints)."""
    value = seeds
    if isinstance(seeds, str):
        text = seeds.strip()
        if re.fullmatch(r"\d+", text):
            seeds = int(text)
        elif m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", text):
            first, last = int(m[1]), int(m[2])
            check(first <= last, "--seeds", value, SEEDS_ALLOWED, ConfigError)
            return list(range(first, last + 1))
        else:
            parts = [x.strip() for x in text.split(",")]
            check(len(parts) > 1 and all(re.fullmatch(r"\d+", x) for x in parts), "--seeds", value, SEEDS_ALLOWED,
                  ConfigError)
            seeds = [int(x) for x in parts]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        check(seeds >= 1, "--seeds", value, SEEDS_ALLOWED, ConfigError)
        return list(range(seeds))
    ok = isinstance(seeds, Sequence) and len(seeds) > 0 and len(set(seeds)) == len(seeds)
    check(ok and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds), "--seeds", value,
          SEEDS_ALLOWED, ConfigError)
    return list(seeds)


def _describe_seeds(seeds: list[int]) -> str:
    if seeds == list(range(len(seeds))):
        return f"{len(seeds)} seeds"
    return f"{len(seeds)} seeds: {', '.join(map(str, seeds))}"


def build_sweep(name: str, seeds: int | Sequence[int], quick: bool,
                root: Path) -> tuple[Sweep, dict[str, tuple[str, str]]]:
    """The table's sweep (``seeds``: a count, 0..N-1, or the seeds), and for each run id its (setting, method)."""
    seeds = parse_seeds(seeds)
    table = TABLES[name]
    settings = table.quick_settings if quick else list(table.settings)
    methods = table.quick_methods if quick else table.methods
    fixed = dict(table.quick_set) if quick else dict(table.full_set)
    runs, where_of = [], {}
    for setting in settings:
        base = load_config(table.settings[setting])
        for method in methods:
            expanded = expand(base, {"seed": seeds}, [{"method": method}], fixed,
                              where=f"reproduce {name}")
            for r in expanded:
                # the setting joins the params: labels stay distinct across settings, and each method is
                # compared with the baseline of its own setting
                params = {"setting": setting, **r.params}
                runs.append(replace(r, params=params, label=group_label(params)))
                where_of[r.id] = (setting, method)
    store = root / f"{name}{'-quick' if quick else ''}.sqlite"
    return Sweep(name=name, store=store, baseline=f"method={table.baseline}", runs=runs), where_of


def reproduce(name: str, *, seeds: int | str | Sequence[int] | None = None, quick: bool = False,
              workers: int | None = None, root: str | Path = "reproduce") -> list[dict[str, Any]]:
    """Run (or continue) the table's sweep, print ours next to the paper's, write the report.  ``seeds``: see
    :func:`parse_seeds` (default 5 seeds, 2 with ``quick``)."""
    if name not in TABLES:
        raise ConfigError(f"TABLE = {name!r}: allowed: {', '.join(TABLES)}")
    chosen = parse_seeds(seeds if seeds is not None else (2 if quick else 5))
    table = TABLES[name]
    sweep, where_of = build_sweep(name, chosen, quick, Path(root))
    print(f"{name}: {table.title}; {len(sweep.runs)} runs ({_describe_seeds(chosen)}){' [quick]' if quick else ''}",
          flush=True)
    counts = run_sweep(sweep, workers=workers)
    with Store(sweep.store, create=False) as store:
        runs = [r for r in store.runs([r.id for r in sweep.runs])]
    stats = group_stats(runs, sweep.baseline)
    key = table.unit  # "epochs" or "steps"
    rows = []
    by_group = {g["group"]: g for g in stats}
    for r in sweep.runs:
        g = by_group[r.group]
        setting, method = where_of[r.id]
        if any(x["setting"] == setting and x["method"] == method for x in rows):
            continue
        budget = max((x["summary"] or {}).get(key, 0) for x in runs if x["group_key"] == r.group)
        rows.append({
            "setting": setting,
            "method": method,
            "n": g["n"],
            "grokked": g["grokked"],
            "ours": _cell(g.get(key), g["grokked"], g["n"], budget),
            "paper": table.paper.get((setting, method)),
        })
    print(f"\n{table.unit} to the accuracy threshold: median [IQR] over seeds that grokked (grokked/run)\n")
    print("| setting | method | ours | grokked | paper (1 run) |\n|---|---|---|---|---|")
    for x in rows:
        paper = "never" if x["paper"] is None and (x["setting"], x["method"]) in table.paper else x["paper"] or "–"
        print(f"| {x['setting']} | {x['method']} | {x['ours']} | {x['grokked']}/{x['n']} | {paper} |")
    if counts.get("failed"):
        print(f"\n{counts['failed']} runs failed: see `egd sweep status {sweep.store}`")
    from .report import write_report

    report = write_report(sweep.store, sweep.store.with_suffix("").as_posix() + "-report")
    print(f"\nstore: {sweep.store}\nreport: {report}")
    return rows


def _cell(m: dict[str, Any] | None, grokked: int, n: int, budget: int) -> str:
    if not m:
        return f"> {budget}" if n else "-"
    text = f"{m['median']:g} [{m['q25']:g}, {m['q75']:g}]"
    return text if grokked == n else f"{text}; {n - grokked} > {budget}"

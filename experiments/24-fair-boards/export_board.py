"""Export a finished board of issue #28 into its folder: the leaderboard, every trial, every held-out run, the cost.

    python experiments/24-fair-boards/export_board.py experiments/24-fair-boards/mod-add-p97.toml

Reads the tune's store (``tune.store``), its Optuna studies (``NAME.optuna.sqlite``) and the leaderboard that
``egd tune`` wrote beside the store, and writes into ``experiments/24-fair-boards/<spec stem>/``:

* ``leaderboard.md`` and ``leaderboard.json``: ``egd tune``'s, byte for byte;
* ``trials.csv``: every trial of every study of every method (and widening round), in the order asked: the round,
  the study, the stage (1: the coarse lr grid; 2: the refined search), the config values, the objective (the median
  over the tuning seeds of the steps to the threshold; empty when censored) and the tuning runs' mean final test
  accuracy when censored;
* ``heldout.csv``: the board's reporting runs (each study's winner on each held-out seed; other reporting runs in
  the store, e.g. an earlier round's winners', are left out): the method, the studies it won, the seed,
  whether it reached the threshold, the step at which it did (else the steps it ran: censored), its seconds;
* ``stage1.md``: stage 1's coarse lr grid (round 0; the grid is shared by the studies), per method: how many grid
  points reached the threshold and over which lrs, the best grid lr and its objective;
* ``heldout.png``: those steps per method (log axis; open markers censored), the board's medians marked;
* ``cost.json``: the runs and their CPU time (the sum of the runs' wall-clock durations, one thread each), by
  tuning, reporting and each follow-up (robustness and handcheck, which share the store; transfer, which has its
  own, ``STORE-transfer.sqlite``), and the wall-clock span
  from the board's first run's start to its last run's end.

A board that is not finished (no leaderboard) is refused with one line.  Nothing here changes the store.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shutil
import sys
from pathlib import Path

import optuna

from egalitarian import io as fio
from egalitarian.sweep import Store
from egalitarian.tune import CENSORED, coarse_grid, load_tune, plan, trial_values

HERE = Path(__file__).resolve().parent


def studies_of(spec) -> list[tuple[str, int, int, str]]:
    """(method label, study, round, Optuna study name) of every study of the tune, rounds in order."""
    storage = f"sqlite:///{spec.study_path}"
    names = set(optuna.get_all_study_names(storage))
    out = []
    for c in spec.contenders:
        for k in range(spec.studies):
            base = f"{spec.name}/{c.label}" + (f"/study{k}" if k else "")
            r = 0
            while (name := base + (f"/widen{r}" if r else "")) in names:
                out.append((c.label, k, r, name))
                r += 1
    return out


def trials_rows(spec) -> list[dict]:
    storage = f"sqlite:///{spec.study_path}"
    by_label = {c.label: c for c in spec.contenders}
    n_grid = len(coarse_grid(spec.space[0])) if spec.stages == "coarse-refine" else 0
    rows = []
    for label, k, r, name in studies_of(spec):
        study = optuna.load_study(study_name=name, storage=storage)
        for t in study.trials:
            if t.value is None:
                continue
            values = trial_values(spec, by_label[label], t.params)
            censored = t.value >= CENSORED
            rows.append({"method": label, "round": r, "study": k, "trial": t.number,
                         "stage": 1 if t.number < n_grid else 2 if n_grid else "",
                         "values": json.dumps(values, sort_keys=True),
                         "objective": "" if censored else f"{t.value:g}",
                         "censored_final_acc": f"{CENSORED + 1 - t.value:.4f}" if censored else ""})
    return rows


def stage1_table(rows: list[dict]) -> str:
    """Stage 1's grid, one row per method in the order of the trials: the grid points whose objective (the median
    steps over the tuning seeds) is known, their lr span, and the best of them (the lowest objective; a tie goes to
    the earlier grid point, as the search's own choice does).  Methods ordered by that best, those with none last."""
    by: dict[str, list[tuple[float, float | None]]] = {}
    for t in rows:
        if str(t["stage"]) == "1" and int(t["round"]) == 0 and int(t["study"]) == 0:
            lr = json.loads(t["values"])["optimizer.lr"]
            by.setdefault(t["method"], []).append((lr, float(t["objective"]) if t["objective"] != "" else None))
    lines = ["| method | grid points that reach the threshold | best grid lr | steps there |", "|---|---|---|---|"]
    table = []
    for m, pts in by.items():
        ok = [(lr, v) for lr, v in pts if v is not None]
        if ok:
            lr, v = min(ok, key=lambda p: p[1])  # min keeps the first of equal objectives
            lo, hi = min(p[0] for p in ok), max(p[0] for p in ok)
            span = f"{len(ok)} of {len(pts)} ({lo:.3g}" + (f"–{hi:.3g})" if hi > lo else ")")
            table.append((v, f"| {m} | {span} | {lr:.3g} | {v:g} |"))
        else:
            table.append((math.inf, f"| {m} | 0 of {len(pts)} | – | censored |"))
    lines += [line for _, line in sorted(table, key=lambda x: x[0])]
    return "\n".join(lines) + "\n"


def heldout_rows(spec, store: Store, board: list[dict]) -> list[dict]:
    """The board's reporting runs: each study's winner (the leaderboard's ``per_study``, or its one row) on each
    held-out seed, planned as ``egd tune`` plans them (:func:`egalitarian.tune.plan`), with the studies it won (equal
    winners share their runs).  Reporting runs of other configurations in the store (an earlier round's winners,
    before a study's winner became its best trial of every round) are not the board's and are left out."""
    by_label = {c.label: c for c in spec.contenders}
    studies: dict[str, list[int]] = {}
    for e in board:
        for s in e.get("per_study") or [{"study": e.get("study", 0), **e}]:
            for r in plan(spec, by_label[e["method"]], s["values"], spec.reporting_seeds, reporting=True):
                studies.setdefault(r.id, []).append(s["study"])
    rows = []
    for r in store.runs(list(studies)):
        s = r["summary"] or {}
        grok = s.get("grok") or {}
        reached = bool(s.get("grokked")) and r["status"] == "done"
        params = r["params"] if isinstance(r["params"], dict) else json.loads(r["params"])
        rows.append({"method": params["method"], "studies": " ".join(map(str, sorted(set(studies[r["id"]])))),
                     "seed": params["seed"], "status": s.get("status", r["status"]),
                     "reached": reached, "steps": grok.get("step") if reached else s.get("steps"),
                     "seconds": f"{(grok.get('seconds') if reached else s.get('seconds')) or math.nan:.3f}",
                     "refined": json.dumps(s.get("refined")) if s.get("refined") else "",
                     "values": json.dumps({k: v for k, v in params.items() if k not in ("method", "seed")},
                                          sort_keys=True)})
    rows.sort(key=lambda x: (x["method"], x["studies"], x["seed"]))
    return rows


def cost(spec, store: Store) -> dict:
    out, first, last = {}, math.inf, -math.inf
    runs = list(store.runs())
    transfer = spec.store.with_name(spec.store.stem + "-transfer.sqlite")  # egd transfer's own store (its default)
    if transfer.exists():
        with Store(transfer, create=False) as t:
            runs += [{**r, "sweep": f"{spec.name}-transfer"} for r in t.runs()]
    for r in runs:
        if r["status"] != "done" or r["started"] is None or r["finished"] is None:
            continue
        # the tune's sweeps are NAME-tuning and NAME-report; the follow-ups (NAME-robustness, NAME-handcheck,
        # NAME-transfer) are counted apart
        part = r["sweep"].removeprefix(f"{spec.name}-")
        part = {"report": "reporting"}.get(part, part)
        d = out.setdefault(part, {"runs": 0, "cpu_hours": 0.0})
        d["runs"] += 1
        d["cpu_hours"] += (r["finished"] - r["started"]) / 3600
        if part in ("tuning", "reporting"):  # the board's own span
            first, last = min(first, r["started"]), max(last, r["finished"])
    for d in out.values():
        d["cpu_hours"] = round(d["cpu_hours"], 2)
    out["wall_clock_hours_first_to_last_run"] = round((last - first) / 3600, 2) if out else 0.0
    out["note"] = ("cpu_hours: the sum of the runs' wall-clock durations, one thread each; the span includes the "
                   "pauses between sessions")
    return out


def figure(rows: list[dict], board: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [e["method"] for e in board]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(order) + 1.2))
    for i, m in enumerate(order):
        for r in (r for r in rows if r["method"] == m and r["steps"]):
            ax.plot(r["steps"], i, "o" if r["reached"] else "^", mfc="C0" if r["reached"] else "none", mec="C0",
                    ms=4, alpha=0.6)
        med = next(e for e in board if e["method"] == m)
        value = (med.get("across") or {}).get("median", med["steps"]["median"])
        if value is not None and math.isfinite(value):
            ax.plot(value, i, "|", color="C3", ms=14, mew=2)
    ax.set_yticks(range(len(order)), order)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("held-out steps to the threshold (open: censored; red: the board's value)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    fio.atomic_write(path, lambda f: f.write(buf.getvalue()))


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["method"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    fio.write_text(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", help="the board's tune spec")
    ap.add_argument("--out", help="the folder to write (default: experiments/24-fair-boards/<spec stem>/)")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_tune(args.spec)
    board_md = spec.store.with_name(spec.store.stem + "-leaderboard.md")
    if not board_md.exists():
        print(f"export_board: {board_md} does not exist: the board is not finished (run egd tune {args.spec})",
              file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else HERE / Path(args.spec).stem
    out.mkdir(parents=True, exist_ok=True)
    for suffix in (".md", ".json"):
        shutil.copyfile(board_md.with_suffix(suffix), out / f"leaderboard{suffix}")
    board = json.loads(board_md.with_suffix(".json").read_text())
    with Store(spec.store, create=False) as store:
        held = heldout_rows(spec, store, board)
        trials = trials_rows(spec)
        write_csv(out / "trials.csv", trials)
        if spec.stages == "coarse-refine":
            fio.write_text(out / "stage1.md", stage1_table(trials))
        write_csv(out / "heldout.csv", held)
        fio.write_text(out / "cost.json", json.dumps(cost(spec, store), indent=2) + "\n")
    figure(held, board, out / "heldout.png")
    print(f"export_board: wrote {out}/ (leaderboard, trials.csv, stage1.md, heldout.csv, heldout.png, cost.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

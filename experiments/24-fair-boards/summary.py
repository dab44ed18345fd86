"""The finished boards of issue #28 together: the README's rows, and performance profiles across the boards.

    python experiments/24-fair-boards/summary.py            # write boards.md, profile.json, profile.md, README rows
    python experiments/24-fair-boards/summary.py --check    # exit 1 if any of them differs from what it would write

Reads every exported board (``<board>/leaderboard.json``, written by ``export_board.py``) and writes:

* ``profile.json``: per board (task) and method, the board's value (the median across studies of the held-out
  Kaplan–Meier medians, in steps; ``"inf"`` when it did not reach the threshold), the input of ``egd profile``;
* ``profile.md``: ``egd profile``'s table over the boards (Dolan–Moré profiles and AlgoPerf's score, τ ≤ 4, linear;
  a method missing from a board counts as failing it), each board's leader with the methods tied with it, and the
  transformer board's methods by its written rule (AdamW and the five best by score over the cheap boards);
* the boards' table in the top-level README.md between ``<!-- boards:begin -->`` and ``<!-- boards:end -->``: per
  board, the leader, the runner-up and AdamW with their values, and links to the follow-ups exported beside the
  board (lr robustness, the hand check beyond the lr, transfer).

* ``<board>/studies.md`` and ``.json`` for every exported board with a step metric: each method's three studies side
  by side (tuning value, held-out Kaplan–Meier median), two readings of the search and the hand check across
  studies of each (:func:`studies`): the board's (the median study, issue #28's value) and the pooled one (all the
  studies as one search: the study whose winner has the best tuning value, chosen without the held-out seeds), with
  the pooled reading's speed-ups against AdamW (bootstrap CIs over the held-out runs, ``heldout.csv``);
* ``profile-pooled.json``: the pooled reading per board and method, and its profile in ``profile.md``.

Nothing is retyped: every number comes from a leaderboard JSON that ``egd tune`` wrote (and, for the pooled
reading, the held-out runs that ``export_board.py`` exported beside it).  A board with a
``loss`` metric (the language model) reports its final test loss and is left out of the step profile.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from egalitarian import io as fio
from egalitarian.sweep.profiles import profile_markdown, profile_score
from egalitarian.sweep.stats import finite_json, km_ci, km_median, km_ratio_ci
from egalitarian.tune import pooled_study
from egalitarian.tuned import HAND_CHECK

HERE = Path(__file__).resolve().parent
README = HERE.parent.parent / "README.md"
BEGIN, END = "<!-- boards:begin -->", "<!-- boards:end -->"
SETUPS = {  # board folder -> how the README's first column names it
    "mod-add-p97": "(a + b) mod 97, paper MLP",
    "mod-mult-p97": "(a · b) mod 97, paper MLP",
    "parity-k3": "sparse parity k = 3",
    "mnist-1k": "MNIST-1k MLP, genuine MNIST",
    "transformer-modmult-p97": "a·b mod 97, Grokfast's transformer",
    "stdlib-gpt": "byte-level GPT, 400 steps",
}


def boards() -> dict[str, list[dict]]:
    out = {}
    for name in SETUPS:
        path = HERE / name / "leaderboard.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


def value(entry: dict) -> float:
    """A row's board value: the median across studies (or the one study's value)."""
    if "final_loss" in entry and entry.get("final_loss"):
        return entry["final_loss"]["median"]
    v = (entry.get("across") or {}).get("median", entry["steps"]["median"])
    return math.inf if v is None or (isinstance(v, str) and v in ("inf", "Infinity")) else float(v)


def text(entry: dict, loss: bool) -> str:
    v = value(entry)
    if loss:
        return f"{v:.3f} nats/byte"
    return "> budget" if math.isinf(v) or v >= 1e9 else f"{v:g} steps"


def held_out(rows: list[dict]) -> dict[tuple[str, int], tuple[list[float], list[bool]]]:
    """``heldout.csv``'s rows -> per (method, study) the held-out steps and whether each run reached the threshold
    (a run shared by equal winners counts for each of their studies)."""
    out: dict[tuple[str, int], tuple[list[float], list[bool]]] = {}
    for r in rows:
        for k in str(r["studies"]).split():
            t, e = out.setdefault((r["method"], int(k)), ([], []))
            t.append(float(r["steps"]))
            e.append(str(r["reached"]) == "True")
    return out


def _across(values: dict[int, float], k: int) -> dict:
    """The hand check across studies of study ``k``'s reading: the fastest other study's held-out median against
    it; ``gain`` is ``1 - best / it`` (1.0 when it never reached the threshold but another study did)."""
    best = min(values, key=lambda j: (values[j], j != k))
    tuned, other = values[k], values[best]
    gain = 0.0 if best == k else (1.0 - other / tuned if math.isfinite(tuned) else 1.0)
    return {"study": k, "value": tuned, "best_study": best, "best": other, "gain": gain, "beaten": gain > HAND_CHECK}


def studies(board: list[dict], held: dict[tuple[str, int], tuple[list[float], list[bool]]],
            baseline: str = "adamw") -> dict:
    """Per method of a board with several studies: each study's tuning value and held-out median, and two readings
    of the search with the hand check across studies of each (could another study's winner, on the same held-out
    seeds, beat the reading by more than :data:`HAND_CHECK`?): ``board``, the median study (the leaderboard's row),
    and ``pooled`` (:func:`pooled_study`), with its Kaplan–Meier median, bootstrap CI and speed-up against
    ``baseline``'s pooled study (``km_median(baseline) / km_median(method)``, bootstrap CI over both groups' runs)."""
    def finite(v) -> float:
        return math.inf if v is None or isinstance(v, str) else float(v)

    out: dict[str, dict] = {}
    for e in board:
        per = e["per_study"]
        values = {s["study"]: finite(s["median"]) for s in per}
        k = pooled_study(per)
        t, ev = held[(e["method"], k)]
        out[e["method"]] = {
            "studies": [{"study": s["study"], "tuning_value": s["tuning_value"], "held_out": values[s["study"]]}
                        for s in per],
            "board": _across(values, e["study"]),
            "pooled": {**_across(values, k), "km_median": km_median(t, ev), "ci": list(km_ci(t, ev))}}
    if baseline in out:
        b = held[(baseline, out[baseline]["pooled"]["study"])]
        for m, d in out.items():
            g = held[(m, d["pooled"]["study"])]
            num, den = km_median(*b), km_median(*g)
            ratio = num / den if math.isfinite(den) else (0.0 if math.isfinite(num) else math.nan)
            d["pooled"]["speedup"] = {"vs": baseline, "ratio": ratio,
                                      "ci": list(km_ratio_ci(b, g))}
    return out


def _steps(v: float) -> str:
    return f"{v:g}" if math.isfinite(v) else "> budget"


def studies_markdown(name: str, result: dict) -> str:
    """:func:`studies` as a table, methods by their pooled reading."""
    order = sorted(result, key=lambda m: (result[m]["pooled"]["value"], m))
    n = len(next(iter(result.values()))["studies"])
    lines = [f"# {name}: the {n} studies side by side, and two readings of the search", "",
             f"Generated by `python experiments/24-fair-boards/summary.py` from [leaderboard.json](leaderboard.json) "
             "and [heldout.csv](heldout.csv). Each study's winner (its best trial of every round) was re-run on the "
             "board's reporting (held-out) seeds; steps are Kaplan–Meier medians there. **Board**: the median study, "
             "the leaderboard's row (issue #28's value). **Pooled**: the studies as one search of "
             f"{n}× the trials, its winner the study with the best tuning value (on the tuning seeds; the held-out "
             "seeds play no part). **Hand check across studies**: another study's winner, on the same held-out seeds, "
             f"beats the reading by more than {HAND_CHECK:.0%}: the search behind that reading is underpowered for "
             "the method.", "",
             "| method | each study: tuning value → held-out steps | board (median study) | another study beats it by "
             "| pooled: study, held-out steps [95% CI] | another study beats it by | pooled speed-up vs adamw "
             "[95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for m in order:
        d = result[m]
        each = "; ".join(f"{s['study']}: {s['tuning_value']:g} → {_steps(s['held_out'])}" for s in d["studies"])
        b, p = d["board"], d["pooled"]

        def beat(x: dict) -> str:
            if not x["gain"]:
                return "–"
            return f"{x['gain']:.0%} (study {x['best_study']})" + (" **underpowered**" if x["beaten"] else "")

        sp = p.get("speedup")
        speed = f"{sp['ratio']:.2f} [{sp['ci'][0]:.2f}, {sp['ci'][1]:.2f}]" if sp else "–"
        lines.append(f"| {m} | {each} | {_steps(b['value'])} (study {b['study']}) | {beat(b)} | "
                     f"{p['study']}: {_steps(p['km_median'])} [{_steps(p['ci'][0])}, {_steps(p['ci'][1])}] | "
                     f"{beat(p)} | {speed} |")
    weak = [m for m in order if result[m]["board"]["beaten"]]
    weak_p = [m for m in order if result[m]["pooled"]["beaten"]]
    lines += ["", "Underpowered by the hand check across studies: board reading "
              + (", ".join(weak) or "none") + "; pooled reading " + (", ".join(weak_p) or "none") + "."]
    return "\n".join(lines) + "\n"


def board_studies(name: str, board: list[dict]) -> dict | None:
    """A board's :func:`studies` from its exported folder, or None (one study, a loss metric, no heldout.csv)."""
    path = HERE / name / "heldout.csv"
    if "final_loss" in board[0] or not board[0].get("per_study") or not path.exists():
        return None
    with path.open(newline="") as f:
        return studies(board, held_out(list(csv.DictReader(f))))


FOLDER = "experiments/24-fair-boards"
FOLLOW_UPS = {"robustness": "lr robustness", "handcheck": "hand check", "robustness-pooled": "lr hand check (pooled)",
              "handcheck-pooled": "hand check (pooled)", "transfer": "transfer"}


def follow_ups(name: str) -> str:
    """Links to a board's follow-ups that are exported (``<board>/robustness.md``, ...), or "pending"; one that
    checked the pooled search's winners says so (its table's first line names them: ``tuned.WINNERS``)."""
    done = []
    for kind, label in FOLLOW_UPS.items():
        path = HERE / name / f"{kind}.md"
        if path.exists():
            pooled = "pooled" not in label and "(the pooled search's" in path.read_text().partition("\n")[0]
            done.append(f"[{label}{' (pooled)' if pooled else ''}]({FOLDER}/{name}/{kind}.md)")
    return ", ".join(done) or "pending"


def readme_rows(all_boards: dict[str, list[dict]], pooled: dict[str, dict] | None = None) -> str:
    """The README's block: a table of the finished boards, or a line saying none is finished yet; with a board's
    :func:`studies` in ``pooled``, the same methods' pooled readings beside the board's and a link to them."""
    pooled = pooled or {}
    if not all_boards:
        return ("The boards of one search for every method ([experiments/24-fair-boards](experiments/24-fair-boards/), "
                "issue #28) replace the rows marked provisional when they finish; none has yet.")
    rows = ["Boards tuned by one search for every method (issue #28; generated by "
            "`experiments/24-fair-boards/summary.py` from the boards' leaderboards):", "",
            "| board, methods, held-out seeds | leader; runner-up; AdamW | median across 3 studies "
            "| pooled: the study with the best tuning value | checks |",
            "|---|---|---|---|---|"]
    for name, board in all_boards.items():
        loss = "final_loss" in board[0]
        picks = board[:2] + [e for e in board[2:] if e["method"] == "adamw"]
        tied = [e["method"] for e in board[1:] if e.get("tie_with_leader")]
        note = f"; tied with the leader: {', '.join(tied)}" if tied else ""
        st = pooled.get(name)
        pool = (f"[{'; '.join(_steps(st[e['method']]['pooled']['km_median']) + ' steps' for e in picks)}]"
                f"({FOLDER}/{name}/studies.md)" if st else "–")
        rows.append(f"| {SETUPS[name]}, {len(board)} methods, 5 | "
                    f"{'; '.join(e['method'] for e in picks)} | "
                    f"[{'; '.join(text(e, loss) for e in picks)}{note}]({FOLDER}/{name}/leaderboard.md) | "
                    f"{pool} | {follow_ups(name)} |")
    return "\n".join(rows)


def profile(all_boards: dict[str, list[dict]]) -> tuple[dict, str]:
    table = {name: {e["method"]: (v if math.isfinite(v := value(e)) and v < 1e9 else "inf") for e in board}
             for name, board in all_boards.items() if "final_loss" not in board[0]}
    if not table:
        return table, "No board with a step metric is finished yet.\n"
    lines = [f"Performance profiles over {len(table)} board(s): {', '.join(table)} (steps; τ ≤ 4, linear).", "",
             profile_markdown(table), "", "Leaders:", ""]
    for name, board in all_boards.items():
        tied = [e["method"] for e in board[1:] if e.get("tie_with_leader")]
        lines.append(f"- {name}: {board[0]['method']}" + (f" (tied within resolution: {', '.join(tied)})"
                                                          if tied else ""))
    return table, "\n".join(lines) + "\n" + transformer_rule(table)


def pooled_table(pooled: dict[str, dict]) -> dict[str, dict]:
    """The pooled reading of each board with one (:func:`studies`), as ``egd profile``'s input."""
    return {name: {m: (v if math.isfinite(v := d["pooled"]["km_median"]) else "inf") for m, d in st.items()}
            for name, st in pooled.items()}


def pooled_profile(table: dict[str, dict]) -> str:
    """``profile.md``'s second part: the profile of the pooled reading (the board's profile above is issue #28's)."""
    if not table:
        return ""
    return (f"\nThe pooled reading (each method's study with the best tuning value: its boards' `studies.md`; "
            f"`profile-pooled.json`) over {len(table)} board(s): {', '.join(table)} (steps; τ ≤ 4, linear).\n\n"
            + profile_markdown(table) + "\n")


CHEAP = ("mod-add-p97", "mod-mult-p97", "parity-k3", "mnist-1k")
"""The cheap boards, whose profile picks the transformer board's methods (README: "Which methods the expensive boards
take")."""
ON_TRANSFORMER = {"egd_all": "egd_all (EGD on every block matrix, AdamW on embeddings, head and norms)",
                  "egd_adamw": "egd_adamw (the recipe's EGD + Adam on the MLP matrices)"}
"""A cheap board's method -> its nearest form on the transformer, where the label alone does not say it."""
TRANSFORMER_SPEC = HERE / "transformer-modmult-p97.toml"


def transformer_rule(table: dict[str, dict]) -> str:
    """The transformer board's methods by the rule written before any cheap board finished: AdamW (the baseline),
    then the five best other methods by AlgoPerf's score over the cheap boards finished (ties: the order of the
    profile table), each in its nearest form on the transformer; and whether the spec's methods are those."""
    import tomllib

    cheap = {name: row for name, row in table.items() if name in CHEAP}
    if not cheap:
        return ""
    score = profile_score(cheap)
    ranked = [m for m in sorted(score, key=lambda m: -score[m]) if m != "adamw"][:5]
    spec = list(tomllib.loads(TRANSFORMER_SPEC.read_text()).get("methods", {}))
    missing, extra = [m for m in ["adamw", *ranked] if m not in spec], [m for m in spec if m not in ["adamw", *ranked]]
    state = ("the spec's methods are these" if not missing and not extra else
             f"the spec differs: add {', '.join(missing) or 'none'}; drop {', '.join(extra) or 'none'}")
    final = "final" if len(cheap) == len(CHEAP) else f"provisional: {len(cheap)} of {len(CHEAP)} cheap boards"
    return (f"\nThe transformer board's methods by the rule ({final}): adamw, then "
            + ", ".join(f"{ON_TRANSFORMER.get(m, m)} ({score[m]:.3g})" for m in ranked)
            + f" (AlgoPerf score over {', '.join(cheap)}); {state} ({TRANSFORMER_SPEC.name}).\n")


def with_rows(readme: str, rows: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"summary: {README} has no {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + BEGIN + ("\n" + rows if rows else "") + "\n" + END + tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = ap.parse_args(argv)
    all_boards = boards()
    table, prof = profile(all_boards)
    pooled = {name: st for name, board in all_boards.items() if (st := board_studies(name, board))}
    ptable = pooled_table(pooled)
    outputs = {
        HERE / "profile.json": json.dumps(table, indent=2, sort_keys=True) + "\n",
        HERE / "profile.md": prof + pooled_profile(ptable),
        README: with_rows(README.read_text(), readme_rows(all_boards, pooled)),
    }
    if ptable:
        outputs[HERE / "profile-pooled.json"] = json.dumps(ptable, indent=2, sort_keys=True) + "\n"
    for name, st in pooled.items():
        outputs[HERE / name / "studies.md"] = studies_markdown(name, st)
        outputs[HERE / name / "studies.json"] = json.dumps(finite_json(st), indent=2, sort_keys=True) + "\n"
    stale = [p for p, t in outputs.items() if not p.exists() or p.read_text() != t]
    if args.check:
        for p in stale:
            print(f"summary: {p} is not what summary.py writes from the boards; run it", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        fio.write_text(p, outputs[p])
    print(f"summary: {len(all_boards)} board(s); wrote {', '.join(p.name for p in stale) or 'nothing (up to date)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

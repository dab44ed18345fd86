"""Re-time a finished leaderboard on an idle machine, one run at a time  (issue #13)

    python experiments/12-leaderboards/retime_leaderboard.py experiments/12-leaderboards/leaderboard-mod-add-p97.toml \
        [--workers 1]

``egd tune`` measures each method's winner on the reporting seeds with as many workers as asked, often beside
other work, so its seconds column is indicative.  This re-runs exactly those reporting runs (the winners read
from ``STORE-leaderboard.json``, the same configs and seeds) into a fresh store next to the tune's,
``STORE-retime.sqlite``, one run at a time and one thread per run, and prints the leaderboard again: the steps
must equal the tune's (the runs are deterministic on one machine), the seconds are the idle ones.  Run it with
nothing else on the machine.  Rerunning continues the same store (finished runs are kept).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

from egalitarian.tune import leaderboard_markdown, load_tune, report

WINNER_KEYS = ("trial", "searched", "values", "tuning_value", "censored", "edges", "trials")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", help="the tune spec whose leaderboard to re-time")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    spec = load_tune(args.spec)
    board_path = spec.store.with_name(spec.store.stem + "-leaderboard.json")
    board = json.loads(board_path.read_text())
    winners = {e["method"]: {k: e[k] for k in WINNER_KEYS} for e in board}
    missing = [c.label for c in spec.contenders if c.label not in winners]
    if missing:
        raise SystemExit(f"{board_path}: no winner for {', '.join(missing)}; run `egd tune {args.spec}` first")
    retimed = replace(spec, store=spec.store.with_name(spec.store.stem + "-retime.sqlite"))
    new = report(retimed, winners, workers=args.workers)
    # (the JSON writes a censored median, infinite, as null)
    before = {e["method"]: math.inf if e["steps"]["median"] is None else e["steps"]["median"] for e in board}
    changed = [e["method"] for e in new if e["steps"]["median"] != before[e["method"]]]
    print(leaderboard_markdown(retimed, new))
    print(f"store: {retimed.store}; workers {args.workers}, one thread per run")
    print("steps equal to the tune's for every method" if not changed else
          f"steps differ from the tune's for: {', '.join(changed)} (another machine, or a changed recipe)")


if __name__ == "__main__":
    main()

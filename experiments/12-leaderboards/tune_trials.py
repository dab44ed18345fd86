"""Every trial of a finished tune, per method: the searched values and the objective  (issue #13)

    python experiments/12-leaderboards/tune_trials.py experiments/12-leaderboards/leaderboard-mnist-1k.toml

Reads the Optuna studies next to the tune's store (``NAME.optuna.sqlite``) and prints a Markdown table: per
method, each trial's config values (in the order of ``[space]``) → its objective (the median steps, epochs or
seconds over the tuning seeds), or ``>`` for a censored trial with its mean final test accuracy.  Then the
trials an uninterrupted search would not have asked (:func:`egalitarian.tune.replay`; none, unless the search
was resumed by a version of ``egd tune`` older than 2026-11-30).
"""

from __future__ import annotations

import argparse

import optuna

from egalitarian.tune import CENSORED, load_tune, replay, study_name, trial_values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", help="the tune spec")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_tune(args.spec)
    fields = ", ".join(d.field.split(".")[-1] for d in spec.space)
    print(f"| method | trials ({fields} → {spec.metric}; `>` = censored, with the final test accuracy) |")
    print("|---|---|")
    other = {}
    for c in spec.contenders:
        study = optuna.load_study(study_name=study_name(spec, c), storage=f"sqlite:///{spec.study_path}")
        other[c.label] = replay(spec, study.trials)[1]
        cells = []
        for t in study.trials:
            if t.value is None:
                continue
            head = ", ".join(f"{x:.3g}" for x in trial_values(spec, c, t.params).values())
            tail = f"> (acc {CENSORED + 1 - t.value:.2f})" if t.value >= CENSORED else f"{t.value:g}"
            cells.append(f"{head} → {tail}")
        print(f"| {c.label} | " + "; ".join(cells) + " |")
    print("\nTrials an uninterrupted search would not have asked: "
          + (", ".join(f"{k} {v}" for k, v in other.items() if v) or "none"))


if __name__ == "__main__":
    main()

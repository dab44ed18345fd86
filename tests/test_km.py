"""Kaplan-Meier statistics: hand computations, and scipy's estimator as an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from egalitarian.sweep.stats import best_by, group_stats, km_ci, km_curve, km_median, outcome


def test_km_median_counts_censored_runs_by_hand():
    # 5 seeds: 3 grok at 125, 300, 700; 2 stop at the budget 1000. S: 4/5 after 125, 3/5 after 300, 2/5 after
    # 700, so the median is 700, where the median of the successes alone would be 300.
    times, events = [125, 300, 700, 1000, 1000], [True, True, True, False, False]
    curve = km_curve(times, events)
    assert [t for t, _ in curve] == [125, 300, 700]
    assert [p for _, p in curve] == pytest.approx([0.8, 0.6, 0.4])
    assert km_median(times, events) == 700


def test_km_median_censoring_in_the_middle_by_hand():
    # one run censored at 200 leaves 3 at risk at 300: S = 4/5 * 2/3 = 8/15 after 300, then 8/15 * 1/2 = 4/15
    times, events = [100, 200, 300, 400, 500], [True, False, True, True, False]
    curve = km_curve(times, events)
    assert [t for t, _ in curve] == [100, 300, 400]
    assert curve[1][1] == pytest.approx(8 / 15) and curve[2][1] == pytest.approx(4 / 15)
    assert km_median(times, events) == 400


def test_km_ties_are_one_step():
    # two runs grok at the same step: S drops from 1 to 0 there, so the median is that step
    assert km_curve([99, 99], [True, True]) == [(99.0, 0.0)] and km_median([99, 99], [True, True]) == 99
    # a tie of an event and a censoring: the censored run was still at risk at that time
    (t1, s1), (t2, s2) = km_curve([5, 5, 9], [True, False, True])
    assert (t1, t2, s2) == (5.0, 9.0, 0.0) and s1 == pytest.approx(2 / 3)


def test_km_median_without_censoring_is_the_sample_median():
    rng = np.random.default_rng(0)
    for n in range(1, 9):
        x = rng.integers(1, 50, size=n).astype(float)
        assert km_median(x, [True] * n) == pytest.approx(float(np.median(x))), x


def test_km_median_when_fewer_than_half_grok_is_infinite():
    assert km_median([10, 1000, 1000], [True, False, False]) == math.inf
    assert km_median([10, 1000], [True, False]) == math.inf  # S = 1/2 after 10 and never lower: not reached
    assert km_median([], []) == math.inf
    lo, hi = km_ci([10, 1000, 1000], [True, False, False], n_boot=200)
    assert hi == math.inf


def test_outcome_of_a_run():
    grokked = {"grokked": True, "grok": {"step": 90, "epoch": 9, "seconds": 1.5}, "steps": 100, "status": "grokked"}
    assert outcome(grokked, "steps") == (90.0, True) and outcome(grokked, "seconds") == (1.5, True)
    budget = {"grokked": False, "grok": None, "steps": 1000, "epochs": 100, "seconds": 9.0, "status": "budget"}
    assert outcome(budget, "epochs") == (100.0, False)
    nonfinite = dict(budget, status="nonfinite", steps=7)
    assert outcome(nonfinite, "steps") == (math.inf, False)  # it would never grok: in the risk set forever


@pytest.mark.parametrize("seed", range(8))
def test_km_median_matches_scipy(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 15))
    times = rng.integers(1, 30, size=n).astype(float)  # ties on purpose
    events = rng.random(n) < 0.7
    res = stats.ecdf(stats.CensoredData(uncensored=times[events], right=times[~events]))
    q, sf = res.sf.quantiles, res.sf.probabilities
    below = np.nonzero(sf <= 0.5 + 1e-12)[0]
    if below.size == 0:
        expected = math.inf
    elif abs(sf[below[0]] - 0.5) <= 1e-12:  # flat at exactly 1/2: the middle of the interval (R's convention)
        expected = (q[below[0]] + q[below[0] + 1]) / 2 if below[0] + 1 < q.size else math.inf
    else:
        expected = q[below[0]]
    assert km_median(times, events) == pytest.approx(expected)
    ours = dict(km_curve(times, events))
    for t, p in zip(q, sf, strict=True):
        if t in ours:
            assert ours[t] == pytest.approx(p)


def _row(group, method, lr, seed, epochs):
    summary = ({"grokked": True, "grok": {"epoch": epochs, "step": epochs, "seconds": epochs / 10}, "status": "grokked"}
               if epochs else {"grokked": False, "grok": None, "status": "budget", "epochs": 500, "steps": 500,
                               "seconds": 50.0})
    return {"group_key": group, "label": f"method={method} lr={lr}", "params": {"method": method, "lr": lr,
            "seed": seed}, "status": "done", "summary": summary}


def test_best_by_method_ranks_by_the_km_median():
    runs = []
    for s, (a, b, c) in enumerate([(100, 50, 40), (120, 60, None), (110, 70, None)]):
        runs += [_row("a", "sgd", 0.1, s, a), _row("b", "sgd", 0.3, s, b), _row("c", "adamw", 0.01, s, c)]
    best = best_by(group_stats(runs, n_boot=50), "method", "epochs")
    # sgd: lr 0.3 (median 60) beats lr 0.1 (110); adamw grokked once in three: KM median > budget, ranks last
    assert [g["label"] for g in best] == ["method=sgd lr=0.3", "method=adamw lr=0.01"]
    assert best[0]["km"]["epochs"]["median"] == 60 and best[1]["km"]["epochs"]["median"] == math.inf

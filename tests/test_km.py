"""Kaplan-Meier statistics: hand computations, and scipy's estimator as an independent reference."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from egalitarian.sweep.stats import best_by, bootstrap_ci, group_stats, km_ci, km_curve, km_median, outcome


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


def _scipy_km_median(times, events) -> float:
    """The Kaplan–Meier median from scipy's estimator: the first time S ≤ 1/2, the middle of the interval where
    S = 1/2 exactly (R's convention), inf where S never gets to 1/2."""
    stats = pytest.importorskip("scipy.stats")
    times, events = np.asarray(times, dtype=float), np.asarray(events, dtype=bool)
    if not events.any():
        return math.inf
    res = stats.ecdf(stats.CensoredData(uncensored=times[events], right=times[~events]))
    q, sf = res.sf.quantiles, res.sf.probabilities
    below = np.nonzero(sf <= 0.5 + 1e-12)[0]
    if below.size == 0:
        return math.inf
    if abs(sf[below[0]] - 0.5) <= 1e-12:
        return (q[below[0]] + q[below[0] + 1]) / 2 if below[0] + 1 < q.size else math.inf
    return float(q[below[0]])


@pytest.mark.parametrize("seed", range(8))
def test_km_median_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 15))
    times = rng.integers(1, 30, size=n).astype(float)  # ties on purpose
    events = rng.random(n) < 0.7
    assert km_median(times, events) == pytest.approx(_scipy_km_median(times, events))


# ----------------------------------------------------- the bootstrap intervals against exact bootstrap distributions


def _percentile_interval(dist: dict[float, float], level: float = 0.95) -> tuple[tuple[float, float], float]:
    """The exact percentile interval of a discrete distribution ``{value: probability}`` (the smallest values
    whose CDF reaches (1 − level)/2 and (1 + level)/2), and the distance from those levels to the CDF on either
    side of the chosen jumps: a Monte Carlo estimate from n draws lands on the same values when that margin is
    many times its standard error √(q(1−q)/n) ≈ 0.0011 for n = 20000."""
    values = sorted(dist)
    cdf = np.cumsum([dist[v] for v in values])
    ends, margin = [], 1.0
    for q in ((1 - level) / 2, (1 + level) / 2):
        j = int(np.nonzero(cdf >= q - 1e-12)[0][0])
        ends.append(values[j])
        margin = min(margin, cdf[j] - q, q - (cdf[j - 1] if j else 0.0))
    return (ends[0], ends[1]), margin


def _exact_bootstrap(x, stat) -> dict[float, float]:
    """The whole bootstrap distribution of ``stat`` over the n^n equally likely resamples of ``x`` (as multisets,
    each weighted by its multinomial count)."""
    n, dist = len(x), Counter()
    for idx in itertools.combinations_with_replacement(range(n), n):
        ways = math.factorial(n) / math.prod(math.factorial(c) for c in Counter(idx).values())
        dist[stat([x[i] for i in idx], idx)] += ways / n**n
    return dict(dist)


def test_bootstrap_ci_of_the_median_is_the_closed_form():
    """For odd n and distinct values the bootstrap median is ≤ x₍ⱼ₎ exactly when at least (n+1)/2 draws are among
    the j smallest: P = P(Binomial(n, j/n) ≥ (n+1)/2) (Efron 1979)."""
    binom = pytest.importorskip("scipy.stats").binom
    x = [3.0, 1.0, 4.0, 15.0, 9.0, 2.0, 6.0]
    n, xs = len(x), sorted(x)
    cdf = [binom.sf((n + 1) // 2 - 1, n, j / n) for j in range(1, n + 1)]
    dist = {v: c - (cdf[j - 1] if j else 0.0) for j, (v, c) in enumerate(zip(xs, cdf, strict=True))}
    assert dist == pytest.approx({v: p for v, p in _exact_bootstrap(x, lambda s, _: float(np.median(s))).items()})
    expected, margin = _percentile_interval(dist)
    assert margin > 0.006 and expected == (2.0, 9.0)
    assert bootstrap_ci(x, n_boot=20_000) == expected
    assert bootstrap_ci(x, n_boot=20_000, seed=5) == expected  # not one lucky stream


def test_bootstrap_ci_of_another_statistic_matches_scipy():
    """``stat=`` (vectorised over the last axis) against scipy.stats.bootstrap's percentile interval: two
    independent Monte Carlo estimates of the same quantiles of a near-continuous distribution."""
    stats = pytest.importorskip("scipy.stats")
    x = np.array([12.0, 7.5, 3.1, 25.0, 9.9, 14.2, 5.5, 18.0, 8.8, 11.1])
    lo, hi = bootstrap_ci(x, lambda s: s.mean(axis=-1), n_boot=20_000)
    ref = stats.bootstrap((x,), np.mean, method="percentile", n_resamples=20_000, random_state=1).confidence_interval
    spread = x.std() / math.sqrt(x.size)
    # Monte Carlo error of each end ≈ 0.02·spread; a 90% interval instead of 95% would be off by ≈ 0.3·spread
    assert abs(lo - ref.low) < 0.1 * spread and abs(hi - ref.high) < 0.1 * spread
    assert lo < x.mean() < hi


@pytest.mark.parametrize(
    "times, events, expected",
    [  # censored runs in the middle and at the budget; medians not reached in some resamples (inf)
        ([10, 20, 30, 40, 50], [True, True, False, True, False], (10.0, math.inf)),
        ([12, 25, 31, 47, 58, 66, 90], [True, True, False, True, True, True, True], (25.0, 90.0)),
    ],
)
def test_km_ci_is_the_percentile_interval_of_the_exact_km_bootstrap(times, events, expected):
    """Every resample enumerated, each one's KM median from scipy's estimator: km_ci's Monte Carlo interval must
    land on that exact distribution's percentile interval."""
    dist = _exact_bootstrap(times, lambda _, idx: _scipy_km_median([times[i] for i in idx], [events[i] for i in idx]))
    interval, margin = _percentile_interval(dist)
    assert margin > 0.006 and interval == expected
    assert km_ci(times, events, n_boot=20_000) == expected
    assert km_ci(times, events, n_boot=20_000, seed=3) == expected


def test_km_ci_without_censoring_is_the_bootstrap_ci_of_the_median():
    x = [3.0, 1.0, 4.0, 15.0, 9.0, 2.0, 6.0]
    assert km_ci(x, [True] * len(x), n_boot=20_000) == bootstrap_ci(x, n_boot=20_000) == (2.0, 9.0)


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

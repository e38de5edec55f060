"""Seed statistics: means with t-intervals, Welch intervals for the difference of two arms, and the
smallest difference a design could have detected."""

from __future__ import annotations

import functools
import math
import operator
import statistics
from typing import Any

from scipy import optimize
from scipy import stats as sps

CI_LEVEL = 0.95
POWER = 0.8  # the power at which a design's detectable difference is stated


def mean_ci(
    values: list[float],
    level: float = CI_LEVEL,
    bounds: tuple[float, float] | None = None,
) -> dict[str, float | int | None]:
    """Mean, standard deviation and the t-interval of the mean; no interval from a single value.

    `bounds` clips the interval to the range the quantity can take (a share is in [0, 1]).
    """
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "std": None, "ci_low": None, "ci_high": None, "n": n}
    std = statistics.stdev(values)
    half = sps.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": mean, "std": std, "ci_low": low, "ci_high": high, "n": n}


def values_at(records: list[dict[str, Any]], *path: str) -> list[float]:
    """The value at `path` (nested keys) in each seed's record, in order."""
    return [functools.reduce(operator.getitem, path, record) for record in records]


def over_seeds(records: list[dict[str, Any]], *path: str,
               bounds: tuple[float, float] | None = None) -> dict[str, float | int | None]:
    """`mean_ci` over seeds of the value at `path` in each seed's record."""
    return mean_ci(values_at(records, *path), bounds=bounds)


def mean_curve(histories: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Mean over seeds of every recorded quantity, at the steps every seed recorded."""
    by_step: dict[int, list[dict[str, float]]] = {}
    for history in histories:
        for event in history:
            by_step.setdefault(event["step"], []).append(event)
    return [{**{k: statistics.fmean(e[k] for e in events) for k in events[0]}, "step": step}
            for step, events in sorted(by_step.items()) if len(events) == len(histories)]


def welch_diff(a: list[float], b: list[float], level: float = CI_LEVEL) -> dict[str, float | bool | None]:
    """mean(b) - mean(a) with Welch's t-interval and two-sided p (unequal variances, independent runs).

    `significant` is True only when the interval excludes zero (p < 1 - level); with fewer than
    two values per arm, or no spread in either, there is no interval, no p, and nothing is
    called significant. The p lets several comparisons be corrected together (`holm`).
    """
    diff = statistics.fmean(b) - statistics.fmean(a)
    if len(a) < 2 or len(b) < 2:
        return _unmeasured(diff)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return _unmeasured(diff)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return _t_test(diff, math.sqrt(va + vb), df, level)  # scipy's ttest_ind(equal_var=False), 30x faster


def paired_diff(a: list[float], b: list[float], level: float = CI_LEVEL) -> dict[str, float | bool | None]:
    """mean(b - a) over pairs (a[i], b[i]) that share a seed, with the t-interval of the differences.

    Valid where a seed moves both arms alike (same init, data order and noise draws), which is
    what pairing assumes; the keys are welch_diff's.
    """
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    diff = statistics.fmean(diffs)
    if len(diffs) < 2 or statistics.stdev(diffs) == 0:
        return _unmeasured(diff)
    return _t_test(diff, statistics.stdev(diffs) / math.sqrt(len(diffs)), len(diffs) - 1, level)


def _unmeasured(diff: float) -> dict[str, float | bool | None]:
    """A difference whose noise was not measured: no interval, no p, no claim, no power."""
    return {"diff": diff, "ci_low": None, "ci_high": None, "p": None, "significant": False, "se": None, "df": None,
            "detectable": None}


def _t_test(diff: float, se: float, df: float, level: float) -> dict[str, float | bool | None]:
    half = sps.t.ppf(0.5 + level / 2, df) * se
    low, high = diff - half, diff + half
    return {"diff": diff, "ci_low": low, "ci_high": high, "p": float(2 * sps.t.sf(abs(diff) / se, df)),
            "significant": not (low <= 0.0 <= high), "se": se, "df": df, "detectable": detectable(se, df, level)}


def detectable(se: float, df: float, level: float = CI_LEVEL, power: float = POWER, tests: int = 1) -> float:
    """The smallest true difference that a two-sided t-test with this standard error and df finds
    with probability `power`, at alpha = (1 - level) / tests (Holm's strictest step where `tests`
    comparisons are corrected together): the noncentral t's answer, exact for a t-test whose df is
    fixed (paired, equal spreads), an approximation for Welch's, whose df is itself estimated.

    "Within noise" says little when this is large: two arms 20 points apart are "within noise" to a
    design that could only have detected 40. The spread is the one observed, so this is itself an
    estimate from the same few seeds.
    """
    critical = sps.t.ppf(1 - (1 - level) / tests / 2, df)
    reach = sps.t.ppf(power, df) + critical  # the normal-theory guess, a little short at few df
    # the far tail's share (a wrong-signed rejection) is below 1e-3 at these sizes and left out
    return float(optimize.brentq(lambda d: sps.nct.sf(critical, df, d / se) - power, 0.0, 3 * reach * se))


def detectable_in_spreads(seeds: int, level: float = CI_LEVEL, power: float = POWER) -> float:
    """The detectable difference of two independent arms of `seeds` runs each, in units of one run's
    standard deviation, at the largest df Welch's test can have (equal spreads, 2 (seeds - 1)):
    what --seeds buys at best."""
    return detectable(math.sqrt(2 / seeds), 2 * (seeds - 1), level, power)


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given: rejecting where an adjusted p is below
    alpha keeps the chance of any false rejection in the family at alpha, under any dependence.

    Step-down: the k-th smallest p (k from 0) is scaled by m - k, and an adjusted p is never
    below the one before it in that order, nor above 1.
    """
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - k) * p_values[i]))
        adjusted[i] = running
    return adjusted

"""Compute-scaling fits: L(C) = E + A * C**-alpha per arm, seed-bootstrap intervals, and crossovers.

The fit is Hoffmann et al. 2022's approach 3 as Besiroglu et al. 2024 replicated it: a Huber loss
(delta 1e-3) on log-residuals, L-BFGS-B from a grid of starts, the best kept. Seeds are the unit of
replication, so the bootstrap draws whole seeds (all their budgets together), never single points.
numpy, scipy and threadpoolctl only: a report can import this without torch or matplotlib.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq, minimize
from threadpoolctl import threadpool_limits

HUBER_DELTA = 1e-3
ALPHA_BOUNDS = (0.0, 3.0)
CI_PERCENTILES = (2.5, 97.5)
SEARCH_SPAN = 4.0  # crossovers are searched up to this many times the largest budget
SEARCH_POINTS = 512
RESOLVED_SE = 3.0  # a gap between two arms' curves is resolved beyond this many standard errors (`resolution`)
ROUNDING = 1e-12  # loss differences below this are floating-point noise, never resolved
# Starts: the least-squares profile start (`_profile_start`), which lands near the optimum and halves
# L-BFGS-B's evaluations, plus two (E share of the smallest loss, alpha) grid starts as a guard
# against a second basin. Bootstrap refits start from the point estimate and their own profile
# start. On 300 random problems (alpha 0.05-1, 4-7 budgets, 3 seeds, noise 0-3%) the three starts
# reached the best optimum of a 64-start grid in all but one (3% noise, E barely identified: an
# objective 0.3% higher), at a twentieth of the grid's cost.
GRID_STARTS = ((0.5, 0.3), (0.85, 0.1))
PROFILE_ALPHAS = np.linspace(0.01, ALPHA_BOUNDS[1], 100)
LBFGS_OPTIONS = {"ftol": 1e-13, "gtol": 1e-9, "maxiter": 500}


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


@dataclass(frozen=True)
class PowerLaw:
    """L(C) = E + A * C**-alpha, with C in raw FLOPs (A absorbs the normalisation used to fit)."""

    E: float
    A: float
    alpha: float

    def predict(self, flops: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """The loss the law predicts at `flops` (a float gives a 0-d array)."""
        return np.asarray(self.E + self.A * np.asarray(flops, dtype=float) ** -self.alpha)

    def to_dict(self) -> dict[str, float]:
        """Plain floats, for JSON."""
        return {"E": float(self.E), "A": float(self.A), "alpha": float(self.alpha)}


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% percentile-bootstrap interval; NaN bounds where there is none."""

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        """Plain floats for JSON, None for NaN (JSON has no NaN)."""
        return {"estimate": _nan_to_none(self.estimate), "low": _nan_to_none(self.low),
                "high": _nan_to_none(self.high)}


@dataclass(frozen=True)
class ArmFit:
    """One arm's law fitted to all its seeds, with seed-bootstrap intervals.

    `resamples` keeps the bootstrap laws (in draw order) so `crossover` pairs the same draws the
    intervals came from; it stays out of repr, equality and `to_dict`.
    """

    law: PowerLaw
    E: Interval
    A: Interval
    alpha: Interval
    budgets: tuple[float, ...]
    predicted: tuple[Interval, ...]
    resamples: tuple[PowerLaw, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the number of bootstrap draws in place of the draws themselves."""
        return {"law": self.law.to_dict(), "E": self.E.to_dict(), "A": self.A.to_dict(),
                "alpha": self.alpha.to_dict(), "budgets": [float(b) for b in self.budgets],
                "predicted": [p.to_dict() for p in self.predicted], "resamples": len(self.resamples)}


@dataclass(frozen=True)
class Crossover:
    """Where `arm`'s fitted curve crosses `reference`'s, within `search_range` (FLOPs)."""

    arm: str
    reference: str
    flops: Interval
    no_crossing_share: float
    extrapolated: bool
    search_range: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, None for NaN."""
        return {"arm": self.arm, "reference": self.reference, "flops": self.flops.to_dict(),
                "no_crossing_share": _nan_to_none(self.no_crossing_share), "extrapolated": bool(self.extrapolated),
                "search_range": [float(x) for x in self.search_range]}


class _Points:
    """Points in fitting units: log(C / C0) and log(L), with a weight per point (a bootstrap count)."""

    def __init__(self, flops: np.ndarray, loss: np.ndarray, c0: float) -> None:
        self.c0 = c0
        self.log_c = np.log(flops / c0)
        self.log_loss = np.log(loss)
        self.loss = loss
        self.smallest = flops == flops.min()


def _objective(x: np.ndarray, pts: _Points, weights: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Weighted Huber loss of log(E + A c**-alpha) - log(L), in units of delta**2, and its gradient.

    The scaling keeps the objective and its gradient near 1 so L-BFGS-B's tolerances mean something
    (raw Huber values are ~1e-7, below its default gradient tolerance; Besiroglu et al. 2024 trace
    part of Chinchilla's misfit to an optimiser that stopped early).
    """
    e, a, alpha = x
    big_e = math.exp(e)
    power = np.exp(a - alpha * pts.log_c)  # A c**-alpha
    pred = big_e + power
    s = (np.log(pred) - pts.log_loss) / delta  # residuals in units of delta
    g = np.minimum(np.maximum(s, -1.0), 1.0)  # Huber's derivative; g * (s - g / 2) is Huber itself, both branches
    dr = weights * g / (delta * pred)
    m = power * dr
    return float(weights @ (g * (s - 0.5 * g))), np.array([big_e * dr.sum(), m.sum(), -(m @ pts.log_c)])


def _minimise(pts: _Points, weights: np.ndarray, delta: float, starts: list[np.ndarray]) -> np.ndarray:
    """The best of L-BFGS-B runs from `starts`, as (log E, log A_norm, alpha)."""
    hi_log = math.log(pts.loss.max())
    # wide boxes that keep exp() finite; with c >= 1, E and A_norm are each below the largest loss
    bounds = [(hi_log - 30.0, hi_log + 5.0), (hi_log - 30.0, hi_log + 5.0), ALPHA_BOUNDS]
    best_x, best_f = starts[0], math.inf
    for x0 in starts:
        res = minimize(_objective, x0, args=(pts, weights, delta), jac=True, method="L-BFGS-B",
                       bounds=bounds, options=LBFGS_OPTIONS)
        if np.all(np.isfinite(res.x)) and res.fun < best_f:
            best_x, best_f = res.x, res.fun
    return best_x


def _grid_starts(pts: _Points) -> list[np.ndarray]:
    """Starts (log E, log A_norm, alpha) from GRID_STARTS, each curve through the first budget's mean."""
    first, lowest = float(pts.loss[pts.smallest].mean()), float(pts.loss.min())
    starts = []
    for share, alpha in GRID_STARTS:
        e = share * lowest
        starts.append(np.array([math.log(e), math.log(max(first - e, 1e-3 * first)), alpha]))
    return starts


def _profile_start(pts: _Points, weights: np.ndarray) -> list[np.ndarray]:
    """The start from weighted least squares of L on [1, c**-alpha], best over a grid of alpha.

    For fixed alpha the law is linear in (E, A), so this is a closed-form fit per alpha: cheap, and
    near the Huber optimum. Empty where no alpha gives positive E and A (the grid starts remain).
    """
    x = np.exp(-PROFILE_ALPHAS[:, None] * pts.log_c)  # (alphas, points)
    y, w = pts.loss, weights
    s0, s1, s11 = w.sum(), x @ w, (x * x) @ w
    t0, t1 = w @ y, (x * y) @ w
    det = s0 * s11 - s1 * s1
    with np.errstate(divide="ignore", invalid="ignore"):
        e, a = (s11 * t0 - s1 * t1) / det, (s0 * t1 - s1 * t0) / det
        sse = ((y - e[:, None] - a[:, None] * x) ** 2) @ w
    sse[~((e > 0) & (a > 0) & np.isfinite(sse))] = np.inf
    i = int(np.argmin(sse))
    return [np.array([math.log(e[i]), math.log(a[i]), PROFILE_ALPHAS[i]])] if np.isfinite(sse[i]) else []


def _point_starts(pts: _Points) -> list[np.ndarray]:
    return [*_profile_start(pts, np.ones_like(pts.loss)), *_grid_starts(pts)]


def _law(x: np.ndarray, c0: float) -> PowerLaw:
    """Fitting units back to raw FLOPs: A_raw = A_norm * C0**alpha."""
    e, a, alpha = (float(v) for v in x)
    return PowerLaw(E=math.exp(e), A=math.exp(a + alpha * math.log(c0)), alpha=alpha)


def _validated(flops: Sequence[float], loss: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    c, y = np.asarray(flops, dtype=float), np.asarray(loss, dtype=float)
    if c.ndim != 1 or c.shape != y.shape:
        raise ValueError(f"flops and loss must be flat sequences of one length, got {c.shape} and {y.shape}")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(y))):
        raise ValueError("flops and loss must be finite")
    if np.any(c <= 0) or np.any(y <= 0):
        raise ValueError("flops and loss must be positive: the fit is on log(loss) against a power of flops")
    if len(np.unique(c)) < 3:
        raise ValueError(f"a power law needs at least 3 distinct budgets, got {len(np.unique(c))}: "
                         "E, A and alpha are not identified from fewer")
    return c, y


def fit_power_law(flops: Sequence[float], loss: Sequence[float], huber_delta: float = HUBER_DELTA) -> PowerLaw:
    """Fit L(C) = E + A * C**-alpha: Huber on log-residuals, the best of three L-BFGS-B starts.

    C is divided by the smallest budget while fitting, so the parameters are of order one whatever
    the FLOP scale; the returned A is converted back to raw FLOPs.
    """
    c, y = _validated(flops, loss)
    pts = _Points(c, y, float(c.min()))
    return _law(_minimise(pts, np.ones_like(y), huber_delta, _point_starts(pts)), pts.c0)


def _percentile_interval(estimate: float, samples: np.ndarray) -> Interval:
    if samples.size == 0:
        return Interval(estimate, math.nan, math.nan)
    low, high = np.percentile(samples, CI_PERCENTILES)
    return Interval(float(estimate), float(low), float(high))


def _seed_points(per_seed: Mapping[int | str, Sequence[tuple[float, float]]]) -> dict[int | str, dict[float, float]]:
    """Each seed's {flops: loss}, refusing a seed that repeats a budget."""
    out: dict[int | str, dict[float, float]] = {}
    for seed, points in per_seed.items():
        out[seed] = {float(c): float(y) for c, y in points}
        if len(out[seed]) != len(points):
            raise ValueError(f"seed {seed!r} has more than one point at a budget")
    return out


def fit_arm(per_seed: Mapping[int | str, Sequence[tuple[float, float]]], resamples: int = 1000,
            seed: int = 0) -> ArmFit:
    """`_fit_arm` with BLAS on one thread: L-BFGS-B's products are tiny, and a second BLAS thread
    spins against whatever else runs (10 seeds, 1,000 resamples, the other core busy: 8.4 and 7.6 s
    with scipy's default threads, 2.5 and 2.6 s with one, alternating on 2 cores)."""
    with threadpool_limits(1, user_api="blas"):
        return _fit_arm(per_seed, resamples, seed)


def _fit_arm(per_seed: Mapping[int | str, Sequence[tuple[float, float]]], resamples: int, seed: int) -> ArmFit:
    """Fit one arm to all its seeds' (flops, loss) points, with a seed bootstrap of every quantity.

    Each of `resamples` draws takes as many seeds as there are, with replacement, and refits; the
    intervals are the 2.5/97.5 percentiles of the refits. A draw is a multiset of seeds, so it is
    fitted with per-seed counts as weights, and draws with the same counts share one fit (with 3
    seeds there are only 10 distinct draws). One seed gives the estimate with NaN bounds. Every seed
    must have at least 3 distinct budgets, so that every draw can be fitted.
    """
    seeds = _seed_points(per_seed)
    if not seeds:
        raise ValueError("fit_arm needs at least one seed")
    for name, points in seeds.items():  # every draw must be fittable, so every seed must be
        try:
            _validated(list(points), list(points.values()))
        except ValueError as err:
            raise ValueError(f"seed {name!r}: {err}") from None
    owner = np.concatenate([np.full(len(points), i) for i, points in enumerate(seeds.values())])
    flops = np.array([c for points in seeds.values() for c in points])
    loss = np.array([y for points in seeds.values() for y in points.values()])
    pts = _Points(flops, loss, float(flops.min()))
    x_hat = _minimise(pts, np.ones_like(loss), HUBER_DELTA, _point_starts(pts))
    law = _law(x_hat, pts.c0)
    budgets = tuple(sorted(set(flops.tolist())))

    laws: list[PowerLaw] = []
    if len(seeds) > 1:
        rng = np.random.default_rng(seed)
        fits: dict[tuple[int, ...], PowerLaw] = {}
        for _ in range(resamples):
            counts = np.bincount(rng.integers(0, len(seeds), len(seeds)), minlength=len(seeds))
            key = tuple(counts.tolist())
            if key not in fits:
                weights = counts[owner].astype(float)
                starts = [x_hat, *_profile_start(pts, weights)]
                fits[key] = _law(_minimise(pts, weights, HUBER_DELTA, starts), pts.c0)
            laws.append(fits[key])

    params = np.array([[r.E, r.A, r.alpha] for r in laws]).reshape(len(laws), 3)
    curves = np.array([r.predict(budgets) for r in laws]).reshape(len(laws), len(budgets))
    return ArmFit(
        law=law,
        E=_percentile_interval(law.E, params[:, 0]),
        A=_percentile_interval(law.A, params[:, 1]),
        alpha=_percentile_interval(law.alpha, params[:, 2]),
        budgets=budgets,
        predicted=tuple(_percentile_interval(float(law.predict(b)), curves[:, i]) for i, b in enumerate(budgets)),
        resamples=tuple(laws),
    )


def resolution(a_losses: Sequence[Sequence[float]], b_losses: Sequence[Sequence[float]]) -> float:
    """The gap two arms' seeds resolve: RESOLVED_SE x the Welch standard error of mean(L_a) - mean(L_b),
    sqrt(var_a/n_a + var_b/n_b) over seeds, averaged over the budgets; each argument holds, per
    budget in the same order, that arm's seed losses. 0.0 where a side has fewer than 2 seeds at
    every budget (the noise is unmeasured).

    Why 3 standard errors: two arms of one true law (3 seeds, 0.5% noise) fitted and resampled gave
    a "crossing" in more than 5% of resamples in 95% of 160 noise draws at one standard error, and
    in about 7% of the draws at three.
    """
    errors = [math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
              for a, b in zip(a_losses, b_losses, strict=True) if len(a) > 1 and len(b) > 1]
    return RESOLVED_SE * float(np.mean(errors)) if errors else 0.0


def _first_crossings(arm: Sequence[PowerLaw], ref: Sequence[PowerLaw], grid: np.ndarray,
                     resolution: float) -> np.ndarray:
    """For each pair (arm[i], ref[i]), the lowest C on `grid`'s span where arm - ref changes sign
    between two grid points where |arm - ref| > resolution; NaN where it never does."""
    def params(laws: Sequence[PowerLaw]) -> tuple[np.ndarray, ...]:
        return tuple(np.array([getattr(w, k) for w in laws])[:, None] for k in ("E", "A", "alpha"))

    (ea, aa, pa), (er, ar, pr) = params(arm), params(ref)
    diff = (ea + aa * grid**-pa) - (er + ar * grid**-pr)
    out = np.full(len(diff), math.nan)
    for i, row in enumerate(diff):
        resolved = np.flatnonzero(np.abs(row) > max(resolution, ROUNDING))
        signs = np.sign(row[resolved])
        change = np.flatnonzero(signs[1:] != signs[:-1])
        if change.size == 0:
            continue
        lo, hi = grid[resolved[change[0]]], grid[resolved[change[0] + 1]]

        def gap(u: float, i: int = i) -> float:
            c = math.exp(u)
            return float(ea[i, 0] + aa[i, 0] * c ** -pa[i, 0] - er[i, 0] - ar[i, 0] * c ** -pr[i, 0])

        out[i] = math.exp(brentq(gap, math.log(lo), math.log(hi), xtol=1e-12))
    return out


def crossover(arm: ArmFit, reference: ArmFit, arm_name: str, reference_name: str, resolution: float) -> Crossover:
    """Where `arm`'s curve crosses `reference`'s, in [smallest budget, 4 x largest budget] of both fits.

    A crossing counts only where the difference is resolved on both sides: on a 512-point log grid,
    the difference exceeds `resolution` (the gap the arms' seeds resolve, see `resolution()`) with
    one sign below it and the other above; the root between those grid points
    is refined with brentq. Fitted curves of two arms with one true curve wander across each other
    by less than that, which is noise, not a crossover. Where the difference changes sign more than
    once, the first (lowest-C) crossing is the one reported.

    The interval is the 2.5/97.5 percentiles over the paired bootstrap draws (the i-th of `arm`
    with the i-th of `reference`, the first min of their counts) that do cross;
    `no_crossing_share` is the share of draws that do not (NaN without draws). `extrapolated`
    marks an estimate or interval high end beyond the largest budget either arm ran.
    """
    budgets = arm.budgets + reference.budgets
    largest = max(budgets)
    span = (min(budgets), SEARCH_SPAN * largest)
    grid = np.geomspace(*span, SEARCH_POINTS)
    estimate = float(_first_crossings([arm.law], [reference.law], grid, resolution)[0])
    pairs = min(len(arm.resamples), len(reference.resamples))
    draws = _first_crossings(arm.resamples[:pairs], reference.resamples[:pairs], grid, resolution)
    crossed = draws[~np.isnan(draws)]
    flops = _percentile_interval(estimate, crossed)
    share = 1.0 - crossed.size / pairs if pairs else math.nan
    beyond = [v for v in (flops.estimate, flops.high) if not math.isnan(v)]
    return Crossover(arm=arm_name, reference=reference_name, flops=flops, no_crossing_share=share,
                     extrapolated=any(v > largest for v in beyond), search_range=span)

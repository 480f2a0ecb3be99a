"""The statistics of a leaderboard row: mean, sample std, a 95% confidence interval of the mean
and Welch's t-test against the baseline, over the seeds of a variant.

The interval of a bounded metric (accuracy in %) is the t interval clipped to the metric's range:
the mean it covers lies in that range, so cutting off what lies outside cannot lose coverage,
and where nothing is cut the interval is the plain t interval, the same model as Welch's test.

Pure functions of lists of floats; None where a statistic is undefined (too few seeds), so that
the boards show "—" and the JSON `null` instead of NaN.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence

from scipy import stats as scipy_stats


def mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1); None for fewer than two values."""
    return statistics.stdev(values) if len(values) > 1 else None


PERCENT = (0.0, 100.0)  # the range of an accuracy in display units
T_INTERVAL = "the Student t interval of the mean, mean ± t(0.975, n − 1) · s / √n"


def ci95(values: Sequence[float], bounds: tuple[float, float] | None = None
         ) -> tuple[float, float] | None:
    """Student-t 95% confidence interval of the mean, (low, high); None for n < 2.

    With `bounds`, the metric's range (`PERCENT` for an accuracy), the interval is clipped to
    it. Values outside the range are not that metric: then the interval is left unclipped, as
    wrong as the values, rather than made to look plausible.
    """
    if len(values) < 2:
        return None
    n = len(values)
    half = float(scipy_stats.t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    centre = statistics.fmean(values)
    low, high = centre - half, centre + half
    if bounds is not None and all(bounds[0] <= v <= bounds[1] for v in values):
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return low, high


def interval_method(bounds: tuple[float, float] | None = None) -> str:
    """How `ci95(values, bounds)` is computed, in words, for a board's note."""
    if bounds is None:
        return T_INTERVAL
    return (f"{T_INTERVAL}, clipped to [{bounds[0]:g}, {bounds[1]:g}] (the true mean cannot lie "
            "outside, so clipping keeps the 95% coverage)")


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean(a) - mean(b), two-sided p of Welch's t-test, unequal variances).

    The difference is None when either side is empty; p is None when either side has fewer
    than two values or both have zero variance (the t statistic is undefined).
    """
    if not a or not b:
        return None, None
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2 or (statistics.variance(a) == 0 and statistics.variance(b) == 0):
        return diff, None
    with warnings.catch_warnings():
        # one constant side is common (seeds with equal accuracy on a small test set) and the
        # test is defined for it; scipy's precision warning about it is not news to the reader
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
    return diff, p if math.isfinite(p) else None


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values, in the input order; None stays None.

    The m tests are the non-None p-values: sorted ascending, the i-th (from 0) is scaled by
    m − i, capped at 1 and made non-decreasing (step-down), so rejecting where the adjusted p is
    below alpha controls the family-wise error rate at alpha.
    """
    ranked = sorted((p, index) for index, p in enumerate(pvalues) if p is not None)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, index) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - rank) * p))
        adjusted[index] = running
    return adjusted

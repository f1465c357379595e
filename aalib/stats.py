"""Statistics for results stated over seeds: spread of a metric, how often an outcome occurs, and
how far apart two models are.

A study result is a distribution over seeds, not one run. :func:`spread` gives the numbers a
report shows for a metric (mean, sample standard deviation, median, extremes);
:func:`binomial_interval` gives the exact (Clopper-Pearson) confidence interval for "k of n seeds
solved the task": the range of per-seed success probabilities that the k of n does not rule out.
With 3 seeds the interval is wide (2 of 3: 9-99 %), which is the point: it says what the runs
cannot tell. :func:`mean_interval` gives Student's t interval for a mean, such as the mean of
per-seed differences between two models trained with the same seeds (with 3 seeds the 97.5 %
quantile is 4.30, so only a difference large against the seed-to-seed spread excludes zero).

C. J. Clopper, E. S. Pearson, "The use of confidence or fiducial limits illustrated in the case of
the binomial", Biometrika 26 (1934). The limits solve ``P(X >= k | p_low) = alpha / 2`` and
``P(X <= k | p_high) = alpha / 2`` for ``X ~ Binomial(n, p)``; they are found here by bisection on
the binomial tail (monotone in ``p``), so no special functions are needed.

W. S. Gosset ("Student"), "The probable error of a mean", Biometrika 6 (1908). The t quantile is
found by bisection on the distribution function, summed in closed form for integer degrees of
freedom (M. Abramowitz, I. A. Stegun, "Handbook of Mathematical Functions", 26.7.3-4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from .checks import check_int

__all__ = ["Spread", "binomial_interval", "mean_interval", "spread"]

_BISECTIONS = 60  # halvings of the search interval: far below any printed precision
_T_SEARCH_MAX = 1e4  # the quantile search's upper end (df = 1 at 0.99995 is about 6366)


@dataclass(frozen=True)
class Spread:
    """A metric over seeds: ``n`` finite values (NaN stands for "no value")."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof = 1); NaN below two values
    median: float
    low: float
    high: float

    def __str__(self) -> str:
        """``"61.00 ± 1.41"``, one value as itself, ``"-"`` for none."""
        if self.n == 0:
            return "-"
        if self.n == 1:
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} ± {self.std:.2f}"


def spread(values: Iterable[float]) -> Spread:
    """Mean, sample standard deviation, median and range of the finite ``values``."""
    finite = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    n = len(finite)
    if n == 0:
        return Spread(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = sum(finite) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else math.nan
    middle = n // 2
    median = finite[middle] if n % 2 else (finite[middle - 1] + finite[middle]) / 2
    return Spread(n, mean, std, median, finite[0], finite[-1])


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def _bisect(decreasing, target: float) -> float:
    """The ``p`` in [0, 1] where the decreasing function ``decreasing(p)`` crosses ``target``."""
    low, high = 0.0, 1.0
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        if decreasing(middle) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def binomial_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided Clopper-Pearson interval for a success probability, as fractions in [0, 1].

    ``binomial_interval(2, 3)`` is about ``(0.094, 0.992)``; ``binomial_interval(0, 3)`` about
    ``(0, 0.708)``. Raises ValueError unless ``0 <= successes <= trials``, ``trials >= 1`` and
    ``0 < confidence < 1``.
    """
    check_int("successes", successes, None)
    check_int("trials", trials, None)
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got successes={successes}, trials={trials}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    alpha = 1 - confidence
    # P(X >= k | p) rises with p: the lower limit is where it reaches alpha / 2.
    low = 0.0 if successes == 0 else _bisect(lambda p: _binomial_cdf(successes - 1, trials, p), 1 - alpha / 2)
    # P(X <= k | p) falls with p: the upper limit is where it falls to alpha / 2.
    high = 1.0 if successes == trials else _bisect(lambda p: _binomial_cdf(successes, trials, p), alpha / 2)
    return low, high


def _t_cdf(t: float, df: int) -> float:
    """``P(T <= t)`` for ``t >= 0``, exact for integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + (2 4)/(3 5) cos^4 + ...))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        both = 2 / math.pi * (theta + sin * math.cos(theta) * total)
    else:  # even: sin (1 + 1/2 cos^2 + (1 3)/(2 4) cos^4 + ...)
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= cos2 * (2 * k - 1) / (2 * k)
            total += term
        both = sin * total
    return 0.5 + both / 2  # both = P(|T| < t)


def student_t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile of Student's t distribution with ``df`` degrees of freedom.

    ``student_t_quantile(0.975, 2)`` is about 4.303, ``(0.975, 10)`` about 2.228. Raises
    ValueError unless ``df`` is an int >= 1 and ``0.5 <= probability < 1``.
    """
    check_int("df", df)
    if not 0.5 <= probability < 1:
        raise ValueError(f"probability must lie in [0.5, 1), got {probability!r}")
    low, high = 0.0, _T_SEARCH_MAX
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        if _t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def mean_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of the finite ``values`` and its two-sided Student's t
    confidence interval, ``mean ± t · s / √n``; the limits are NaN below two values.

    Raises ValueError unless ``0 < confidence < 1``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    summary = spread(values)
    if summary.n < 2:
        return summary.mean, math.nan, math.nan
    half = student_t_quantile(1 - (1 - confidence) / 2, summary.n - 1) * summary.std / math.sqrt(summary.n)
    return summary.mean, summary.mean - half, summary.mean + half

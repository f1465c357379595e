"""aalib.stats and the outcome rule of aalib.verdict against values worked out by hand or read from tables."""

from __future__ import annotations

import math

import pytest

from aalib.stats import binomial_interval, mean_interval, spread, student_t_quantile
from aalib.verdict import Landmarks, classify


@pytest.mark.parametrize(
    "k, n, low, high",
    [  # exact Clopper-Pearson limits: the beta quantiles Beta(k, n-k+1) at 2.5 % and Beta(k+1, n-k) at 97.5 %
        (2, 3, 0.094299, 0.991596),
        (0, 3, 0.0, 0.707598),  # 1 - 0.025 ** (1/3)
        (3, 3, 0.292402, 1.0),  # 0.025 ** (1/3)
        (1, 1, 0.025, 1.0),
        (3, 5, 0.146633, 0.947255),
        (5, 10, 0.187086, 0.812914),
    ],
)
def test_clopper_pearson_limits(k, n, low, high):
    got = binomial_interval(k, n)
    assert got == pytest.approx((low, high), abs=2e-6)


def test_interval_limits_are_where_the_binomial_tails_reach_alpha_over_two():
    low, high = binomial_interval(4, 9, confidence=0.9)
    tail_up = sum(math.comb(9, i) * low**i * (1 - low) ** (9 - i) for i in range(4, 10))
    tail_down = sum(math.comb(9, i) * high**i * (1 - high) ** (9 - i) for i in range(0, 5))
    assert tail_up == pytest.approx(0.05, abs=1e-9) and tail_down == pytest.approx(0.05, abs=1e-9)


@pytest.mark.parametrize("args, message", [
    ((4, 3), "0 <= successes <= trials"), ((0, 0), "trials >= 1"), ((1, 2, 1.0), "confidence must lie in"),
    ((1.0, 2), "successes must be an int"),
])
def test_interval_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        binomial_interval(*args)


def test_spread_ignores_missing_values():
    s = spread([3.0, 1.0, float("nan"), 2.0, None])
    assert (s.n, s.mean, s.std, s.median, s.low, s.high) == (3, 2.0, 1.0, 2.0, 1.0, 3.0)
    assert str(s) == "2.00 ± 1.00" and str(spread([5.0])) == "5.00" and str(spread([])) == "-"
    assert spread([1.0, 2.0, 3.0, 10.0]).median == 2.5


def test_outcomes_at_the_landmarks():
    marks = Landmarks.for_task(colours=4, test_images=2000)
    assert marks.ceiling == pytest.approx(100 * 2 / 3) and marks.margin == pytest.approx(3 * 100 * math.sqrt(0.25 / 2000))
    assert [classify(t, marks) for t in (90.0, 89.9, 75.0, 70.0, 66.0, 53.3, 50.0, 30.0)] == [
        "solved", "partial", "partial", "additive", "additive", "chance", "chance", "chance"]


@pytest.mark.parametrize("df, quantile", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622),
                                          (10, 2.2281), (30, 2.0423), (100, 1.9840)])
def test_student_t_quantiles_match_the_tables(df, quantile):
    assert student_t_quantile(0.975, df) == pytest.approx(quantile, abs=1e-4)


def test_student_t_other_levels_and_bad_input():
    assert student_t_quantile(0.995, 3) == pytest.approx(5.8409, abs=1e-4)
    assert student_t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="df must be a positive int, got 0"):
        student_t_quantile(0.975, 0)
    with pytest.raises(ValueError, match=r"probability must lie in \[0.5, 1\)"):
        student_t_quantile(1.0, 3)


def test_mean_interval_is_mean_plus_minus_t_times_standard_error():
    mean, low, high = mean_interval([1.0, 2.0, 3.0, float("nan")])
    assert mean == 2.0 and (low, high) == pytest.approx((2.0 - 4.3027 / math.sqrt(3), 2.0 + 4.3027 / math.sqrt(3)), abs=1e-4)
    mean, low, high = mean_interval([5.0])
    assert mean == 5.0 and math.isnan(low) and math.isnan(high)

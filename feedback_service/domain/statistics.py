"""Intervals and tests on positive rates, with the standard library only (no
scientific stack in the server). Each follows the textbook formula that
statsmodels implements, and a test holds them to statsmodels' figures:

- `wilson_interval`: the Wilson score interval of a proportion
  (statsmodels `proportion_confint(method="wilson")`);
- `newcombe_interval`: Newcombe's hybrid score interval of a difference of
  two proportions, built from their Wilson intervals
  (`confint_proportions_2indep(method="newcomb")`);
- `two_proportion_p_value`: the two-sided z-test that two proportions are
  equal, with pooled variance (`proportions_ztest`).

Where statsmodels has no answer (no votes on a side), these answer with what
is known: the whole range for an interval, 1 for a p-value.
"""

import math
from dataclasses import dataclass
from statistics import NormalDist

DEFAULT_CONFIDENCE = 0.95
_STANDARD_NORMAL = NormalDist()


def z_critical(confidence: float) -> float:
    """The two-sided critical value of the standard normal distribution:
    the z with P(|Z| <= z) = confidence."""
    return _STANDARD_NORMAL.inv_cdf(1 - (1 - confidence) / 2)


def rate(count: int, total: int) -> float:
    """count / total; 0 when total is 0."""
    return count / total if total else 0.0


@dataclass(frozen=True, slots=True)
class Interval:
    lower: float
    upper: float


def wilson_interval(positive: int, votes: int, confidence: float) -> Interval:
    """The Wilson score interval of positive / votes; [0, 1] without votes."""
    if votes <= 0:
        return Interval(0.0, 1.0)
    z = z_critical(confidence)
    z2 = z * z
    p = positive / votes
    denominator = 1 + z2 / votes
    centre = (p + z2 / (2 * votes)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / votes + z2 / (4 * votes * votes)) / denominator
    # The bounds lie in [0, 1]; rounding could otherwise step past them.
    return Interval(max(0.0, centre - half_width), min(1.0, centre + half_width))


def newcombe_interval(
    positive_a: int, votes_a: int, positive_b: int, votes_b: int, confidence: float
) -> Interval:
    """Newcombe's hybrid score interval of rate(a) - rate(b) (his method 10),
    from the two Wilson intervals; [-1, 1] when either side has no votes."""
    if votes_a <= 0 or votes_b <= 0:
        return Interval(-1.0, 1.0)
    p_a, p_b = positive_a / votes_a, positive_b / votes_b
    a = wilson_interval(positive_a, votes_a, confidence)
    b = wilson_interval(positive_b, votes_b, confidence)
    difference = p_a - p_b
    lower = difference - math.hypot(p_a - a.lower, b.upper - p_b)
    upper = difference + math.hypot(a.upper - p_a, p_b - b.lower)
    return Interval(max(-1.0, lower), min(1.0, upper))


def two_proportion_p_value(count_a: int, total_a: int, count_b: int, total_b: int) -> float:
    """The two-sided p-value of the z-test that count_a / total_a and
    count_b / total_b are equal, with pooled variance; 1 when either side is
    empty or the pooled variance is zero (every count 0, or every count full)."""
    if total_a <= 0 or total_b <= 0:
        return 1.0
    pooled = (count_a + count_b) / (total_a + total_b)
    variance = pooled * (1 - pooled) * (1 / total_a + 1 / total_b)
    if variance <= 0:
        return 1.0
    z = (count_a / total_a - count_b / total_b) / math.sqrt(variance)
    # 2 * (1 - Phi(|z|)), through erfc so that tiny p-values keep their digits.
    return min(1.0, math.erfc(abs(z) / math.sqrt(2)))

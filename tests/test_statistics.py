"""The server's statistics (standard library only) agree with statsmodels to
1e-9 on random counts and on the edges: no positive vote, all positive, one
vote, a million votes. Where statsmodels has no answer (no votes on a side),
the server's documented answer is checked instead."""

import random
import warnings

import pytest

from feedback_service.domain.statistics import (
    newcombe_interval,
    two_proportion_p_value,
    wilson_interval,
)

proportion = pytest.importorskip("statsmodels.stats.proportion")

TOLERANCE = 1e-9
CONFIDENCES = [0.95, 0.9, 0.99, 0.5000001, 0.999999]
MILLION = 1_000_000

# (positive, votes) on the edges.
EDGE_COUNTS = [
    (0, 1),
    (1, 1),
    (0, 2),
    (1, 2),
    (0, 37),
    (37, 37),
    (0, MILLION),
    (MILLION, MILLION),
    (1, MILLION),
    (MILLION - 1, MILLION),
    (500_000, MILLION),
    (123_457, MILLION),
]


def random_counts(seed: int, count: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        votes = rng.choice([rng.randint(1, 20), rng.randint(1, 2000), rng.randint(1, MILLION)])
        pairs.append((rng.randint(0, votes), votes))
    return pairs


COUNTS = EDGE_COUNTS + random_counts(17, 60)
PAIRS = [(a, b) for a in EDGE_COUNTS for b in EDGE_COUNTS] + list(
    zip(random_counts(1, 60), random_counts(2, 60), strict=True)
)


def close(ours: float, theirs: float) -> bool:
    return abs(ours - float(theirs)) <= TOLERANCE


@pytest.mark.parametrize("confidence", CONFIDENCES)
def test_wilson_interval_matches_statsmodels(confidence):
    for positive, votes in COUNTS:
        ours = wilson_interval(positive, votes, confidence)
        low, high = proportion.proportion_confint(positive, votes, alpha=1 - confidence, method="wilson")
        assert close(ours.lower, low) and close(ours.upper, high), (positive, votes, ours, low, high)


@pytest.mark.parametrize("confidence", CONFIDENCES)
def test_newcombe_interval_matches_statsmodels(confidence):
    for (positive_a, votes_a), (positive_b, votes_b) in PAIRS:
        ours = newcombe_interval(positive_a, votes_a, positive_b, votes_b, confidence)
        low, high = proportion.confint_proportions_2indep(
            positive_a, votes_a, positive_b, votes_b, method="newcomb", compare="diff", alpha=1 - confidence
        )
        assert close(ours.lower, low) and close(ours.upper, high), (positive_a, votes_a, positive_b, votes_b)


def test_two_proportion_p_value_matches_statsmodels():
    from statsmodels.stats.proportion import proportions_ztest

    compared = 0
    for (positive_a, votes_a), (positive_b, votes_b) in PAIRS:
        ours = two_proportion_p_value(positive_a, votes_a, positive_b, votes_b)
        pooled = (positive_a + positive_b) / (votes_a + votes_b)
        if pooled in (0, 1):
            assert ours == 1.0  # statsmodels divides by zero here
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _, theirs = proportions_ztest([positive_a, positive_b], [votes_a, votes_b])
        assert close(ours, theirs), (positive_a, votes_a, positive_b, votes_b, ours, theirs)
        compared += 1
    assert compared > 100


def test_tiny_p_values_keep_their_digits():
    """Through erfc, not 1 - cdf: a p-value of 1e-45 is not rounded to 0."""
    from statsmodels.stats.proportion import proportions_ztest

    _, theirs = proportions_ztest([6000, 5000], [10_000, 10_000])
    ours = two_proportion_p_value(6000, 10_000, 5000, 10_000)
    assert 0 < theirs < 1e-40
    assert abs(ours - theirs) <= 1e-9 * theirs


def test_without_votes_the_answers_claim_nothing():
    assert wilson_interval(0, 0, 0.95) == wilson_interval(0, 0, 0.99)
    assert (wilson_interval(0, 0, 0.95).lower, wilson_interval(0, 0, 0.95).upper) == (0.0, 1.0)
    interval = newcombe_interval(0, 0, 5, 10, 0.95)
    assert (interval.lower, interval.upper) == (-1.0, 1.0)
    interval = newcombe_interval(5, 10, 0, 0, 0.95)
    assert (interval.lower, interval.upper) == (-1.0, 1.0)
    assert two_proportion_p_value(0, 0, 5, 10) == 1.0
    assert two_proportion_p_value(5, 10, 0, 0) == 1.0
    # Both sides all positive (or all negative): no variance to test against.
    assert two_proportion_p_value(10, 10, 3, 3) == 1.0
    assert two_proportion_p_value(0, 10, 0, 3) == 1.0

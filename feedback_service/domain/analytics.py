"""Votes by run label: what GetFeedbackBreakdown and CompareFeedback answer,
built from the store's counts with the statistics of domain/statistics.py.
No gRPC and no SQL."""

from dataclasses import dataclass

from feedback_service.core.records import TagCount, VoteCounts
from feedback_service.domain.statistics import (
    newcombe_interval,
    rate,
    two_proportion_p_value,
    wilson_interval,
)


@dataclass(frozen=True, slots=True)
class VoteGroup:
    """The votes on a set of runs and their positive rate's Wilson interval."""

    label_value: str
    votes: int
    positive: int
    negative: int
    positive_rate: float
    positive_rate_lower: float
    positive_rate_upper: float
    tag_counts: tuple[TagCount, ...]


@dataclass(frozen=True, slots=True)
class TagComparison:
    """One tag's share of each side's votes, and the test that they are equal."""

    tag: str
    baseline_count: int
    candidate_count: int
    baseline_share: float
    candidate_share: float
    p_value: float


@dataclass(frozen=True, slots=True)
class Comparison:
    """A candidate set of runs against a baseline."""

    baseline: VoteGroup
    candidate: VoteGroup
    difference: float  # candidate's positive rate minus baseline's
    difference_lower: float
    difference_upper: float
    p_value: float
    tags: tuple[TagComparison, ...]


def vote_group(label_value: str, counts: VoteCounts, confidence: float) -> VoteGroup:
    interval = wilson_interval(counts.positive, counts.votes, confidence)
    return VoteGroup(
        label_value=label_value,
        votes=counts.votes,
        positive=counts.positive,
        negative=counts.negative,
        positive_rate=rate(counts.positive, counts.votes),
        positive_rate_lower=interval.lower,
        positive_rate_upper=interval.upper,
        tag_counts=counts.tags,
    )


def breakdown(counted: dict[str, VoteCounts], confidence: float) -> list[VoteGroup]:
    """One group per label value, most votes first (ties by value)."""
    ordered = sorted(counted.items(), key=lambda item: (-item[1].votes, item[0]))
    return [vote_group(value, counts, confidence) for value, counts in ordered]


def compare(baseline: VoteCounts, candidate: VoteCounts, confidence: float) -> Comparison:
    """The candidate against the baseline: the difference of positive rates
    with Newcombe's interval, the z-test's p-value, and the same test per tag."""
    interval = newcombe_interval(
        candidate.positive, candidate.votes, baseline.positive, baseline.votes, confidence
    )
    base_tags, cand_tags = dict(baseline.tags), dict(candidate.tags)
    tags = tuple(
        TagComparison(
            tag=tag,
            baseline_count=base_tags.get(tag, 0),
            candidate_count=cand_tags.get(tag, 0),
            baseline_share=rate(base_tags.get(tag, 0), baseline.votes),
            candidate_share=rate(cand_tags.get(tag, 0), candidate.votes),
            p_value=two_proportion_p_value(
                cand_tags.get(tag, 0), candidate.votes, base_tags.get(tag, 0), baseline.votes
            ),
        )
        for tag in sorted(base_tags.keys() | cand_tags.keys())
    )
    return Comparison(
        baseline=vote_group("", baseline, confidence),
        candidate=vote_group("", candidate, confidence),
        difference=rate(candidate.positive, candidate.votes) - rate(baseline.positive, baseline.votes),
        difference_lower=interval.lower,
        difference_upper=interval.upper,
        p_value=two_proportion_p_value(
            candidate.positive, candidate.votes, baseline.positive, baseline.votes
        ),
        tags=tags,
    )

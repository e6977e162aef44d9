"""GetFeedbackBreakdown and CompareFeedback through a real channel, on every
backend: votes grouped and selected by run labels, counted one per user and
run, with the intervals and p-values of domain/statistics.py."""

import math

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import thread_registry_pb2 as registry_pb2
from feedback_service.domain.statistics import (
    newcombe_interval,
    two_proportion_p_value,
    wilson_interval,
)
from tests.harness import as_service, as_service_for, as_user, bad_fields, rpc_error

SERVICE = as_service()
RUNS = {
    # run: (thread, labels)
    "r1": ("t-shared", {"release": "1", "model": "a"}),
    "r2": ("t-shared", {"release": "2", "model": "a"}),
    "r3": ("t-shared", {"release": "2", "model": "b"}),
    "r4": ("t-shared", {}),
    "ra": ("t-alice", {"release": "1", "model": "a"}),
}
# run: [(user, rating, tags)], run-level votes.
VOTES = {
    "r1": [("u1", 1, []), ("u2", 1, []), ("u3", -1, ["slow"]), ("u4", -1, ["slow", "incorrect"])],
    "r2": [("u1", 1, []), ("u2", 1, []), ("u3", 1, []), ("u4", -1, ["incorrect"])],
    "r3": [("u1", 1, []), ("u2", -1, ["slow"])],
    "r4": [("u1", -1, [])],
    "ra": [("alice", 1, [])],
}


@pytest.fixture
def rated(client):
    """Runs of two releases (and one without labels), with votes; message-level
    feedback beside them, which is not counted."""
    for thread, owner in (("t-shared", ""), ("t-alice", "alice")):
        request = registry_pb2.RegisterThreadRequest(thread_id=thread, owner_user_id=owner)
        client.registry.RegisterThread(request, metadata=SERVICE)
    for run, (thread, labels) in RUNS.items():
        request = registry_pb2.RegisterRunRequest(thread_id=thread, run_id=run, labels=labels)
        client.registry.RegisterRun(request, metadata=SERVICE)
    for run, votes in VOTES.items():
        thread = RUNS[run][0]
        for user, rating, tags in votes:
            request = pb.UpsertFeedbackRequest(thread_id=thread, run_id=run, rating=rating, tags=tags)
            client.feedback.UpsertFeedback(request, metadata=as_service_for(user))
            # A second write of the same vote, and message-level feedback: still one vote.
            client.feedback.UpsertFeedback(request, metadata=as_service_for(user))
            message = pb.UpsertFeedbackRequest(
                thread_id=thread, run_id=run, rating=-rating, message_id="m1", tags=["other"]
            )
            client.feedback.UpsertFeedback(message, metadata=as_service_for(user))
    return client


def breakdown(client, metadata=SERVICE, **fields) -> pb.GetFeedbackBreakdownResponse:
    return client.feedback.GetFeedbackBreakdown(pb.GetFeedbackBreakdownRequest(**fields), metadata=metadata)


def compare(client, metadata=SERVICE, **fields) -> pb.CompareFeedbackResponse:
    return client.feedback.CompareFeedback(pb.CompareFeedbackRequest(**fields), metadata=metadata)


def counts(group: pb.FeedbackGroup) -> tuple:
    return (
        group.label_value,
        group.votes,
        group.positive,
        group.negative,
        {t.tag: t.count for t in group.tag_counts},
    )


def assert_wilson(group: pb.FeedbackGroup, confidence: float) -> None:
    interval = wilson_interval(group.positive, group.votes, confidence)
    assert group.positive_rate == (group.positive / group.votes if group.votes else 0)
    assert (group.positive_rate_lower, group.positive_rate_upper) == (interval.lower, interval.upper)


def test_votes_are_grouped_by_a_labels_value_most_votes_first(rated):
    groups = breakdown(rated, label_key="release").groups
    assert [counts(g) for g in groups] == [
        ("2", 6, 4, 2, {"incorrect": 1, "slow": 1}),
        ("1", 5, 3, 2, {"incorrect": 1, "slow": 2}),
        ("", 1, 0, 1, {}),
    ]
    for group in groups:
        assert_wilson(group, 0.95)


def test_run_labels_select_the_runs_counted(rated):
    groups = breakdown(rated, label_key="release", run_labels={"model": "a"}).groups
    assert [counts(g) for g in groups] == [
        ("1", 5, 3, 2, {"incorrect": 1, "slow": 2}),
        ("2", 4, 3, 1, {"incorrect": 1}),
    ]
    both = breakdown(rated, label_key="model", run_labels={"model": "a", "release": "2"}).groups
    assert [counts(g) for g in both] == [("a", 4, 3, 1, {"incorrect": 1})]
    assert list(breakdown(rated, label_key="model", run_labels={"model": "zzz"}).groups) == []


def test_a_thread_id_counts_that_thread_only(rated):
    groups = breakdown(rated, label_key="release", thread_id="t-alice").groups
    assert [counts(g) for g in groups] == [("1", 1, 1, 0, {})]
    as_alice = breakdown(rated, as_user("alice"), label_key="model", thread_id="t-alice").groups
    assert [counts(g) for g in as_alice] == [("a", 1, 1, 0, {})]
    assert list(breakdown(rated, label_key="release", thread_id="t-nobody").groups) == []


def test_the_time_window_counts_votes_first_given_in_it(rated):
    long_ago = Timestamp(seconds=86_400)
    assert list(breakdown(rated, label_key="release", end_time=long_ago).groups) == []
    everything = breakdown(rated, label_key="release", start_time=long_ago).groups
    assert everything == breakdown(rated, label_key="release").groups
    far_ahead = Timestamp(seconds=253_402_300_000)
    assert list(breakdown(rated, label_key="release", start_time=far_ahead).groups) == []


def test_confidence_sets_the_intervals_and_0_means_95_percent(rated):
    default = breakdown(rated, label_key="release")
    assert breakdown(rated, label_key="release", confidence=0.95) == default
    wider = breakdown(rated, label_key="release", confidence=0.99).groups
    for group, narrow in zip(wider, default.groups, strict=True):
        assert_wilson(group, 0.99)
        assert group.positive_rate_lower <= narrow.positive_rate_lower
        assert group.positive_rate_upper > narrow.positive_rate_upper


def test_compare_answers_the_difference_its_interval_and_p_value(rated):
    result = compare(rated, baseline_labels={"release": "1"}, candidate_labels={"release": "2"})
    assert counts(result.baseline) == ("", 5, 3, 2, {"incorrect": 1, "slow": 2})
    assert counts(result.candidate) == ("", 6, 4, 2, {"incorrect": 1, "slow": 1})
    assert_wilson(result.baseline, 0.95)
    assert_wilson(result.candidate, 0.95)
    assert math.isclose(result.difference, 4 / 6 - 3 / 5, abs_tol=1e-15)
    interval = newcombe_interval(4, 6, 3, 5, 0.95)
    assert (result.difference_lower, result.difference_upper) == (interval.lower, interval.upper)
    assert result.p_value == two_proportion_p_value(4, 6, 3, 5)
    assert 0 < result.p_value < 1
    tags = {t.tag: t for t in result.tags}
    assert sorted(tags) == ["incorrect", "slow"]
    slow = tags["slow"]
    assert (slow.baseline_count, slow.candidate_count) == (2, 1)
    assert (slow.baseline_share, slow.candidate_share) == (2 / 5, 1 / 6)
    assert slow.p_value == two_proportion_p_value(1, 6, 2, 5)


def test_a_run_in_both_sets_counts_on_both_sides(rated):
    result = compare(
        rated, baseline_labels={"model": "a"}, candidate_labels={"release": "2"}, thread_id="t-shared"
    )
    assert (result.baseline.votes, result.candidate.votes) == (8, 6)


def test_a_side_without_votes_claims_nothing(rated):
    result = compare(rated, baseline_labels={"release": "1"}, candidate_labels={"release": "9"})
    assert result.candidate.votes == 0
    assert (result.candidate.positive_rate_lower, result.candidate.positive_rate_upper) == (0, 1)
    assert (result.difference_lower, result.difference_upper, result.p_value) == (-1, 1, 1)
    assert result.difference == -3 / 5


def test_every_thread_is_for_a_service_acting_as_itself(rated):
    for metadata in (as_user("alice"), as_service_for("alice")):
        for call, fields in (
            (rated.feedback.GetFeedbackBreakdown, pb.GetFeedbackBreakdownRequest(label_key="release")),
            (
                rated.feedback.CompareFeedback,
                pb.CompareFeedbackRequest(baseline_labels={"release": "1"}, candidate_labels={"model": "a"}),
            ),
        ):
            error = rpc_error(call, fields, metadata=metadata)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_another_users_thread_is_not_found(rated):
    error = rpc_error(
        rated.feedback.GetFeedbackBreakdown,
        pb.GetFeedbackBreakdownRequest(label_key="release", thread_id="t-alice"),
        metadata=as_user("bob"),
    )
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "thread t-alice not found")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({}, ["label_key"]),
        ({"label_key": "Release"}, ["label_key"]),
        ({"label_key": "release", "confidence": 0.5}, ["confidence"]),
        ({"label_key": "release", "confidence": 1.0}, ["confidence"]),
        ({"label_key": "release", "confidence": -0.95}, ["confidence"]),
        ({"label_key": "release", "confidence": math.nan}, ["confidence"]),
        ({"label_key": "release", "confidence": math.inf}, ["confidence"]),
        ({"label_key": "release", "run_labels": {"Bad": "1"}}, ["run_labels[Bad]"]),
        ({"label_key": "release", "run_labels": {"release": "a\nb"}}, ["run_labels[release]"]),
        ({"label_key": "release", "thread_id": "no spaces"}, ["thread_id"]),
        (
            {"label_key": "release", "start_time": Timestamp(seconds=10), "end_time": Timestamp(seconds=10)},
            ["end_time"],
        ),
    ],
)
def test_a_bad_breakdown_request_is_invalid_argument_naming_the_field(rated, fields, named):
    error = rpc_error(
        rated.feedback.GetFeedbackBreakdown, pb.GetFeedbackBreakdownRequest(**fields), metadata=SERVICE
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == named


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({}, ["baseline_labels", "candidate_labels"]),
        ({"baseline_labels": {"release": "1"}}, ["candidate_labels"]),
        ({"baseline_labels": {"release": "1"}, "candidate_labels": {"k-": "2"}}, ["candidate_labels[k-]"]),
        (
            {"baseline_labels": {"release": "1"}, "candidate_labels": {"release": "2"}, "confidence": 0.3},
            ["confidence"],
        ),
    ],
)
def test_a_bad_compare_request_is_invalid_argument_naming_the_field(rated, fields, named):
    error = rpc_error(rated.feedback.CompareFeedback, pb.CompareFeedbackRequest(**fields), metadata=SERVICE)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == named

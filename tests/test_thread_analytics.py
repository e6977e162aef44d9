"""GetThreadFeedbackStats and GetFeedbackTimeSeries: the votes of a whole
thread, counted, and over time. On every backend."""

from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from feedback.v1 import feedback_pb2 as pb
from tests.harness import as_service, as_service_for, as_user, bad_fields, inspect_database, register

ALICE = as_user("alice")
BOB = as_user("bob")
SERVICE = as_service()
HOUR = 3600 * 1_000_000
DAY = 24 * HOUR
# Midnight UTC, 2026-11-20: where the time series below start.
BASE = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp()) * 1_000_000


def rate(client, user=ALICE, thread="t-shared", run="rs", rating=1, **fields):
    request = pb.UpsertFeedbackRequest(thread_id=thread, run_id=run, rating=rating, **fields)
    return client.feedback.UpsertFeedback(request, metadata=user)


def failure(call, request, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, **kwargs)
    return raised.value


# --- GetThreadFeedbackStats ----------------------------------------------------------


def thread_stats(client, thread="t-shared", user=ALICE) -> pb.ThreadFeedbackStats:
    request = pb.GetThreadFeedbackStatsRequest(thread_id=thread)
    return client.feedback.GetThreadFeedbackStats(request, metadata=user)


def test_thread_stats_count_one_vote_per_user_and_run_across_runs(world):
    register(world, "t-shared", "", ["rs", "rs2", "rs3"])
    rate(world, run="rs", rating=1, tags=["slow"])
    rate(world, user=BOB, run="rs", rating=-1, tags=["incorrect", "slow"])
    rate(world, run="rs2", rating=-1, tags=["incorrect"])
    # Message-level feedback is not a vote: not counted, its run not "with feedback".
    for i in range(4):
        rate(world, run="rs3", rating=1, message_id=f"m-{i}", tags=["other"])
    rate(world, user=BOB, run="rs", rating=1, message_id="m-1", tags=["other"])
    result = thread_stats(world, user=BOB)
    assert (result.thread_id, result.total, result.positive, result.negative) == ("t-shared", 3, 1, 2)
    assert [(t.tag, t.count) for t in result.tags] == [("incorrect", 2), ("slow", 2)]
    assert result.runs_with_feedback == 2


def test_thread_stats_follow_upserts_and_deletes(world):
    rate(world, rating=1, tags=["slow"])
    rate(world, rating=-1, tags=["other"])
    result = thread_stats(world)
    assert (result.total, result.positive, result.negative, result.runs_with_feedback) == (1, 0, 1, 1)
    assert [(t.tag, t.count) for t in result.tags] == [("other", 1)]
    world.feedback.DeleteRunFeedback(
        pb.DeleteRunFeedbackRequest(thread_id="t-shared", run_id="rs"), metadata=ALICE
    )
    assert thread_stats(world) == pb.ThreadFeedbackStats(thread_id="t-shared")


@pytest.mark.parametrize("thread", ["t-alice", "t-nobody"])
def test_thread_stats_of_a_thread_without_votes_are_zero(world, thread):
    assert thread_stats(world, thread=thread) == pb.ThreadFeedbackStats(thread_id=thread)


def test_thread_stats_count_every_users_votes_for_any_reader(world):
    rate(world, user=BOB, rating=-1)
    for caller in (ALICE, as_service_for("carol"), SERVICE):
        assert thread_stats(world, user=caller).negative == 1


def test_thread_stats_of_someone_elses_thread_are_not_found(world):
    error = failure(
        world.feedback.GetThreadFeedbackStats,
        pb.GetThreadFeedbackStatsRequest(thread_id="t-bob"),
        metadata=ALICE,
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("thread", ["", "t 1", "t" * 129])
def test_thread_stats_need_a_valid_thread_id(world, thread):
    error = failure(
        world.feedback.GetThreadFeedbackStats,
        pb.GetThreadFeedbackStatsRequest(thread_id=thread),
        metadata=SERVICE,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["thread_id"]


# --- GetFeedbackTimeSeries -----------------------------------------------------------


def at(micros: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def series_request(thread="t-shared", bucket=pb.TIME_BUCKET_HOUR, start=BASE, end=BASE + 4 * HOUR, **fields):
    request = pb.GetFeedbackTimeSeriesRequest(thread_id=thread, bucket=bucket, **fields)
    if start is not None:
        request.start_time.CopyFrom(at(start))
    if end is not None:
        request.end_time.CopyFrom(at(end))
    return request


def series(client, user=ALICE, **fields) -> list[tuple[int, int, int]]:
    response = client.feedback.GetFeedbackTimeSeries(series_request(**fields), metadata=user)
    return [(b.start_time.ToMicroseconds(), b.positive, b.negative) for b in response.buckets]


def created_at(database_url: str, feedback_id: str, micros: int) -> None:
    """Moves a feedback's created_at, straight in the database."""
    db = inspect_database(database_url)
    try:
        with db.atomic():
            db.execute_sql(
                f"UPDATE feedback SET created_at = {db.param} WHERE feedback_id = {db.param}",  # noqa: S608
                (micros, feedback_id),
            )
    finally:
        db.close()


def vote_at(client, database_url, micros: int, **fields) -> pb.Feedback:
    feedback = rate(client, **fields)
    created_at(database_url, feedback.feedback_id, micros)
    return feedback


def test_votes_are_counted_per_hour_with_empty_hours_included(world, database_url):
    register(world, "t-shared", "", ["rs", "rs2"])
    vote_at(world, database_url, BASE, rating=1)  # the first instant of the first hour
    vote_at(world, database_url, BASE + HOUR - 1, user=BOB, rating=-1)  # the last of it
    vote_at(world, database_url, BASE + 2 * HOUR + 5, run="rs2", rating=-1)
    vote_at(world, database_url, BASE + 4 * HOUR, user=BOB, run="rs2", rating=1)  # end: excluded
    vote_at(world, database_url, BASE - 1, user=as_user("carol"), rating=1)  # before start: excluded
    assert series(world) == [
        (BASE, 1, 1),
        (BASE + HOUR, 0, 0),
        (BASE + 2 * HOUR, 0, 1),
        (BASE + 3 * HOUR, 0, 0),
    ]
    days = series(world, bucket=pb.TIME_BUCKET_DAY, start=BASE - DAY, end=BASE + DAY)
    assert days == [(BASE - DAY, 1, 0), (BASE, 2, 2)]


def test_only_votes_are_counted_with_their_rating_now_in_the_bucket_first_given(world, database_url):
    vote = vote_at(world, database_url, BASE + HOUR, rating=1)
    vote_at(world, database_url, BASE + HOUR, rating=1, message_id="m-1")  # not a vote
    assert series(world) == [
        (BASE, 0, 0),
        (BASE + HOUR, 1, 0),
        (BASE + 2 * HOUR, 0, 0),
        (BASE + 3 * HOUR, 0, 0),
    ]
    assert rate(world, rating=-1).feedback_id == vote.feedback_id  # an upsert keeps created_at
    assert series(world)[1] == (BASE + HOUR, 0, 1)


def test_every_thread_is_for_services_acting_as_themselves(world, database_url):
    vote_at(world, database_url, BASE, thread="t-shared", run="rs", rating=1)
    vote_at(world, database_url, BASE, thread="t-alice", run="r1", rating=-1)
    vote_at(world, database_url, BASE + HOUR, user=BOB, thread="t-bob", run="rb", rating=-1)
    assert series(world, user=SERVICE, thread="")[:2] == [(BASE, 1, 1), (BASE + HOUR, 0, 1)]
    assert series(world, user=SERVICE, thread="t-alice")[:2] == [(BASE, 0, 1), (BASE + HOUR, 0, 0)]
    for caller in (ALICE, as_service_for("alice")):
        error = failure(world.feedback.GetFeedbackTimeSeries, series_request(thread=""), metadata=caller)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_thread_of_someone_else_is_not_found_and_an_unregistered_one_is_empty(world):
    error = failure(world.feedback.GetFeedbackTimeSeries, series_request(thread="t-bob"), metadata=ALICE)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert series(world, thread="t-nobody") == [(BASE + i * HOUR, 0, 0) for i in range(4)]


@pytest.mark.parametrize(
    ("bucket", "buckets"), [(pb.TIME_BUCKET_HOUR, 744), (pb.TIME_BUCKET_DAY, 366)], ids=["hours", "days"]
)
def test_the_range_is_bounded(world, bucket, buckets):
    width = HOUR if bucket == pb.TIME_BUCKET_HOUR else DAY
    longest = series(world, bucket=bucket, end=BASE + buckets * width)
    assert [start for start, _, _ in longest] == [BASE + i * width for i in range(buckets)]
    request = series_request(bucket=bucket, end=BASE + (buckets + 1) * width)
    error = failure(world.feedback.GetFeedbackTimeSeries, request, metadata=ALICE)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["end_time"]


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"bucket": pb.TIME_BUCKET_UNSPECIFIED}, ["bucket"]),
        ({"bucket": 7}, ["bucket"]),
        ({"start": None}, ["start_time"]),
        ({"end": None}, ["end_time"]),
        ({"start": BASE + 1}, ["start_time"]),
        ({"end": BASE + HOUR + 1}, ["end_time"]),
        ({"bucket": pb.TIME_BUCKET_DAY, "start": BASE + HOUR, "end": BASE + DAY}, ["start_time"]),
        ({"start": BASE + HOUR, "end": BASE + HOUR}, ["end_time"]),
        ({"start": BASE + HOUR, "end": BASE}, ["end_time"]),
        ({"thread": "t 1"}, ["thread_id"]),
    ],
)
def test_bad_requests_are_invalid_and_named(world, fields, bad):
    error = failure(world.feedback.GetFeedbackTimeSeries, series_request(**fields), metadata=SERVICE)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == bad


def test_a_start_with_nanoseconds_is_not_a_boundary(world):
    request = series_request()
    request.start_time.nanos = 1
    error = failure(world.feedback.GetFeedbackTimeSeries, request, metadata=SERVICE)
    assert bad_fields(error) == ["start_time"]

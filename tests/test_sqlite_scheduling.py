"""On SQLite, a read that may visit many rows runs on a database thread with
its own connection, beside the event loop: health and point reads answer
while it runs. Asserted by order, not by time: the long read is seen running
(the store's per-unit gauge) before the short calls are sent, and still
running after they have answered.

Writes keep coming, and the WAL is still started afresh instead of growing
for as long as they do: SQLite's own checkpoint (every thousand pages)
copies it back on a commit."""

import sqlite3
import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar, cast

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from feedback.v1 import feedback_pb2 as pb
from feedback_service.config import sqlite_url
from feedback_service.store.database import open_database
from feedback_service.store.dialects import Dialect
from feedback_service.store.migrations import migrate
from tests.harness import (
    Client,
    as_service,
    as_user,
    register,
    running_server,
    server_settings,
    wait_until,
)

# Enough votes that counting them all takes far longer than a health check
# and a point read; each of them is a vote by another user on one shared run.
VOTES = 200_000
THREAD, RUN = "t-big", "r-big"
DAY_US = 86_400 * 1_000_000
# Midnight UTC, 2026-01-01: the votes are spread over the year that follows.
START = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
DAYS = 365
# Each try starts one long read; a try fails to prove anything only if the
# long read ends before both short calls have answered.
TRIES = 5
CALL_TIMEOUT_S = 60
SERVICE = tuple(as_service())
T = TypeVar("T")
ALICE = tuple(as_user("alice"))


def load_votes(path: Path, votes: int) -> None:
    """A migrated database holding one shared thread with one run, and
    `votes` votes on it spread over DAYS days, written straight to the file."""
    db = open_database(sqlite_url(path))
    migrate(cast(Dialect, db))
    db.close()
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN")
        connection.execute("INSERT INTO thread VALUES (?, '', ?)", (THREAD, START))
        connection.execute("INSERT INTO run VALUES (?, ?, ?)", (RUN, THREAD, START))
        connection.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO feedback (feedback_id, thread_id, run_id, user_id, message_id, rating, "
            "comment, created_at, updated_at, tags) "
            "SELECT 'f-' || i, ?, ?, 'u-' || i, '', CASE i % 4 WHEN 3 THEN -1 ELSE 1 END, '', "
            "? + (i - 1) * ?, ? + (i - 1) * ?, '' FROM n",
            (votes, THREAD, RUN, START, DAYS * DAY_US // votes, START, DAYS * DAY_US // votes),
        )
        connection.execute("COMMIT")
    finally:
        connection.close()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory of a database with VOTES votes, built once."""
    data_dir = tmp_path_factory.mktemp("votes")
    load_votes(data_dir / "feedback.db", VOTES)
    return data_dir


@pytest.fixture
def big(loaded: Path) -> Iterator[Client]:
    with running_server(server_settings(loaded)) as (_, client):
        yield client


def at(micros: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def every_thread_series() -> pb.GetFeedbackTimeSeriesRequest:
    """Every thread's votes per day over the year: it counts every vote."""
    return pb.GetFeedbackTimeSeriesRequest(
        bucket=pb.TIME_BUCKET_DAY, start_time=at(START), end_time=at(START + DAYS * DAY_US)
    )


def series_running() -> float:
    """How many time series run on a database thread now (the store's gauge)."""
    value = REGISTRY.get_sample_value("feedback_db_thread_work_running", {"work": "time_series"})
    return value or 0.0


def started_or_done(call: "grpc.Future[pb.GetFeedbackTimeSeriesResponse]") -> Callable[[], bool]:
    return lambda: series_running() >= 1 or call.done()


def test_the_long_read_counts_every_vote(big: Client) -> None:
    response = big.feedback.GetFeedbackTimeSeries(every_thread_series(), metadata=SERVICE)
    assert sum(b.positive + b.negative for b in response.buckets) == VOTES
    assert len(response.buckets) == DAYS


def during_a_long_read(big: Client, calls: Callable[[], T]) -> T:
    """What `calls` returned in a try where they all answered while an
    every-thread time series ran on its thread: seen running before they
    began and still running once they had answered."""
    for _ in range(TRIES):
        assert series_running() == 0
        long_read = big.feedback.GetFeedbackTimeSeries.future(
            every_thread_series(), metadata=SERVICE, timeout=CALL_TIMEOUT_S
        )
        wait_until(started_or_done(long_read), CALL_TIMEOUT_S)
        started_first = not long_read.done()
        answers = calls()
        still_running = series_running() >= 1 and not long_read.done()
        assert long_read.result().buckets  # the long read itself succeeds
        if started_first and still_running:
            return answers
    pytest.fail(f"in {TRIES} tries, the long read never ran for the whole of the calls")


def test_health_and_a_point_read_answer_while_a_long_read_runs(big: Client) -> None:
    health = health_pb2_grpc.HealthStub(big.channel)
    stats_request = pb.GetFeedbackStatsRequest(thread_id=THREAD, run_id=RUN)
    expected_total = big.feedback.GetFeedbackStats(stats_request, metadata=ALICE).total
    assert expected_total == VOTES
    checked, stats = during_a_long_read(
        big,
        lambda: (
            health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S),
            big.feedback.GetFeedbackStats(stats_request, metadata=ALICE, timeout=CALL_TIMEOUT_S),
        ),
    )
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    assert stats.total == expected_total


def over_budget(work: str) -> float:
    """Reads of this unit that went past their step budget on the loop (the store's counter)."""
    value = REGISTRY.get_sample_value("feedback_db_reads_over_budget_total", {"work": work})
    return value or 0.0


# No vote carries a comment: the filter passes over every vote of the thread
# and finds none, far past the step budget of a read on the loop.
NO_MATCH = pb.ListThreadFeedbackRequest(thread_id=THREAD, has_comment=True, page_size=10)


def test_a_read_past_its_step_budget_runs_again_on_the_reader_thread(big: Client) -> None:
    before = over_budget("feedback_page")
    page = big.feedback.ListThreadFeedback(NO_MATCH, metadata=SERVICE, timeout=CALL_TIMEOUT_S)
    assert list(page.feedback) == [] and not page.next_page_token
    assert over_budget("feedback_page") == before + 1


def test_a_read_on_the_reader_thread_does_not_wait_behind_a_scan(big: Client) -> None:
    # The list goes past its budget on the loop and runs on the reader thread,
    # while the time series (a scan) runs on a scan thread.
    def listed() -> tuple[pb.ListThreadFeedbackResponse, float]:
        before = over_budget("feedback_page")
        page = big.feedback.ListThreadFeedback(NO_MATCH, metadata=SERVICE, timeout=CALL_TIMEOUT_S)
        return page, over_budget("feedback_page") - before

    page, moved = during_a_long_read(big, listed)
    assert list(page.feedback) == []
    assert moved == 1  # it did run on the reader thread


def wal_generation(path: Path) -> int:
    """The WAL header's checkpoint sequence number: SQLite adds one each time
    it starts the WAL afresh, which it does only once a checkpoint has copied
    all of it."""
    with path.open("rb") as wal:
        header = wal.read(16)
    return int(struct.unpack(">I", header[12:16])[0])


def test_writes_keep_coming_and_the_wal_still_starts_afresh(tmp_path: Path) -> None:
    writes = 300  # about 16 pages each: several thousand pages of WAL
    with running_server(server_settings(tmp_path)) as (_, client):
        register(client, "t-w", "", ["r-w"])
        wal = tmp_path / "feedback.db-wal"
        first = wal_generation(wal)
        for i in range(writes):
            request = pb.CreateFeedbackRequest(thread_id="t-w", run_id="r-w", rating=1, message_id=f"m-{i}")
            client.feedback.CreateFeedback(request, metadata=ALICE)
        assert wal_generation(wal) > first

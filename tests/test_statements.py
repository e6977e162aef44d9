"""How many SQL statements each FeedbackService RPC sends to the database.

On PostgreSQL and MySQL every statement is a round trip, so each read is one
statement with the thread rule inside it. A write is its own statement, with
the thread rule inside it (an upsert also replaces the feedback's tags),
followed in the same transaction by its change-log append (store/changes.py):
on PostgreSQL one insert, the change with its transaction's id; elsewhere
advance the log's head, then insert the change, which gives the change feed
its commit order. On PostgreSQL a create or an upsert, with its tags, change
and request id, goes in one message (store/one_round_trip.py), which also
spares BEGIN and COMMIT. MySQL has no RETURNING, so it reads
back what an upsert stored, the head it advanced, and the keys a delete is
about to remove. On SQLite, with no round trip to save, a user's read looks
the thread's owner up first, which costs less than the join.

Statements are counted from Peewee's own query log of the server under test,
which logs every statement it executes; no timing is involved.
"""

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from feedback.v1 import feedback_pb2 as pb
from tests.harness import as_service, as_user, local_metric, register, wait_until

ALICE = as_user("alice")


class StatementLog(logging.Handler):
    """Collects the SQL Peewee executes, leaving out the health probe's."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statements: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        sql = record.msg[0] if isinstance(record.msg, tuple) else str(record.msg)
        if sql.strip().upper() != "SELECT 1":
            with self._lock:
                self.statements.append(sql)


@contextmanager
def counted() -> Iterator[StatementLog]:
    log = StatementLog()
    logger = logging.getLogger("peewee")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(log)
    try:
        yield log
    finally:
        logger.removeHandler(log)
        logger.setLevel(level)


def calls(client, feedback_id: str) -> dict[str, tuple]:
    """One successful call of each RPC as alice: (stub method, request)."""
    f = client.feedback
    return {
        "CreateFeedback": (f.CreateFeedback, pb.CreateFeedbackRequest(thread_id="t", run_id="r2", rating=1)),
        "UpsertFeedback": (f.UpsertFeedback, pb.UpsertFeedbackRequest(thread_id="t", run_id="r1", rating=-1)),
        "ListFeedback": (f.ListFeedback, pb.ListFeedbackRequest(thread_id="t", run_id="r1")),
        "ListThreadFeedback": (f.ListThreadFeedback, pb.ListThreadFeedbackRequest(thread_id="t")),
        "GetFeedbackStats": (f.GetFeedbackStats, pb.GetFeedbackStatsRequest(thread_id="t", run_id="r1")),
        "BatchGetFeedbackStats": (
            f.BatchGetFeedbackStats,
            pb.BatchGetFeedbackStatsRequest(thread_id="t", run_ids=["r1", "r2"]),
        ),
        "DeleteFeedback": (
            f.DeleteFeedback,
            pb.DeleteFeedbackRequest(thread_id="t", run_id="r1", feedback_id=feedback_id),
        ),
        "DeleteRunFeedback": (f.DeleteRunFeedback, pb.DeleteRunFeedbackRequest(thread_id="t", run_id="r2")),
    }


READS = {"ListFeedback", "ListThreadFeedback", "GetFeedbackStats", "BatchGetFeedbackStats"}
# Insert the change with its transaction's id (PostgreSQL), or advance the
# head and insert the change at the position taken.
# On MySQL, the head's advance, the insert and the COMMIT in one message.
CHANGE_LOG = {"postgresql": 1, "sqlite": 2, "mysql": 1}


def expected(backend: str, rpc: str) -> int:
    if rpc in READS:
        return 2 if backend == "sqlite" else 1  # SQLite: the owner, then the read
    if backend == "postgresql" and rpc in {"CreateFeedback", "UpsertFeedback"}:
        return 1  # the write with its tags and change, in one message (store/one_round_trip.py)
    # Upserting an existing feedback also deletes its old tags (the new ones,
    # here none, would be inserted next).
    write = 2 if rpc == "UpsertFeedback" else 1
    if backend == "mysql" and rpc != "CreateFeedback":
        write += 1  # and the row upserted, or the keys deleted, read back
    return write + CHANGE_LOG[backend]


def quiet() -> None:
    """Waits until no unit of work runs on a database thread: the prune every
    server runs at start (queued before anything registered after it) would
    otherwise be counted with a call's statements."""
    wait_until(lambda: local_metric("feedback_db_connections_in_use") == 0)


@pytest.fixture
def backend(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else database_url.split(":")[0]


def test_each_rpc_as_a_user_sends_the_statements_it_should(client, backend):
    register(client, "t", "alice", ["r1", "r2"])
    created = client.feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t", run_id="r1", rating=1), metadata=ALICE
    )
    quiet()
    sent = {}
    for rpc, (method, request) in calls(client, created.feedback_id).items():
        with counted() as log:
            method(request, metadata=ALICE)
        sent[rpc] = len(log.statements)
    assert sent == {rpc: expected(backend, rpc) for rpc in sent}


def test_a_service_read_skips_the_thread_rule_and_sends_one_statement(client):
    register(client, "t", "alice", ["r1"])
    quiet()
    for method, request in (
        (client.feedback.ListFeedback, pb.ListFeedbackRequest(thread_id="t", run_id="r1")),
        (client.feedback.GetFeedbackStats, pb.GetFeedbackStatsRequest(thread_id="t", run_id="r1")),
    ):
        with counted() as log:
            method(request, metadata=as_service())
        assert len(log.statements) == 1, log.statements

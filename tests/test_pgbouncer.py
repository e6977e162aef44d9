"""The service through PgBouncer in transaction pooling mode, as production
scales out: each transaction may run on another server connection, so
nothing may rely on a session (a session's advisory lock, a prepared
statement, a setting). Two server processes start together on an empty
database through it (migrations take turns with a transaction's lock), then
write and stream through it: every change once, request ids honoured across
processes, and no lock left behind.

Needs a PgBouncer: .ci/pgbouncer.sh starts one on 127.0.0.1:6432; set
FEEDBACK_TEST_PGBOUNCER_URL to the test database through it."""

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from peewee import InterfaceError, OperationalError

from feedback.v1 import feedback_pb2 as pb
from feedback_service.store.database import open_database
from feedback_service.store.migrations import SCHEMA_VERSION, current_version, migrate
from tests.harness import (
    BACKEND_URLS,
    JWT_SECRET,
    REQUIRE_BACKENDS,
    Client,
    ServiceProcess,
    as_service,
    as_user,
    inspect_database,
    register,
    reset_database,
    separate_channel,
)

PGBOUNCER_URL = os.environ.get("FEEDBACK_TEST_PGBOUNCER_URL", "")


def _unusable() -> str | None:
    if not PGBOUNCER_URL:
        return (
            "FEEDBACK_TEST_PGBOUNCER_URL is not set (.ci/pgbouncer.sh starts a PgBouncer on 127.0.0.1:6432)"
        )
    db = inspect_database(PGBOUNCER_URL)
    try:
        db.execute_sql("SELECT 1")
    except (OperationalError, InterfaceError) as error:
        return f"PgBouncer at {PGBOUNCER_URL} is not usable ({type(error).__name__}: {error})"
    finally:
        db.close()
    return None


@pytest.fixture
def pgbouncer_url() -> Iterator[str]:
    """The test database through PgBouncer, its schema dropped first."""
    problem = _unusable()
    if problem:
        if REQUIRE_BACKENDS and PGBOUNCER_URL:
            pytest.fail(problem)
        pytest.skip(problem)
    direct = BACKEND_URLS["postgres"]
    reset_database(direct)
    yield PGBOUNCER_URL
    db = open_database(direct)  # leave the schema as the other tests expect it
    migrate(db)
    db.close()


def _start(url: str, data_dir: Path) -> ServiceProcess:
    return ServiceProcess(data_dir, database_url=url, jwt_secret=JWT_SECRET)


def test_two_processes_migrate_write_and_stream_through_pgbouncer(pgbouncer_url, tmp_path):
    with ThreadPoolExecutor(2) as pool:  # both migrate the empty database at start
        starting = [pool.submit(_start, pgbouncer_url, tmp_path / name) for name in ("a", "b")]
        services = [future.result(timeout=120) for future in starting]
    clients = [Client(separate_channel(service.address)) for service in services]
    try:
        register(clients[0], "t1", "", ["r1", "r2"])
        created = [
            clients[i % 2].feedback.CreateFeedback(
                pb.CreateFeedbackRequest(
                    thread_id="t1", run_id="r1", rating=1, message_id=f"m{i}", tags=["slow"]
                ),
                metadata=as_user("alice"),
            )
            for i in range(10)
        ]
        upserted = clients[1].feedback.UpsertFeedback(
            pb.UpsertFeedbackRequest(thread_id="t1", run_id="r2", rating=-1, tags=["incorrect"]),
            metadata=as_user("bob"),
        )
        # A request id claimed through one process answers its repeat through the other.
        request_id = str(uuid.uuid4())
        request = pb.CreateFeedbackRequest(thread_id="t1", run_id="r2", rating=1, request_id=request_id)
        first = clients[0].feedback.CreateFeedback(request, metadata=as_user("carol"))
        again = clients[1].feedback.CreateFeedback(request, metadata=as_user("carol"))
        assert again == first
        clients[1].feedback.DeleteFeedback(
            pb.DeleteFeedbackRequest(thread_id="t1", run_id="r1", feedback_id=created[0].feedback_id),
            metadata=as_user("alice"),
        )
        streams = [
            list(
                client.feedback.StreamFeedbackChanges(
                    pb.StreamFeedbackChangesRequest(), metadata=as_service()
                )
            )
            for client in clients
        ]
        assert streams[0] == streams[1]
        expected = [*(f.feedback_id for f in created), upserted.feedback_id, first.feedback_id]
        assert [c.feedback.feedback_id for c in streams[0]] == [*expected, created[0].feedback_id]
        assert [c.kind for c in streams[0]][-1] == pb.CHANGE_KIND_DELETED
        # Resuming through the other process gives the rest.
        resumed = clients[0].feedback.StreamFeedbackChanges(
            pb.StreamFeedbackChangesRequest(after_cursor=streams[1][4].cursor), metadata=as_service()
        )
        assert list(resumed) == streams[0][5:]
    finally:
        for client in clients:
            client.channel.close()
        for service in services:
            service.terminate()
    direct = inspect_database(BACKEND_URLS["postgres"])
    try:
        assert current_version(direct) == SCHEMA_VERSION
        held = direct.execute_sql(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()[0]
        assert held == 0, "a migration lock was left held on a pooled server connection"
    finally:
        direct.close()

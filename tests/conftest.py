"""Fixtures: a real server per test, on SQLite and (where reachable) on
PostgreSQL and MariaDB/MySQL."""

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from feedback.v1 import thread_registry_pb2 as registry_pb2
from feedback_service.config import sqlite_url
from feedback_service.store.database import open_database
from feedback_service.store.migrations import migrate
from feedback_service.store.models import Feedback, FeedbackChange, IdempotentRequest, Run, Thread
from tests.harness import BACKEND_URLS, Client, as_service, reset_database, running_server, server_settings

BACKENDS = ["sqlite", "postgres", "mysql"]
# CI sets this so that a missing database server fails the run instead of skipping.
REQUIRE_BACKENDS = os.environ.get("FEEDBACK_REQUIRE_BACKENDS") == "1"
_prepared: dict[str, str | None] = {}


def _prepare(backend: str) -> str | None:
    """Resets the backend's schema once per session; returns why it is unusable."""
    if backend not in _prepared:
        url = BACKEND_URLS[backend]
        try:
            reset_database(url)
            db = open_database(url)
            migrate(db)
            db.close()
            _prepared[backend] = None
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            _prepared[backend] = f"{exc.__class__.__name__}: {exc}".splitlines()[0]
    return _prepared[backend]


def _clean(url: str) -> None:
    """Empties the tables; the change log's head (its id, its last and pruned
    positions) stays, so positions keep growing from test to test."""
    db = open_database(url)
    with db.connection_context(), db.atomic():
        for model in (Feedback, Run, Thread, FeedbackChange, IdempotentRequest):
            model.delete().execute()
    db.close()


def backend_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return sqlite_url(tmp_path / "feedback.db")
    problem = _prepare(backend)
    if problem:
        message = (
            f"{backend} at {BACKEND_URLS[backend]} is not usable ({problem}); start it or set "
            f"FEEDBACK_TEST_{backend.upper()}_URL"
        )
        if REQUIRE_BACKENDS:
            pytest.fail(message)
        pytest.skip(message)
    _clean(BACKEND_URLS[backend])
    return BACKEND_URLS[backend]


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path: Path) -> str:
    return backend_url(request.param, tmp_path)


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[Client]:
    """A client of a fresh server, once per backend."""
    with running_server(server_settings(tmp_path, database_url=database_url)) as (_, client):
        yield client


@pytest.fixture
def sqlite_client(tmp_path: Path) -> Iterator[Client]:
    """A client of a fresh server on SQLite, for behaviour no backend changes."""
    with running_server(server_settings(tmp_path)) as (_, client):
        yield client


@pytest.fixture
def world(client: Client) -> Client:
    """Threads: alice's (runs r1, r2), bob's (run rb), a shared one (run rs)."""
    register(client, "t-alice", "alice", ["r1", "r2"])
    register(client, "t-bob", "bob", ["rb"])
    register(client, "t-shared", "", ["rs"])
    return client


def register(client: Client, thread_id: str, owner: str, run_ids: list[str]) -> None:
    client.registry.RegisterThread(
        registry_pb2.RegisterThreadRequest(thread_id=thread_id, owner_user_id=owner), metadata=as_service()
    )
    for run_id in run_ids:
        client.registry.RegisterRun(
            registry_pb2.RegisterRunRequest(thread_id=thread_id, run_id=run_id), metadata=as_service()
        )


def rpc_error(call, request, **kwargs) -> grpc.RpcError:
    """The error a call fails with (the test fails if it succeeds)."""
    with pytest.raises(grpc.RpcError) as raised:
        call(request, **kwargs)
    return raised.value


def bad_fields(error: grpc.RpcError) -> list[str]:
    """The fields named by an INVALID_ARGUMENT's google.rpc.BadRequest details."""
    status = rpc_status.from_call(error)
    assert status is not None, "INVALID_ARGUMENT without google.rpc.Status details"
    fields = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [violation.field for violation in bad_request.field_violations]
    return fields

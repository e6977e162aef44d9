"""Fixtures: a real server per test, on SQLite and (where reachable) on
PostgreSQL and MariaDB/MySQL. The helpers they use live in tests/harness.py,
which tests import from."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import BACKENDS, Client, backend_url, register, running_server, server_settings


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

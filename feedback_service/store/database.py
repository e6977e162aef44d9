"""Binding the models to a database, and running queries off the event loop."""

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from peewee import Database, InterfaceError, OperationalError, SqliteDatabase
from playhouse import db_url

from feedback_service.domain.errors import Unavailable
from feedback_service.store.models import database

log = logging.getLogger(__name__)
T = TypeVar("T")

SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never block the writer
    "synchronous": "normal",  # durable across process crashes; WAL fsyncs at checkpoints
    "foreign_keys": 1,
    "busy_timeout": 5000,  # wait for another process's write lock instead of failing
}


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def open_database(url: str) -> Database:
    """Creates the Peewee database for a playhouse.db_url URL and binds the models."""
    scheme = urlparse(url).scheme
    options: dict = {}
    if scheme.startswith("sqlite"):
        path = urlparse(url).path[1:]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # BEGIN IMMEDIATE: a write transaction takes the write lock up front, so
        # two writers queue on busy_timeout instead of failing on lock upgrade.
        options = {"pragmas": SQLITE_PRAGMAS, "lock_type": "IMMEDIATE"}
    db = db_url.connect(url, **options)
    database.initialize(db)
    return db


def describe_url(url: str) -> str:
    """The URL without its password, for logs."""
    password = urlparse(url).password
    return url.replace(f":{password}@", ":***@") if password else url


class Store:
    """Runs query functions in a bounded pool of database threads.

    Each thread keeps one connection, so the pool size bounds the connections
    this process opens. A connection that fails is closed and reopened on the
    next call, so a database restart heals without restarting the service.
    """

    def __init__(self, db: Database, workers: int) -> None:
        self.db = db
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="db")

    async def call(self, query: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, query, args)

    def _run(self, query: Callable[..., T], args: tuple) -> T:
        try:
            self.db.connect(reuse_if_open=True)
            return query(*args)
        except (OperationalError, InterfaceError) as exc:
            self._discard_connection()
            log.warning("database error: %s", exc.__class__.__name__)
            raise Unavailable("the database is unavailable; retry later") from exc

    def _discard_connection(self) -> None:
        try:
            self.db.close()
        except Exception:
            log.debug("closing a broken connection failed", exc_info=True)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.db.close()


def is_sqlite(db: Database) -> bool:
    return isinstance(db, SqliteDatabase)

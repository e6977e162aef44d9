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


def open_database(url: str, connect_timeout_s: float = 5) -> Database:
    """Creates the Peewee database for a playhouse.db_url URL and binds the models."""
    scheme = urlparse(url).scheme
    options: dict = {}
    if scheme.startswith(("postgres", "mysql")):
        # Fail fast (UNAVAILABLE) when the server is unreachable instead of hanging.
        options["connect_timeout"] = max(1, round(connect_timeout_s))
    if scheme.startswith("mysql"):
        options["charset"] = "utf8mb4"
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


CONNECTION_ERRORS = (OperationalError, InterfaceError)


class Store:
    """Runs query functions in a bounded pool of database threads.

    Each thread keeps one connection, so the pool size bounds the connections
    this process opens. A connection that fails is closed; if it was an old
    one (say, the database restarted since), the work is retried once on a new
    connection, so a database restart heals without restarting the service.
    While the health probe finds the database down, calls fail fast.
    """

    def __init__(self, db: Database, workers: int) -> None:
        self.db = db
        self.available = True
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="db")
        # The probe has its own thread (and connection) so a busy pool never delays it.
        self._probe_executor = ThreadPoolExecutor(1, thread_name_prefix="db-probe")

    async def call(self, query: Callable[..., T], *args: object) -> T:
        if not self.available:
            raise Unavailable("the database is unavailable; retry later")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, query, args)

    def _run(self, query: Callable[..., T], args: tuple) -> T:
        try:
            fresh = self.db.connect(reuse_if_open=True)
            try:
                return query(*args)
            except CONNECTION_ERRORS:
                if fresh:
                    raise
                self._discard_connection()
                self.db.connect()
                return query(*args)
        except CONNECTION_ERRORS as exc:
            self._discard_connection()
            log.warning(
                "database unavailable: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            )
            raise Unavailable("the database is unavailable; retry later") from exc

    async def probe(self, timeout_s: float) -> bool:
        """Whether the database answers `SELECT 1` in time; updates `available`."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._probe_executor, self._ping), timeout_s)
            self.available = True
        except (Unavailable, TimeoutError):
            self.available = False
        return self.available

    def _ping(self) -> None:
        self._run(lambda: self.db.execute_sql("SELECT 1").fetchone(), ())

    def _discard_connection(self) -> None:
        try:
            self.db.close()
        except Exception:
            log.debug("closing a broken connection failed", exc_info=True)

    def close(self) -> None:
        self._probe_executor.shutdown(wait=True)
        self._executor.shutdown(wait=True)
        self.db.close()


def is_sqlite(db: Database) -> bool:
    return isinstance(db, SqliteDatabase)

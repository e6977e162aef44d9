"""Binding the models to a database, and running queries off the event loop."""

import asyncio
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from peewee import Database, InterfaceError, OperationalError, SqliteDatabase
from playhouse import db_url

from feedback_service.domain.errors import DeadlineExceeded, Unavailable
from feedback_service.observability import DB_IN_USE, DB_POOL_SIZE, call_deadline
from feedback_service.store.models import database

log = logging.getLogger(__name__)
T = TypeVar("T")

SQLITE_PRAGMAS = {
    # First: wait for another process's lock instead of failing, even while
    # the pragmas below are applied to a new connection.
    "busy_timeout": 5000,
    "journal_mode": "wal",  # readers never block the writer
    "synchronous": "normal",  # durable across process crashes; WAL fsyncs at checkpoints
    "foreign_keys": 1,
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
        # READ COMMITTED, as PostgreSQL: no gap locks, so concurrent upserts and
        # deletes of one key do not deadlock each other.
        options.update(
            charset="utf8mb4", init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"
        )
    if scheme.startswith("sqlite"):
        path = urlparse(url).path[1:]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # BEGIN IMMEDIATE: a write transaction takes the write lock up front, so
        # two writers queue on busy_timeout instead of failing on lock upgrade.
        options = {"pragmas": SQLITE_PRAGMAS, "lock_type": "IMMEDIATE", "timeout": 5}
    db = db_url.connect(url, **options)
    database.initialize(db)
    return db


def describe_url(url: str) -> str:
    """The URL without its password, for logs."""
    password = urlparse(url).password
    return url.replace(f":{password}@", ":***@") if password else url


CONNECTION_ERRORS = (OperationalError, InterfaceError)
# Deadlocks and serialisation failures roll a transaction back; it may be rerun.
TRANSIENT_CODES = {"40001", "40P01", 1205, 1213}  # PostgreSQL SQLSTATEs, MySQL error numbers
MAX_ATTEMPTS = 5


def is_transient(exc: Exception) -> bool:
    """A deadlock, serialisation failure or SQLITE_BUSY: nothing was committed."""
    driver_error = exc.__cause__ or exc.__context__  # what peewee wrapped
    if getattr(driver_error, "pgcode", None) in TRANSIENT_CODES:
        return True
    first = exc.args[0] if exc.args else None
    return first in TRANSIENT_CODES or (isinstance(first, str) and first.startswith("database is locked"))


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
        # SQLite has one writer at a time: one writing thread per process queues
        # writes in order instead of letting threads starve on the file lock.
        self._local_file = is_sqlite(db)
        self._writer = (
            ThreadPoolExecutor(1, thread_name_prefix="db-writer") if self._local_file else self._executor
        )
        # The probe has its own thread (and connection) so a busy pool never delays it.
        self._probe_executor = ThreadPoolExecutor(1, thread_name_prefix="db-probe")
        DB_POOL_SIZE.set(workers + (1 if self._writer is not self._executor else 0))

    async def read(self, query: Callable[..., T], *args: object) -> T:
        """Runs a query that only reads. On SQLite it runs right here on the
        event loop: an indexed read of a local file takes microseconds, less
        than handing it to a thread and back; WAL readers never wait for the
        writer."""
        if self._local_file:
            self._check_available()
            return self._run(query, args)
        return await self._submit(self._executor, query, args)

    async def write(self, query: Callable[..., T], *args: object) -> T:
        """Runs a unit of work that writes. On SQLite it is first tried on the
        event loop without waiting for the file lock; only when another writer
        holds it does the work go to the writer thread, which may wait."""
        if self._local_file:
            self._check_available()
            done, result = self._write_without_waiting(query, args)
            if done:
                return result
        return await self._submit(self._writer, query, args)

    def _write_without_waiting(self, query: Callable[..., T], args: tuple) -> tuple[bool, T | None]:
        """(True, result), or (False, None) when SQLite was busy or failed:
        then nothing was written and the caller hands the work on."""
        self.db.connect(reuse_if_open=True)
        connection = self.db.connection()
        connection.execute("PRAGMA busy_timeout = 0")
        try:
            return True, query(*args)
        except CONNECTION_ERRORS:
            return False, None
        finally:
            connection.execute(f"PRAGMA busy_timeout = {SQLITE_PRAGMAS['busy_timeout']}")

    def _check_available(self) -> None:
        """Fails fast while the health probe finds the database down."""
        if not self.available:
            raise Unavailable("the database is unavailable; retry later")

    async def _submit(self, executor: ThreadPoolExecutor, query: Callable[..., T], args: tuple) -> T:
        self._check_available()
        deadline = call_deadline()
        return await asyncio.get_running_loop().run_in_executor(executor, self._run, query, args, deadline)

    def _run(self, query: Callable[..., T], args: tuple, deadline: float | None = None) -> T:
        # Work whose caller has given up (its deadline passed while it queued)
        # is dropped before it touches the database.
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("the deadline passed before the database was reached")
        DB_IN_USE.inc()
        try:
            return self._run_attempts(query, args)
        finally:
            DB_IN_USE.dec()

    def _run_attempts(self, query: Callable[..., T], args: tuple) -> T:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            reused = False
            try:
                reused = not self.db.connect(reuse_if_open=True)
                return query(*args)
            except CONNECTION_ERRORS as exc:
                retry = attempt < MAX_ATTEMPTS
                if retry and is_transient(exc):
                    # The database rolled the whole unit of work back: run it again.
                    time.sleep(random.uniform(0.001, 0.01 * attempt))  # noqa: S311 - jitter, not crypto
                    continue
                self._discard_connection()
                if retry and reused:
                    continue  # an old connection died (say, a database restart): use a new one
                log.warning("database unavailable: %s", (str(exc) or type(exc).__name__).splitlines()[0])
                raise Unavailable("the database is unavailable; retry later") from exc
        raise AssertionError("unreachable")

    async def probe(self, timeout_s: float) -> bool:
        """Whether the database answers `SELECT 1` in time.

        Only a refused or broken connection marks the store unavailable (and
        makes calls fail fast); a slow answer under load does not, or an
        overloaded server would shut itself out.
        """
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._probe_executor, self._ping), timeout_s)
        except Unavailable:
            self.available = False
            return False
        except TimeoutError:
            return False
        self.available = True
        return True

    def _ping(self) -> None:
        self._run_attempts(lambda: self.db.execute_sql("SELECT 1").fetchone(), ())

    def _discard_connection(self) -> None:
        try:
            self.db.close()
        except Exception:
            log.debug("closing a broken connection failed", exc_info=True)

    def close(self) -> None:
        self._probe_executor.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._executor.shutdown(wait=True)
        self.db.close()


def is_sqlite(db: Database) -> bool:
    return isinstance(db, SqliteDatabase)

"""Opening the database, and running units of work on it.

A unit of work is a plain function of a store module (threads.py, writes.py, …) or
store/requests.py. The Store runs it the way the database's dialect asks.

On PostgreSQL and MySQL every unit runs on a bounded pool of database
threads. On SQLite (docs/concurrency-sqlite.md) a unit marked `short`
(short whatever the data: an index lookup of one key, one feedback written)
runs on the event loop when it can finish without waiting for a lock. Any
other read runs there too, first, but SQLite interrupts it past
INLINE_READ_STEPS steps and it runs afresh on a thread: the reader thread,
or for units marked `scan` (analytics) a scan thread, so that a page never
waits behind a count. Writes that are not short, or would wait for the
lock, queue on the one writer thread. So the event loop, which answers
every call, never waits long for the database.

Every path drops work whose deadline has passed before it touches the
database; work that would wait for a lock, or failed because of a deadlock,
a serialisation failure or a dropped connection, goes to (or stays on) the
thread path, which retries it.

When the call being served is traced, each unit of work gets a child span
(`db <function name>`, with db.system) covering its wait for a database
thread and its run, retries included. Otherwise tracing costs one check.
"""

import asyncio
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from opentelemetry import trace
from peewee import InterfaceError, OperationalError
from prometheus_client import Counter, Gauge

from feedback_service.core.errors import DeadlineExceeded, Unavailable
from feedback_service.store.dialects import Dialect, dialect_database
from feedback_service.store.dialects.base import OverBudget
from feedback_service.store.models import database

log = logging.getLogger(__name__)
T = TypeVar("T")
W = TypeVar("W", bound=Callable[..., object])

DB_IN_USE = Gauge(
    "feedback_db_connections_in_use", "Database threads (one connection each) running a query now"
)
DB_POOL_SIZE = Gauge("feedback_db_connections_max", "Database threads (connections) this process may use")
DB_THREAD_WORK = Gauge(
    "feedback_db_thread_work_running",
    "Units of work running on a database thread now, by unit (the store's function name)",
    ["work"],
)

OVER_BUDGET = Counter(
    "feedback_db_reads_over_budget",
    "SQLite reads tried on the event loop that went past their step budget and ran again on a "
    "database thread, by unit",
    ["work"],
)

CONNECTION_ERRORS = (OperationalError, InterfaceError)
MAX_ATTEMPTS = 5
# SQLite: threads for scans (two can count side by side, each mostly in one
# long step without the GIL).
SQLITE_SCAN_THREADS = 2
# SQLite: the steps a read's statement may take on the event loop before it
# is interrupted and run again on its thread (reader or scan). SQLite runs 20,000 to
# 90,000 steps a millisecond, so this holds the loop for a few milliseconds
# at most (benchmarks/reader_threads.py measures what a thread hop costs).
INLINE_READ_STEPS = 50_000


def open_database(url: str, connect_timeout_s: float = 5) -> Dialect:
    """The database of a URL, in its dialect's class, bound to the models."""
    db = dialect_database(url, connect_timeout_s)
    database.initialize(db)
    return db


# The units of work that may run on the event loop, each with the condition
# its arguments must meet (see `short`).
_SHORT: dict[Callable[..., object], Callable[..., bool]] = {}


def _always(*args: object) -> bool:
    return True


def short(work: W) -> W:
    """Marks a unit of work as short whatever the data (benchmarks/percall.py
    measures them at 1M rows): where the dialect allows it, it runs on the
    event loop, which saves a thread hop per call. Every other unit runs on
    a database thread."""
    _SHORT[work] = _always
    return work


def short_when(condition: Callable[..., bool]) -> Callable[[W], W]:
    """Marks a unit of work as short for the calls whose arguments meet
    `condition` (called with the unit's arguments), as `short` does."""

    def mark(work: W) -> W:
        _SHORT[work] = condition
        return work

    return mark


# The units of work that count over whole threads or the whole database
# (analytics). On SQLite they have threads of their own (see Store).
_SCANS: set[Callable[..., object]] = set()


def scan(work: W) -> W:
    """Marks a read that counts over many rows whatever the page size: on
    SQLite, past its step budget on the loop, it runs on the scan threads, so
    a page read never waits behind it."""
    _SCANS.add(work)
    return work


def is_short(work: Callable[..., object], args: tuple[object, ...]) -> bool:
    """Whether this call of a unit of work is marked short."""
    condition = _SHORT.get(work)
    return condition is not None and condition(*args)


def check_deadline(deadline: float | None) -> None:
    """Work whose caller has given up (its deadline, a time.monotonic() value,
    has passed) is dropped before it touches the database."""
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded("the deadline passed before the database was reached")


class Store:
    """Runs units of work on one database. Each database thread keeps one
    connection, so the pool size bounds the connections this process opens.
    While the health probe finds the database down, calls fail fast."""

    def __init__(self, db: Dialect, workers: int, tracer: trace.Tracer | None = None) -> None:
        self.db = db
        self._tracer = tracer
        self.available = True
        self._inline = db.inline_first
        self._inline_thread_claimed = False
        if db.single_writer:
            # SQLite work holds the GIL for every row it steps through: threads
            # that read side by side mostly wait on each other, and CPU per
            # call doubled from one reader thread to two (docs/concurrency-sqlite.md).
            # So one thread reads pages and batches, and scans have their own,
            # so that a page read never waits behind a count over the database.
            scanners = min(workers, SQLITE_SCAN_THREADS)
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="db-read")
            self._scanner = ThreadPoolExecutor(scanners, thread_name_prefix="db-scan")
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
            DB_POOL_SIZE.set(2 + scanners)
        else:
            self._reader = self._scanner = self._writer = ThreadPoolExecutor(workers, thread_name_prefix="db")
            DB_POOL_SIZE.set(workers)
        # The probe has its own thread (and connection) so a busy pool never delays it.
        self._probe_thread = ThreadPoolExecutor(1, thread_name_prefix="db-probe")

    async def read(self, work: Callable[..., T], *args: object, deadline: float | None = None) -> T:
        """Runs a unit of work that only reads."""
        executor = self._scanner if work in _SCANS else self._reader
        return await self._run(executor, work, args, deadline)

    async def write(self, work: Callable[..., T], *args: object, deadline: float | None = None) -> T:
        """Runs a unit of work that writes."""
        return await self._run(self._writer, work, args, deadline)

    async def _run(
        self,
        executor: ThreadPoolExecutor,
        work: Callable[..., T],
        args: tuple[object, ...],
        deadline: float | None,
    ) -> T:
        if self._tracer is None or not trace.get_current_span().is_recording():
            return await self._run_work(executor, work, args, deadline)
        with self._tracer.start_as_current_span(
            f"db {getattr(work, '__name__', 'work')}",
            kind=trace.SpanKind.CLIENT,
            attributes={"db.system": self.db.system},
            record_exception=False,  # its message may quote a value
            set_status_on_exception=False,
        ) as span:
            try:
                return await self._run_work(executor, work, args, deadline)
            except Exception as error:
                span.set_status(trace.StatusCode.ERROR, type(error).__name__)
                raise

    async def _run_work(
        self,
        executor: ThreadPoolExecutor,
        work: Callable[..., T],
        args: tuple[object, ...],
        deadline: float | None,
    ) -> T:
        if not self.available:
            raise Unavailable("the database is unavailable; retry later")
        check_deadline(deadline)
        short = self._inline and is_short(work, args)
        if short or (self._inline and executor is not self._writer):
            try:
                return self._inline_run(work, args, budget=not short)
            except (OverBudget, *CONNECTION_ERRORS):  # it would have waited, went past its
                pass  # budget, or the connection failed: nothing was committed; the thread runs it afresh
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self._attempts, work, args, deadline)

    def _inline_run(self, work: Callable[..., T], args: tuple[object, ...], *, budget: bool) -> T:
        """Runs a unit on the event loop: a short one as it is, any other read
        within INLINE_READ_STEPS."""
        if not self._inline_thread_claimed:  # the event loop's thread, on its first call
            self.db.claim_inline_thread()
            self._inline_thread_claimed = True
        if not budget:
            return work(*args)
        try:
            with self.db.step_budget(INLINE_READ_STEPS):
                return work(*args)
        except OverBudget:
            OVER_BUDGET.labels(getattr(work, "__name__", "work")).inc()
            raise

    def _attempts(self, work: Callable[..., T], args: tuple[object, ...], deadline: float | None) -> T:
        check_deadline(deadline)  # it may have queued for a thread past its deadline
        DB_IN_USE.inc()
        running = DB_THREAD_WORK.labels(getattr(work, "__name__", "work"))
        running.inc()
        try:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                reused = False
                try:
                    reused = not self.db.connect(reuse_if_open=True)
                    return work(*args)
                except CONNECTION_ERRORS as exc:
                    retry = attempt < MAX_ATTEMPTS
                    if retry and self.db.is_transient(exc):
                        # The database rolled the whole unit of work back: run it again.
                        time.sleep(random.uniform(0.001, 0.01 * attempt))  # noqa: S311 - jitter, not crypto
                        continue
                    self._discard_connection()
                    if retry and reused:
                        continue  # an old connection died (say, a database restart): use a new one
                    log.warning("database unavailable: %s", (str(exc) or type(exc).__name__).splitlines()[0])
                    raise Unavailable("the database is unavailable; retry later") from exc
            raise AssertionError("unreachable")
        finally:
            running.dec()
            DB_IN_USE.dec()

    async def probe(self, timeout_s: float) -> bool:
        """Whether the database answers `SELECT 1` in time.

        Only a refused or broken connection marks the store unavailable (and
        makes calls fail fast); a slow answer under load does not, or an
        overloaded server would shut itself out.
        """
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._probe_thread, self._ping), timeout_s)
        except Unavailable:
            self.available = False
            return False
        except TimeoutError:
            return False
        self.available = True
        return True

    def _ping(self) -> None:
        def ping() -> None:
            self.db.execute_sql("SELECT 1").fetchone()

        self._attempts(ping, (), None)

    def _discard_connection(self) -> None:
        try:
            self.db.close()
        except Exception:
            log.debug("closing a broken connection failed", exc_info=True)

    def close(self) -> None:
        for executor in {self._probe_thread, self._writer, self._reader, self._scanner}:
            executor.shutdown(wait=True)
        self.db.close()

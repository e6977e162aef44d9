"""One class per database dialect, chosen once from the URL: everything that
differs between SQLite, PostgreSQL and MySQL/MariaDB lives here, and no other
module asks which database it is talking to.

Each class is the Peewee database itself with our dialect mixed in, in the way
playhouse/pool.py builds its pooled databases. A dialect holds:
- how to connect (options, session settings) and its table settings;
- the migration lock that serialises replicas starting together;
- the statement shapes that differ (an upsert that returns the stored row,
  a counter that returns its new value, a delete that returns what it
  deleted);
- its execution policy: whether work is first tried on the event loop
  without waiting, whether writes queue on one writer thread, and which
  errors mean "nothing was committed, run it again".
"""

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlparse

import peewee
from peewee import (
    SQL,
    Database,
    ExceptionWrapper,
    Expression,
    Field,
    Insert,
    MySQLDatabase,
    Node,
    PostgresqlDatabase,
    Select,
    SqliteDatabase,
    Update,
    fn,
)
from playhouse import db_url
from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase

MIGRATION_LOCK = 0x6665_6564  # an arbitrary, fixed advisory lock id
# Raises a driver's errors as peewee's (IntegrityError, OperationalError...).
_DRIVER_ERRORS = ExceptionWrapper(
    {
        name: getattr(peewee, name)
        for name in (
            "DatabaseError",
            "DataError",
            "IntegrityError",
            "InterfaceError",
            "InternalError",
            "NotSupportedError",
            "OperationalError",
            "ProgrammingError",
        )
    }
)
# MySQL's client capability flag (CLIENT.MULTI_STATEMENTS in PyMySQL and mysqlclient).
CLIENT_MULTI_STATEMENTS = 1 << 16


if TYPE_CHECKING:
    # To the type checker the mixin is the Database it is always mixed into.
    _Mixin = Database
else:
    _Mixin = object


class Dialect(_Mixin):
    """The mixin; the defaults suit a server database reached over a network."""

    # The database's name in traces (OpenTelemetry's db.system).
    system: ClassVar[str]
    # Run each short unit of work (store/database.py's `short`) first on the
    # event loop, with no waiting for locks; work that would wait, and every
    # unit not marked short, goes to a database thread.
    inline_first: ClassVar[bool] = False
    # Writes queue on one thread per process (the database has one writer).
    single_writer: ClassVar[bool] = False
    # Writes between two checkpoints the Store runs on the writer thread (0:
    # the database checkpoints by itself); see `checkpoint`.
    checkpoint_every: ClassVar[int] = 0
    # A read that must also learn the thread's owner does both in one
    # statement (a join), as a round trip costs more than the join.
    one_statement_reads: ClassVar[bool] = True
    # Appended to CREATE TABLE.
    table_settings: ClassVar[tuple[str, ...]] = ()
    # Error codes of deadlocks and serialisation failures: the database rolled
    # the whole unit of work back, so it may be run again.
    transient_codes: ClassVar[frozenset[object]] = frozenset()
    # SQL's remainder operator, as the driver wants it in statement text:
    # drivers with %s placeholders read a lone % as one.
    remainder_operator: ClassVar[str] = "%%"
    # The change log's order (store/changes.py). None: changes take dense
    # positions from the log's head, whose row lock queues writers until they
    # commit. Else the SQL of the writing transaction's id, stored with each
    # change, and of the reader's horizon: every transaction with a lower id
    # has ended, so the changes below it are final.
    change_xact: ClassVar[Node | None] = None
    change_horizon: ClassVar[Node | None] = None
    # A create or an upsert, with its tags, change and request id, is one
    # round trip (store/one_round_trip.py).
    one_round_trip_writes: ClassVar[bool] = False
    # The change log's head is advanced, the changes inserted and the
    # transaction committed in one message (`run_last`), so the head's lock
    # is held for no round trip at all.
    appends_in_one_message: ClassVar[bool] = False

    @classmethod
    def connect_options(cls, url: str, connect_timeout_s: float) -> dict[str, Any]:
        # Fail fast (UNAVAILABLE) when the server is unreachable instead of hanging.
        return {"connect_timeout": max(1, round(connect_timeout_s))}

    def claim_inline_thread(self) -> None:
        """Marks the calling thread (the event loop's) as the one that runs
        work inline; only dialects with `inline_first` use it."""

    def checkpoint(self) -> None:
        """Copies what the log of committed writes holds into the database
        file, where the database leaves that to its client."""

    def is_transient(self, error: Exception) -> bool:
        driver_error = error.__cause__ or error.__context__  # what peewee wrapped
        if getattr(driver_error, "pgcode", None) in self.transient_codes:
            return True
        first = error.args[0] if error.args else None
        return first in self.transient_codes

    def migration_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held by one process at a time while it migrates (a session lock)."""
        return contextlib.nullcontext()

    def lock_migration_step(self) -> None:
        """Called first in each migration step's transaction: a lock held
        until that transaction ends."""

    def locking(self, query: Select) -> Select:
        """The query, made to lock the rows it reads until the transaction
        ends. FOR UPDATE, as PostgreSQL and MariaDB spell a shared lock
        differently."""
        return query.for_update()

    def upsert(
        self,
        insert: Insert,
        *,
        key: tuple[Field, ...],
        preserve: tuple[Field, ...],
        returning: tuple[Field, ...],
    ) -> Insert:
        """The upsert statement: `insert`, or on a conflict on `key` an update
        of the `preserve` columns, returning the stored row's `returning`."""
        return insert.on_conflict(conflict_target=key, preserve=preserve).returning(*returning)

    def run_upsert(self, statement: tuple[str, list[object]], read_back: Callable[[], Any]) -> Any:
        """Runs a statement from `upsert` inside the caller's transaction;
        returns the stored row."""
        return self.execute_sql(*statement).fetchone()

    def advance(self, column: Field, by: int, where: Expression) -> Update:
        """The statement adding `by` to `column` in the one row `where`
        selects, which locks that row until the transaction ends; run it with
        `run_advance`, which returns the column's new value."""
        statement: Update = column.model.update({column: column + by}).where(where).returning(column)
        return statement

    def run_advance(self, statement: tuple[str, list[object]]) -> int:
        new_value: int = self.execute_sql(*statement).fetchone()[0]
        return new_value

    def advanced_value(self, minus: int) -> Node:
        """In a statement that follows an `advance` in the same message: the
        advanced column's new value, less `minus`."""
        raise NotImplementedError

    def run_last(self, statements: list[tuple[str, list[Any]]]) -> None:
        """Runs the last statements of the caller's transaction."""
        for statement in statements:
            self.execute_sql(*statement)

    def deleted_rows(
        self,
        delete_returning: Callable[[], list[tuple[Any, ...]]],
        lock_then_delete: Callable[[], list[tuple[Any, ...]]],
    ) -> list[tuple[Any, ...]]:
        """Deletes rows and returns them, the way this database can: one
        DELETE ... RETURNING, or else reading and locking the rows, then
        deleting exactly those (in the caller's transaction)."""
        return delete_returning()

    def remainder(self, dividend: Node, divisor: Node) -> Expression:
        """`dividend % divisor` (integers; peewee spells `%` as LIKE)."""
        return Expression(dividend, self.remainder_operator, divisor)


class SqliteDialect(Dialect, SqliteDatabase):
    """A local file: short reads and writes take microseconds, so they run on
    the event loop when they need not wait (WAL readers never do; a writer
    waits only for another process's write lock). Reads that may visit many
    rows run on the database threads, each with its own connection (WAL lets
    them read beside the writer). Writes that would wait, or may visit many
    rows, queue on one writer thread instead of starving each other on the
    file lock."""

    system = "sqlite"
    inline_first = True
    single_writer = True
    # No round trip to save: an owner lookup and the plain read cost less than
    # the join (measured: 127 against 197 µs of CPU for a page of 100).
    one_statement_reads = False
    remainder_operator = "%"
    BUSY_TIMEOUT_MS: ClassVar[int] = 5000
    # A checkpoint copies each page changed since the last one from the WAL
    # into the database file, then syncs it: on a commit of the event loop's
    # connection (by default, every thousand pages: about 60 feedback writes
    # of 16 pages each) it would stall every call. That connection never
    # checkpoints; the writer thread does every this many writes (with the
    # writes meanwhile queued behind it, so that the next one starts the WAL
    # afresh), which bounds the WAL at about 16 MiB.
    checkpoint_every = 256
    PRAGMAS: ClassVar[dict[str, object]] = {
        # First: wait for another process's lock instead of failing, even while
        # the pragmas below are applied to a new connection.
        "busy_timeout": BUSY_TIMEOUT_MS,
        "journal_mode": "wal",  # readers never block the writer
        "synchronous": "normal",  # durable across process crashes; WAL fsyncs at checkpoints
        "foreign_keys": 1,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The thread whose connection never waits for a lock: the event loop's.
        self._inline_thread: int | None = None

    def claim_inline_thread(self) -> None:
        self._inline_thread = threading.get_ident()
        self.close()  # an open connection of this thread reconnects without waiting

    @classmethod
    def connect_options(cls, url: str, connect_timeout_s: float) -> dict[str, Any]:
        path = urlparse(url).path[1:]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # BEGIN IMMEDIATE: a write transaction takes the write lock up front, so
        # two writers queue on busy_timeout instead of failing on lock upgrade.
        return {
            "pragmas": cls.PRAGMAS,
            "lock_type": "IMMEDIATE",
            "timeout": cls.BUSY_TIMEOUT_MS / 1000,
        }

    def locking(self, query: Select) -> Select:
        # SELECT takes no row locks; a write transaction already holds the one
        # write lock from its first statement (BEGIN IMMEDIATE).
        return query

    def _initialize_connection(self, conn: Any) -> None:
        super()._initialize_connection(conn)  # type: ignore[misc]  # a hook peewee's stubs leave out
        if threading.get_ident() == self._inline_thread:
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA wal_autocheckpoint = 0")

    def checkpoint(self) -> None:
        # PASSIVE: it copies what no reader still needs, and waits for nobody.
        self.execute_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def is_transient(self, error: Exception) -> bool:
        first = error.args[0] if error.args else None
        return isinstance(first, str) and first.startswith(("database is locked", "database is busy"))


class PostgresDialect(Dialect, PostgresqlDatabase):
    system = "postgresql"
    transient_codes = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
    # xid8, 64 bits with its epoch, so it never wraps around.
    change_xact = SQL("pg_current_xact_id()::text::bigint")
    one_round_trip_writes = True
    # The oldest transaction running in the reader's snapshot that may have
    # written to this database, else the snapshot's first unassigned id
    # (xmax). Transaction ids are cluster-wide: one that pg_stat_activity
    # shows running in another database cannot write our log, so it does not
    # hold the feed back. One not found there (ended since the snapshot, or
    # a prepared transaction) counts, which only delays.
    change_horizon = SQL(
        "(SELECT COALESCE(MIN(x::text::bigint), pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"
        " FROM pg_snapshot_xip(pg_current_snapshot()) AS x WHERE NOT EXISTS (SELECT 1 FROM"
        " pg_stat_activity AS a WHERE a.datname <> current_database()"
        " AND a.backend_xid::text::bigint = mod(x::text::bigint, 4294967296)))"
    )

    def lock_migration_step(self) -> None:
        # A transaction's advisory lock, not a session's: through PgBouncer in
        # transaction pooling, a session's statements may run on different
        # server connections, and a session lock would be released on the
        # wrong one (and stay held on its own).
        self.execute_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))


class MySQLDialect(Dialect, MySQLDatabase):
    system = "mysql"
    # Ids are case-sensitive and comments hold any Unicode: MySQL's default
    # *_ci collation would make "Alice" and "alice" the same user.
    table_settings = ("DEFAULT CHARSET=utf8mb4", "COLLATE=utf8mb4_bin")
    transient_codes = frozenset({1205, 1213})  # lock wait timeout, deadlock
    appends_in_one_message = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per thread (and so per connection): how deep in atomic() blocks it
        # is (peewee counts transactions, not savepoints), and whether
        # `run_last` committed.
        self._committed = threading.local()

    def atomic(self, *args: Any, **kwargs: Any) -> Any:
        return _CountedBlock(self._committed, super().atomic(*args, **kwargs))

    @classmethod
    def connect_options(cls, url: str, connect_timeout_s: float) -> dict[str, Any]:
        # READ COMMITTED, as PostgreSQL: no gap locks, so concurrent upserts and
        # deletes of one key do not deadlock each other. Several statements
        # in one message, for `run_last`.
        return {
            **super().connect_options(url, connect_timeout_s),
            "charset": "utf8mb4",
            "init_command": "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "client_flag": CLIENT_MULTI_STATEMENTS,
        }

    def advanced_value(self, minus: int) -> Node:
        # `advance` stored the new value with LAST_INSERT_ID(expr); the
        # change log has no auto-increment column to overwrite it.
        return fn.LAST_INSERT_ID() - minus

    def run_last(self, statements: list[tuple[str, list[Any]]]) -> None:
        """The statements and, in the outermost transaction, its COMMIT, in
        one message: locks they take (the change log's head) are held only
        while the server runs them, never across a round trip. The
        transaction's own COMMIT then has nothing left to do and is skipped."""
        outermost = getattr(self._committed, "depth", 0) == 1 and self.transaction_depth() == 1
        sql = "; ".join([*(text for text, _ in statements), *(["COMMIT"] if outermost else [])])
        cursor = self.execute_sql(sql, [param for _, params in statements for param in params])
        with _DRIVER_ERRORS:  # as peewee's own errors
            while cursor.nextset():  # each statement's result, errors included
                pass
        self._committed.done = outermost

    def begin(self, isolation_level: str | None = None) -> None:
        """BEGIN waits to travel with the transaction's first statement
        (`execute_sql`), which saves a round trip per transaction."""
        if isolation_level:
            super().begin(isolation_level)
            return
        self._committed.begin = True

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        if not getattr(self._committed, "begin", False):
            return super().execute_sql(sql, params)  # type: ignore[no-untyped-call]  # peewee's is untyped
        self._committed.begin = False
        cursor = super().execute_sql(f"BEGIN; {sql}", params)  # type: ignore[no-untyped-call]  # as above
        with _DRIVER_ERRORS:
            cursor.nextset()  # on to the statement's own result (or error)
        return cursor

    def commit(self) -> None:
        if self._ended_here():
            return
        super().commit()

    def rollback(self) -> None:
        if self._ended_here():
            return
        super().rollback()

    def _ended_here(self) -> bool:
        """Whether the transaction needs no COMMIT or ROLLBACK from the
        client: `run_last` committed it, or it never reached the server."""
        done = getattr(self._committed, "done", False) or getattr(self._committed, "begin", False)
        self._committed.done = self._committed.begin = False
        return done

    def close(self) -> bool:
        self._committed.done = self._committed.begin = False
        return bool(super().close())

    @contextlib.contextmanager
    def migration_lock(self) -> Iterator[None]:
        self.execute_sql("SELECT GET_LOCK('feedback_service_migrate', 60)")
        try:
            yield
        finally:
            self.execute_sql("SELECT RELEASE_LOCK('feedback_service_migrate')")

    def upsert(
        self,
        insert: Insert,
        *,
        key: tuple[Field, ...],
        preserve: tuple[Field, ...],
        returning: tuple[Field, ...],
    ) -> Insert:
        # MySQL takes no conflict target (any unique key conflicts) and has no RETURNING.
        return insert.on_conflict(preserve=preserve)

    def run_upsert(self, statement: tuple[str, list[object]], read_back: Callable[[], Any]) -> Any:
        """The upsert, then its row as stored (the caller's transaction holds
        the row locked between the two)."""
        self.execute_sql(*statement)
        return read_back()

    def advance(self, column: Field, by: int, where: Expression) -> Update:
        # No UPDATE ... RETURNING: LAST_INSERT_ID(expr) stores the new value,
        # and the server sends it back in the statement's reply (lastrowid).
        statement: Update = column.model.update({column: fn.LAST_INSERT_ID(column + by)}).where(where)
        return statement

    def run_advance(self, statement: tuple[str, list[object]]) -> int:
        new_value: int = self.execute_sql(*statement).lastrowid
        return new_value

    def deleted_rows(
        self,
        delete_returning: Callable[[], list[tuple[Any, ...]]],
        lock_then_delete: Callable[[], list[tuple[Any, ...]]],
    ) -> list[tuple[Any, ...]]:
        # MySQL has no DELETE ... RETURNING (MariaDB has, but both share this class).
        return lock_then_delete()


class _CountedBlock:
    """An atomic block that counts, per thread, how deep in blocks it is."""

    def __init__(self, counter: threading.local, block: Any) -> None:
        self._counter = counter
        self._block = block

    def __enter__(self) -> Any:
        self._counter.depth = getattr(self._counter, "depth", 0) + 1
        return self._block.__enter__()

    def __exit__(self, *exc: object) -> Any:
        try:
            return self._block.__exit__(*exc)
        finally:
            self._counter.depth -= 1


class PooledPostgresDialect(PostgresDialect, PooledPostgresqlDatabase):  # type: ignore[misc]  # playhouse is untyped
    """PostgreSQL through Peewee's connection pool."""


class PooledMySQLDialect(MySQLDialect, PooledMySQLDatabase):  # type: ignore[misc]  # playhouse is untyped
    """MySQL or MariaDB through Peewee's connection pool."""


DIALECTS: dict[str, type[Dialect]] = {
    "sqlite": SqliteDialect,
    "postgres": PostgresDialect,
    "postgresql": PostgresDialect,
    "postgres+pool": PooledPostgresDialect,
    "postgresql+pool": PooledPostgresDialect,
    "mysql": MySQLDialect,
    "mysql+pool": PooledMySQLDialect,
}


def dialect_database(url: str, connect_timeout_s: float = 5) -> Dialect:
    """The database of a URL, as the dialect class its scheme names."""
    scheme = urlparse(url).scheme
    dialect = DIALECTS.get(scheme)
    if dialect is None:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r} (expected one of {', '.join(DIALECTS)})"
        )
    options = db_url.parse(url)
    if not options.get("database"):
        raise ValueError(f"the database URL {describe_url(url)} names no database")
    return dialect(**options, **dialect.connect_options(url, connect_timeout_s))


def describe_url(url: str) -> str:
    """The URL without its password, for logs."""
    password = urlparse(url).password
    return url.replace(f":{password}@", ":***@") if password else url

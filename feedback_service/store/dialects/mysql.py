"""MySQL and MariaDB, directly or through Peewee's pool: BEGIN travels with
a transaction's first statement, and the change log's last statements with
its COMMIT, to save round trips."""

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import peewee
from peewee import ExceptionWrapper, Expression, Field, Insert, MySQLDatabase, Node, Update, fn
from playhouse.pool import PooledMySQLDatabase

from feedback_service.store.dialects.base import Dialect

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


class PooledMySQLDialect(MySQLDialect, PooledMySQLDatabase):  # type: ignore[misc]  # playhouse is untyped
    """MySQL or MariaDB through Peewee's connection pool."""

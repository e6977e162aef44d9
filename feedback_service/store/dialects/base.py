"""The dialect mixin: what every database does alike, and the defaults that
suit a server database reached over a network. sqlite.py, postgres.py and
mysql.py override what differs."""

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from peewee import Database, Expression, Field, Insert, Node, Select, Update

if TYPE_CHECKING:
    # To the type checker the mixin is the Database it is always mixed into.
    _Mixin = Database
else:
    _Mixin = object


class OverBudget(Exception):
    """A statement went past its step budget and was interrupted (it wrote nothing)."""


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

    def step_budget(self, operations: int) -> contextlib.AbstractContextManager[None]:
        """Interrupts any statement run inside that goes past `operations`
        virtual-machine steps, with OverBudget; only dialects with
        `inline_first` use it."""
        return contextlib.nullcontext()

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

"""The thread rule inside each statement, shared by the store's reads and
writes: who owns a thread, a read joined to that owner, and why a write that
changed nothing was refused."""

from collections.abc import Callable
from typing import Any

from peewee import JOIN, SQL, ColumnBase, Select, SelectBase, Value

from feedback_service.core.errors import NotFound
from feedback_service.core.records import may_use_thread
from feedback_service.store.models import Thread, database
from feedback_service.store.prepared import Prepared

_THREAD_OWNER = Prepared(
    lambda thread_id: Thread.select(Thread.owner_user_id).where(Thread.thread_id == thread_id).limit(1)
)


def thread_owner(thread_id: str) -> str | None:
    """The owner of a registered thread ('' when shared); None if not registered."""
    row = database.execute_sql(*_THREAD_OWNER(thread_id)).fetchone()
    return None if row is None else row[0]


# --- the thread rule, inside each statement ---------------------------------------
#
# domain/access.py states the rule: a user may write on a registered thread
# that they own or that is shared, and read those and unregistered ones. Each
# statement below applies it itself, so an RPC is one round trip and no
# concurrent DeleteThread or re-registration can slip between a check and the
# work. `user_id` None: a service acting as itself, which is not checked.


def owned_or_shared(user_id: str) -> ColumnBase:
    return Thread.owner_user_id.in_(["", user_id])


def joined_with_owner(
    thread_id: str, data: SelectBase, columns: list[str], order_by: str | None = None
) -> Select:
    """`data` with the thread's owner beside each row: at least one row, whose
    data columns are NULL when `data` has none, and whose owner is NULL when
    the thread is not registered. `order_by` names a data column."""
    seed = Select(columns=[Value(thread_id).alias("thread_id")]).alias("q")
    thread = Thread.alias("t")
    data = data.alias("d")
    query = (
        Select(from_list=[seed], columns=[thread.owner_user_id, *(data.c[c] for c in columns)])
        .join(thread, JOIN.LEFT_OUTER, on=thread.thread_id == seed.c.thread_id)
        .join(data, JOIN.LEFT_OUTER, on=SQL("1 = 1"))
        .bind(database)
    )
    return query.order_by(data.c[order_by]) if order_by else query


def read_with_owner(
    thread_id: str,
    with_owner: bool,
    plain: Callable[[], tuple[str, list[Any]]],
    joined: Callable[[], tuple[str, list[Any]]],
) -> tuple[str | None, list[tuple[Any, ...]]]:
    """(the thread's owner, the rows of a read). Without `with_owner`: None
    and the `plain` statement's rows. With it: from the `joined` statement (a
    `joined_with_owner` one) where the dialect prefers one round trip, else from an
    owner lookup and the `plain` statement."""
    if not with_owner:
        return None, database.execute_sql(*plain()).fetchall()
    if not database.one_statement_reads:
        return thread_owner(thread_id), database.execute_sql(*plain()).fetchall()
    rows = database.execute_sql(*joined()).fetchall()
    return rows[0][0], [row[1:] for row in rows if row[1] is not None]


class Unchanged(Exception):
    """Raised inside a write's transaction when it changed nothing: the
    transaction (and a request_id claimed in it) rolls back."""


def refuse_thread(thread_id: str, user_id: str | None) -> None:
    """After a write changed nothing, says why when the thread rule was the
    reason (a second statement, on this failure path only)."""
    if user_id is not None:
        owner = thread_owner(thread_id)
        if owner is None or not may_use_thread(owner, user_id):
            raise NotFound(f"thread {thread_id} not found")

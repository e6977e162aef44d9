"""The change log: one row per feedback created, updated or deleted, written
by the transaction that made the change, and read by StreamFeedbackChanges.

A change's position is the pair (xact_id, id), and the log is read in that
order. Whatever the database, a reader must never pass a change that commits
later: a sequence or an auto-increment id alone cannot promise that, as their
values are handed out at insert time but become visible at commit. Each
dialect keeps the promise in one of two ways (dialects.Dialect.change_xact).

By transaction (PostgreSQL). Each change records its transaction's id
(xact_id) and takes `id` from a sequence; writers share no lock. A reader
reads only the changes of transactions below its snapshot's horizon, the
oldest transaction still running: every transaction below it has committed or
rolled back, so no change can appear there any more. What it reads in
(xact_id, id) order is therefore final, and reading after the last position
seen never skips a change. A long-running writing transaction holds the
horizon back: the changes of transactions that began after it wait for it to
end (they are delayed, never lost).

By the head (SQLite, MySQL/MariaDB). xact_id is 0. Every feedback write
calls `append_changes` as the last step of its transaction. It advances the
log's head row (feedback_change_log), which locks that row until the
transaction commits, and inserts its changes at the positions it took. So
positions are dense and in commit order: the next writer takes its positions
only once this one has committed, and a reader that sees position p sees
every position below it. The holder of the head waits for nothing else (it
only inserts its changes, then commits), so writers queue on the head and
never deadlock over it.

Content. A change names its feedback (ids and key); what the feedback holds
is read from the feedback table when the change is streamed. The log keeps
no comment, so erasing a user's feedback leaves none of its text behind.
"""

from collections.abc import Sequence
from itertools import takewhile
from typing import Any

from peewee import JOIN, SQL, Expression, Node, Query, Select, Value

from feedback_service.core.records import ChangeKind, ChangeLogState, ChangeRow, Position
from feedback_service.store.models import Feedback, FeedbackChange, FeedbackChangeLog, database, split_tags
from feedback_service.store.prepared import Prepared

HEAD = FeedbackChangeLog.id == 1
# Change rows inserted per statement.
INSERT_BATCH = 500

_ADVANCE = Prepared(lambda by: database.advance(FeedbackChangeLog.last_change, by, HEAD))
_KEY_FIELDS = ("kind", "feedback_id", "thread_id", "run_id", "user_id", "message_id", "changed_at")
_CHANGE_FIELDS = ("id", *_KEY_FIELDS)
_INSERT_ONE = Prepared(
    lambda *values: FeedbackChange.insert(dict(zip(_CHANGE_FIELDS, values, strict=True))).returning()
)
_XACT_FIELDS = ("xact_id", *_KEY_FIELDS)
# One change with its transaction's id; `id` comes from the sequence.
_INSERT_ONE_XACT = Prepared(
    lambda *values: FeedbackChange.insert(
        dict(zip(_XACT_FIELDS, (database.change_xact, *values), strict=True))
    ).returning()
)

Key = tuple[str, str, str, str, str]


def append_changes(kind: ChangeKind, keys: Sequence[Key], changed_at: int) -> None:
    """Records that the feedback with these keys (feedback_id, thread_id,
    run_id, user_id, message_id) was created, updated or deleted. Call it
    last in the transaction that made the change: where the log is ordered by
    its head, from here to the commit the transaction holds the head."""
    if not keys:
        return
    if database.change_xact is not None:
        _append_by_transaction(kind, keys, changed_at)
        return
    if database.appends_in_one_message:
        _append_in_one_message(kind, keys, changed_at)
        return
    last = database.run_advance(_ADVANCE(len(keys)))
    first = last - len(keys) + 1
    if len(keys) == 1:
        database.execute_sql(*_INSERT_ONE(first, int(kind), *keys[0], changed_at))
        return
    rows = [(first + i, int(kind), *key, changed_at) for i, key in enumerate(keys)]
    _insert_batches(rows, _CHANGE_FIELDS)


def _append_in_one_message(kind: ChangeKind, keys: Sequence[Key], changed_at: int) -> None:
    """The head's advance and the inserts in one message (and so one round
    trip), the positions computed by the database from the advance's result
    (dialects.MySQLDialect.run_last), with the commit when it may."""
    count = len(keys)
    positions = [database.advanced_value(count - 1 - i) for i in range(count)]
    statements = [_ADVANCE(count)]
    rows = [(position, int(kind), *key, changed_at) for position, key in zip(positions, keys, strict=True)]
    for start in range(0, count, INSERT_BATCH):
        batch = rows[start : start + INSERT_BATCH]
        statements.append(FeedbackChange.insert_many(batch, fields=_CHANGE_FIELDS).returning().sql())
    database.run_last(statements)


def _append_by_transaction(kind: ChangeKind, keys: Sequence[Key], changed_at: int) -> None:
    if len(keys) == 1:
        database.execute_sql(*_INSERT_ONE_XACT(int(kind), *keys[0], changed_at))
        return
    rows = [(database.change_xact, int(kind), *key, changed_at) for key in keys]
    _insert_batches(rows, _XACT_FIELDS)


def _insert_batches(rows: Sequence[tuple[Any, ...]], fields: tuple[str, ...]) -> None:
    for start in range(0, len(rows), INSERT_BATCH):
        batch = rows[start : start + INSERT_BATCH]
        database.execute_sql(*FeedbackChange.insert_many(batch, fields=fields).returning().sql())


# --- reading -------------------------------------------------------------------------

_ROW_FIELDS = ["xact", *ChangeRow._fields]  # the position as two columns: xact, position


def _after(xact: Any, seq: Any) -> Expression:
    """The changes after position (xact, seq), in a form every database's
    planner turns into a range of the (xact_id, id) indexes."""
    change = FeedbackChange
    after: Expression = (change.xact_id > xact) | ((change.xact_id == xact) & (change.id > seq))
    return after


def _page_query(xact: Any, seq: Any, thread_id: Any, limit: Any) -> Select:
    change, feedback = FeedbackChange, Feedback.alias("f")
    where = _after(xact, seq)
    if database.change_horizon is not None:
        where &= change.xact_id < database.change_horizon
    if thread_id is not None:
        where &= change.thread_id == thread_id
    return (
        change.select(
            change.xact_id.alias("xact"),
            change.id.alias("position"),
            change.kind,
            change.changed_at,
            change.feedback_id,
            change.thread_id,
            change.run_id,
            change.user_id,
            change.message_id,
            feedback.rating,
            feedback.comment,
            feedback.created_at,
            feedback.updated_at,
            feedback.tags,
        )
        .join(feedback, JOIN.LEFT_OUTER, on=feedback.feedback_id == change.feedback_id)
        .where(where)
        .order_by(change.xact_id, change.id)
        .limit(limit)
    )


def _last_position() -> tuple[Node, Node]:
    """The position up to which a reader has seen every change: the head's
    last position, or (the horizon, 0) where changes are ordered by transaction."""
    if database.change_horizon is not None:
        return database.change_horizon, Value(0)
    return Value(0), FeedbackChangeLog.last_change


def _with_log_state(xact: Any, seq: Any, thread_id: Any, limit: Any) -> Query:
    """The page beside the log's state, in one statement and so in one
    snapshot: at least one row, whose page columns are NULL when the page is
    empty."""
    log = FeedbackChangeLog
    data = _page_query(xact, seq, thread_id, limit).alias("d")
    return (
        log.select(
            log.log_id,
            *_last_position(),
            log.pruned_xact,
            log.pruned_through,
            *(data.c[f] for f in _ROW_FIELDS),
        )
        .join(data, JOIN.LEFT_OUTER, on=SQL("1 = 1"))
        .where(HEAD)
        .order_by(data.c.xact, data.c.position)
    )


_PAGE = Prepared(_with_log_state)
_STATE_COLUMNS = 5


def change_page(after: Position, thread_id: str | None, limit: int) -> tuple[ChangeLogState, list[ChangeRow]]:
    """Up to `limit` changes after a position, oldest first (only those of
    one thread when thread_id is not None), each with its feedback as it is
    now, and the log's state in the same snapshot: when the page is not
    full, every change up to `last_position` has been seen."""
    rows = database.execute_sql(*_PAGE(*after, thread_id, limit)).fetchall()
    log_id, last_xact, last_seq, pruned_xact, pruned_seq = rows[0][:_STATE_COLUMNS]
    state = ChangeLogState(log_id, (int(last_xact), int(last_seq)), (int(pruned_xact), int(pruned_seq)))
    return state, [_change_row(row[_STATE_COLUMNS:]) for row in rows if row[_STATE_COLUMNS] is not None]


def _change_row(values: tuple[Any, ...]) -> ChangeRow:
    xact, seq, *fields, tags = values
    return ChangeRow._make(((int(xact), int(seq)), *fields, split_tags(tags)))


# --- retention -----------------------------------------------------------------------


def _oldest(limit: Any) -> Query:
    change = FeedbackChange
    query = change.select(change.xact_id, change.id, change.changed_at)
    if database.change_horizon is not None:  # only final changes
        query = query.where(change.xact_id < database.change_horizon)
    return query.order_by(change.xact_id, change.id).limit(limit)


_OLDEST = Prepared(_oldest)
_DELETE_THROUGH = Prepared(
    lambda xact, seq: FeedbackChange.delete().where(
        (FeedbackChange.xact_id < xact) | ((FeedbackChange.xact_id == xact) & (FeedbackChange.id <= seq))
    )
)
_PRUNED_THROUGH = Prepared(
    lambda xact, seq: FeedbackChangeLog.update(pruned_xact=xact, pruned_through=seq).where(
        HEAD
        & (
            (FeedbackChangeLog.pruned_xact < xact)
            | ((FeedbackChangeLog.pruned_xact == xact) & (FeedbackChangeLog.pruned_through < seq))
        )
    )
)


def prune_changes(cutoff: int, limit: int) -> int:
    """Deletes the oldest changes made before `cutoff`, at most `limit` of
    them, and records the newest position deleted; returns how many were
    deleted. Only a prefix of the log goes (of its final part, where changes
    are ordered by transaction): a change made before the cutoff but after a
    newer one waits for that one. Safe to run on every replica at once: a
    second run finds nothing more to do."""
    with database.atomic():
        oldest = database.execute_sql(*_OLDEST(limit)).fetchall()
        expired = list(takewhile(lambda row: row[2] < cutoff, oldest))
        if not expired:
            return 0
        xact, seq = int(expired[-1][0]), int(expired[-1][1])
        database.execute_sql(*_DELETE_THROUGH(xact, seq))
        database.execute_sql(*_PRUNED_THROUGH(xact, seq))  # the head, last (see the module's notes)
    return len(expired)

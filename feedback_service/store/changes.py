"""The change log: one row per feedback created, updated or deleted, written
by the transaction that made the change, and read by StreamFeedbackChanges.

Order. Every feedback write calls `append_changes` as the last step of its
transaction. It advances the log's head row (feedback_change_log), which
locks that row until the transaction commits, and inserts its changes at the
positions it took. So positions are dense and in commit order: the next
writer takes its positions only once this one has committed. A reader that
sees position p therefore sees every position below it, and reading "after
p" in position order can never pass a change that commits later (which is
what a sequence or an auto-increment id alone cannot promise: their values
are handed out at insert time but become visible at commit). The holder of
the head waits for nothing else (it only inserts its changes, then commits),
so writers queue on the head and never deadlock over it.

Content. A change names its feedback (ids and key); what the feedback holds
is read from the feedback table when the change is streamed. The log keeps
no comment, so erasing a user's feedback leaves none of its text behind.
"""

from collections.abc import Sequence
from itertools import takewhile
from typing import Any

from peewee import JOIN, SQL, Select

from feedback_service.domain.records import ChangeKind, ChangeLogState, ChangeRow
from feedback_service.store.models import Feedback, FeedbackChange, FeedbackChangeLog, database, split_tags
from feedback_service.store.prepared import Prepared

HEAD = FeedbackChangeLog.id == 1
# Change rows inserted per statement.
INSERT_BATCH = 500

_ADVANCE = Prepared(lambda by: database.advance(FeedbackChangeLog.last_change, by, HEAD))
_CHANGE_FIELDS = ("id", "kind", "feedback_id", "thread_id", "run_id", "user_id", "message_id", "changed_at")
_INSERT_ONE = Prepared(
    lambda *values: FeedbackChange.insert(dict(zip(_CHANGE_FIELDS, values, strict=True))).returning()
)


def append_changes(kind: ChangeKind, keys: Sequence[tuple[str, str, str, str, str]], changed_at: int) -> None:
    """Records that the feedback with these keys (feedback_id, thread_id,
    run_id, user_id, message_id) was created, updated or deleted. Call it
    last in the transaction that made the change: from here to the commit,
    the transaction holds the log's head."""
    if not keys:
        return
    last = database.run_advance(_ADVANCE(len(keys)))
    first = last - len(keys) + 1
    if len(keys) == 1:
        database.execute_sql(*_INSERT_ONE(first, int(kind), *keys[0], changed_at))
        return
    rows = [(first + i, int(kind), *key, changed_at) for i, key in enumerate(keys)]
    for start in range(0, len(rows), INSERT_BATCH):
        batch = rows[start : start + INSERT_BATCH]
        database.execute_sql(*FeedbackChange.insert_many(batch, fields=_CHANGE_FIELDS).returning().sql())


# --- reading -------------------------------------------------------------------------

_ROW_FIELDS = list(ChangeRow._fields)


def _page_query(after: int, thread_id: str | None, limit: int) -> Select:
    change, feedback = FeedbackChange, Feedback.alias("f")
    where = change.id > after
    if thread_id is not None:
        where &= change.thread_id == thread_id
    return (
        change.select(
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
        .order_by(change.id)
        .limit(limit)
    )


def _with_log_state(after: int, thread_id: str | None, limit: int) -> Select:
    """The page beside the head's state, in one statement and so in one
    snapshot: at least one row, whose page columns are NULL when the page is
    empty."""
    log = FeedbackChangeLog
    data = _page_query(after, thread_id, limit).alias("d")
    return (
        log.select(log.log_id, log.last_change, log.pruned_through, *(data.c[f] for f in _ROW_FIELDS))
        .join(data, JOIN.LEFT_OUTER, on=SQL("1 = 1"))
        .where(HEAD)
        .order_by(data.c.position)
    )


_PAGE = Prepared(_with_log_state)


def change_page(after: int, thread_id: str | None, limit: int) -> tuple[ChangeLogState, list[ChangeRow]]:
    """Up to `limit` changes after a position, oldest first (only those of
    one thread when thread_id is not None), each with its feedback as it is
    now, and the log's state in the same snapshot: when the page is not
    full, every change up to `last_position` has been seen."""
    rows = database.execute_sql(*_PAGE(after, thread_id, limit)).fetchall()
    state = ChangeLogState(*rows[0][:3])
    return state, [_change_row(row[3:]) for row in rows if row[3] is not None]


def _change_row(values: tuple[Any, ...]) -> ChangeRow:
    *fields, tags = values
    return ChangeRow._make((*fields, split_tags(tags)))


# --- retention -----------------------------------------------------------------------

_OLDEST = Prepared(
    lambda limit: (
        FeedbackChange.select(FeedbackChange.id, FeedbackChange.changed_at)
        .order_by(FeedbackChange.id)
        .limit(limit)
    )
)
_DELETE_THROUGH = Prepared(lambda position: FeedbackChange.delete().where(FeedbackChange.id <= position))
_PRUNED_THROUGH = Prepared(
    lambda position: FeedbackChangeLog.update(pruned_through=position).where(
        HEAD & (FeedbackChangeLog.pruned_through < position)
    )
)


def prune_changes(cutoff: int, limit: int) -> int:
    """Deletes the oldest changes made before `cutoff`, at most `limit` of
    them, and records the newest position deleted; returns how many were
    deleted. Only a prefix of the log goes: a change made before the cutoff
    but after a newer one waits for that one. Safe to run on every replica at
    once: a second run finds nothing more to do."""
    with database.atomic():
        oldest = database.execute_sql(*_OLDEST(limit)).fetchall()
        expired = list(takewhile(lambda row: row[1] < cutoff, oldest))
        if not expired:
            return 0
        through = expired[-1][0]
        database.execute_sql(*_DELETE_THROUGH(through))
        database.execute_sql(*_PRUNED_THROUGH(through))  # the head, last (see the module's notes)
    return len(expired)

"""Every query the service runs. Each function is one unit of work (one
statement where it can be, else one transaction), runs synchronously where
the Store puts it (a database thread, or the event loop on SQLite), and
raises domain errors when the data says no.
"""

import time
import uuid
from collections.abc import Sequence

from peewee import Case, IntegrityError, Value, fn

from feedback_service.domain.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from feedback_service.domain.records import FeedbackDraft, FeedbackRow, RunRecord, RunStats, ThreadRecord
from feedback_service.store.models import Feedback, Run, Thread, database
from feedback_service.store.prepared import Prepared


def now_us() -> int:
    return time.time_ns() // 1000


# Every feedback read selects these columns, in FeedbackRow's order.
FEEDBACK_COLUMNS = (
    Feedback.id,
    Feedback.feedback_id,
    Feedback.thread_id,
    Feedback.run,
    Feedback.user_id,
    Feedback.message_id,
    Feedback.rating,
    Feedback.comment,
    Feedback.created_at,
    Feedback.updated_at,
)
assert tuple(c.column_name for c in FEEDBACK_COLUMNS) == FeedbackRow._fields


# --- threads and runs ---------------------------------------------------------


_THREAD_OWNER = Prepared(
    lambda thread_id: Thread.select(Thread.owner_user_id).where(Thread.thread_id == thread_id).limit(1)
)


def thread_owner(thread_id: str) -> str | None:
    """The owner of a registered thread ('' when shared); None if not registered."""
    row = database.execute_sql(*_THREAD_OWNER(thread_id)).fetchone()
    return None if row is None else row[0]


# Every unit of work that adds or removes a thread's runs locks the thread's
# row first: RegisterRun cannot then interleave with DeleteThread, and since
# they take their locks in the same order, they queue instead of deadlocking.
_LOCKED_THREAD = Prepared(
    lambda thread_id: database.locking(
        Thread.select(Thread.thread_id, Thread.owner_user_id, Thread.created_at)
        .where(Thread.thread_id == thread_id)
        .limit(1)
    )
)


def _lock_thread(thread_id: str) -> ThreadRecord | None:
    """The registered thread, locked until the transaction ends; None if not registered."""
    row = database.execute_sql(*_LOCKED_THREAD(thread_id)).fetchone()
    return None if row is None else ThreadRecord(*row)


# A concurrent DeleteThread can remove a thread between our insert (which
# found it there) and our locking read; each attempt then starts afresh, and
# it takes a new registration and a new delete in that gap to need another.
REGISTER_ATTEMPTS = 3


def register_thread(thread_id: str, owner_user_id: str) -> ThreadRecord:
    with database.atomic():
        for _ in range(REGISTER_ATTEMPTS):
            thread = _lock_thread(thread_id)
            if thread is None:
                Thread.insert(
                    thread_id=thread_id, owner_user_id=owner_user_id, created_at=now_us()
                ).on_conflict_ignore().execute()
                thread = _lock_thread(thread_id)
            if thread is not None:
                break
        else:
            raise Unavailable(f"thread {thread_id} is being registered and deleted concurrently; retry")
    if thread.owner_user_id != owner_user_id:
        raise FailedPrecondition(f"thread {thread_id} is already registered with another owner")
    return thread


def register_run(thread_id: str, run_id: str) -> RunRecord:
    with database.atomic():
        # Locked, the thread (and so each of its runs) outlives this transaction.
        if _lock_thread(thread_id) is None:
            raise NotFound(f"thread {thread_id} is not registered")
        Run.insert(run_id=run_id, thread=thread_id, created_at=now_us()).on_conflict_ignore().execute()
        run = Run.get_or_none(Run.run_id == run_id)
    # None: the run was in another thread, deleted since (this call came first).
    if run is None or run.thread_id != thread_id:
        raise FailedPrecondition(f"run {run_id} already belongs to another thread")
    return RunRecord(run.run_id, run.thread_id, run.created_at)


def delete_thread(thread_id: str) -> tuple[int, int]:
    """Deletes a thread with its runs and feedback; returns (runs, feedback)."""
    with database.atomic():
        if _lock_thread(thread_id) is None:
            raise NotFound(f"thread {thread_id} is not registered")
        feedback = Feedback.delete().where(Feedback.thread_id == thread_id).execute()
        runs = Run.delete().where(Run.thread == thread_id).execute()
        Thread.delete().where(Thread.thread_id == thread_id).execute()
    return runs, feedback


_RUN_THREAD = Prepared(lambda run_id: Run.select(Run.thread).where(Run.run_id == run_id).limit(1))


def _require_run(thread_id: str, run_id: str) -> None:
    row = database.execute_sql(*_RUN_THREAD(run_id)).fetchone()
    if row is None or row[0] != thread_id:
        raise NotFound(f"run {run_id} not found in thread {thread_id}")


# --- feedback writes ------------------------------------------------------------


def _new_row(draft: FeedbackDraft) -> FeedbackRow:
    now = now_us()
    return FeedbackRow(
        id=None,
        feedback_id=str(uuid.uuid4()),
        thread_id=draft.thread_id,
        run_id=draft.run_id,
        user_id=draft.user_id,
        message_id=draft.message_id,
        rating=draft.rating,
        comment=draft.comment,
        created_at=now,
        updated_at=now,
    )


# The columns an insert writes, by name: all but the row id, which the
# database assigns. FeedbackRow's fields carry the same names.
INSERTED_COLUMNS = FEEDBACK_COLUMNS[1:]
INSERTED_FIELDS = tuple(column.column_name for column in INSERTED_COLUMNS)
FEEDBACK_KEY = (Feedback.thread_id, Feedback.run, Feedback.user_id, Feedback.message_id)


def _insert_if_run_in_thread(thread_id, run_id, values):
    """INSERT ... SELECT ... FROM run: inserts `values` (one per
    INSERTED_COLUMNS) only if the run belongs to the thread, in one statement
    (0 rows inserted: no such run in that thread)."""
    source = Run.select(*(Value(v) for v in values)).where((Run.run_id == run_id) & (Run.thread == thread_id))
    return Feedback.insert_from(source, INSERTED_COLUMNS)


def _upsert_if_run_in_thread(thread_id, run_id, values):
    """The same insert, updating the existing row of the key instead of failing."""
    return database.upsert(
        _insert_if_run_in_thread(thread_id, run_id, values),
        key=FEEDBACK_KEY,
        preserve=(Feedback.rating, Feedback.comment, Feedback.updated_at),
        returning=FEEDBACK_COLUMNS,
    )


_INSERT_IF_RUN = Prepared(_insert_if_run_in_thread)
_UPSERT_IF_RUN = Prepared(_upsert_if_run_in_thread)
_BY_KEY = Prepared(
    lambda thread_id, run_id, user_id, message_id: Feedback.select(*FEEDBACK_COLUMNS).where(
        (Feedback.thread_id == thread_id)
        & (Feedback.run == run_id)
        & (Feedback.user_id == user_id)
        & (Feedback.message_id == message_id)
    )
)


def _inserted_values(row: FeedbackRow) -> list[object]:
    return [getattr(row, field) for field in INSERTED_FIELDS]


def create_feedback(draft: FeedbackDraft) -> FeedbackRow:
    """Inserts new feedback; an existing one for the same key is ALREADY_EXISTS."""
    row = _new_row(draft)
    try:
        statement = _INSERT_IF_RUN(draft.thread_id, draft.run_id, _inserted_values(row))
        inserted = database.execute_sql(*statement).rowcount
    except IntegrityError as exc:
        # The unique key collided, or the run vanished under a concurrent delete.
        _require_run(draft.thread_id, draft.run_id)
        raise AlreadyExists(
            "feedback by this user on this run"
            + (f" and message {draft.message_id}" if draft.message_id else "")
            + " already exists; use UpsertFeedback to change it"
        ) from exc
    if inserted != 1:
        raise NotFound(f"run {draft.run_id} not found in thread {draft.thread_id}")
    return row


def upsert_feedback(draft: FeedbackDraft) -> FeedbackRow:
    """Creates or updates the feedback for the draft's key in one statement
    (two in one transaction where the dialect cannot return the row)."""
    statement = _UPSERT_IF_RUN(draft.thread_id, draft.run_id, _inserted_values(_new_row(draft)))
    key = (draft.thread_id, draft.run_id, draft.user_id, draft.message_id)
    try:
        stored = database.run_upsert(statement, lambda: database.execute_sql(*_BY_KEY(*key)).fetchone())
    except IntegrityError:
        # Only the foreign key can fail here: the run vanished under a concurrent delete.
        _require_run(draft.thread_id, draft.run_id)
        raise
    if stored is None:  # nothing inserted or updated: the run is not in the thread
        raise NotFound(f"run {draft.run_id} not found in thread {draft.thread_id}")
    return FeedbackRow._make(stored)


def delete_feedback(thread_id: str, run_id: str, feedback_id: str, user_id: str) -> int:
    """Deletes one feedback of the user on that thread and run; returns rows deleted."""
    where = (
        (Feedback.feedback_id == feedback_id)
        & (Feedback.thread_id == thread_id)
        & (Feedback.run == run_id)
        & (Feedback.user_id == user_id)
    )
    with database.atomic():  # on SQLite, takes the write lock before reading
        return Feedback.delete().where(where).execute()


def delete_run_feedback(thread_id: str, run_id: str, user_id: str) -> int:
    """Deletes all of the user's feedback on a run; returns rows deleted."""
    where = (Feedback.thread_id == thread_id) & (Feedback.run == run_id) & (Feedback.user_id == user_id)
    with database.atomic():
        return Feedback.delete().where(where).execute()


# --- feedback reads -------------------------------------------------------------


def _page_query(thread_id, run_id, user_id, after_id, limit):
    where = (Feedback.thread_id == thread_id) & (Feedback.id > after_id)
    if run_id is not None:
        where &= Feedback.run == run_id
    if user_id is not None:
        where &= Feedback.user_id == user_id
    return Feedback.select(*FEEDBACK_COLUMNS).where(where).order_by(Feedback.id).limit(limit)


_PAGE = Prepared(_page_query)


def feedback_page(
    thread_id: str,
    run_id: str | None,
    user_id: str | None,
    after_id: int,
    limit: int,
) -> list[FeedbackRow]:
    """Feedback on a thread (or one run of it), oldest first, after a row id.

    user_id None means every user's feedback.
    """
    sql, params = _PAGE(thread_id, run_id, user_id, after_id, limit)
    return [FeedbackRow._make(row) for row in database.execute_sql(sql, params).fetchall()]


def _stats_query(thread_id, run_ids):
    positive = fn.SUM(Case(None, [(Feedback.rating == 1, 1)], 0))
    negative = fn.SUM(Case(None, [(Feedback.rating == -1, 1)], 0))
    return (
        Feedback.select(Feedback.run, fn.COUNT(Feedback.id), positive, negative)
        .where((Feedback.thread_id == thread_id) & (Feedback.run.in_(run_ids)))
        .group_by(Feedback.run)
    )


_STATS = Prepared(_stats_query)


def stats_for_runs(thread_id: str, run_ids: Sequence[str]) -> dict[str, RunStats]:
    """Counts every user's feedback per run, in one grouped query."""
    unique_ids = list(dict.fromkeys(run_ids))
    rows = database.execute_sql(*_STATS(thread_id, unique_ids)).fetchall()
    counted = {run: RunStats(run, int(t), int(p or 0), int(n or 0)) for run, t, p, n in rows}
    return {run: counted.get(run, RunStats(run, 0, 0, 0)) for run in unique_ids}

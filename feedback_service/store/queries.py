"""Every query the service runs. Each function is one unit of work (one
statement where it can be, else one transaction), runs synchronously where
the Store puts it (a database thread, or the event loop on SQLite), and
raises domain errors when the data says no.

Every write of feedback records what it changed in the change log
(store/changes.py), in its own transaction and as its last step; a write
sent with a request_id first claims it (store/requests.py), in the same
transaction.
"""

import json
import time
import uuid
from collections.abc import Callable, Sequence

from peewee import JOIN, SQL, Case, IntegrityError, Select, Value, fn

from feedback_service.domain.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from feedback_service.domain.records import (
    ChangeKind,
    FeedbackDraft,
    FeedbackRow,
    RequestClaim,
    RunRecord,
    RunStats,
    ThreadRecord,
)
from feedback_service.store import requests
from feedback_service.store.changes import append_changes
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


# The runs are locked before their feedback is deleted: no feedback can then
# be written to them until the thread is gone, so none is removed unseen by
# the runs' ON DELETE CASCADE (it would be missing from the change log).
_LOCKED_RUNS = Prepared(
    lambda thread_id: database.locking(Run.select(Run.run_id).where(Run.thread == thread_id))
)


def delete_thread(thread_id: str) -> tuple[int, int]:
    """Deletes a thread with its runs and feedback; returns (runs, feedback)."""
    now = now_us()
    with database.atomic():
        if _lock_thread(thread_id) is None:
            raise NotFound(f"thread {thread_id} is not registered")
        database.execute_sql(*_LOCKED_RUNS(thread_id)).fetchall()
        feedback = _delete_where(*_DELETE_THREAD, thread_id)
        runs = Run.delete().where(Run.thread == thread_id).execute()
        Thread.delete().where(Thread.thread_id == thread_id).execute()
        append_changes(ChangeKind.DELETED, feedback, now)
    return runs, len(feedback)


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


# --- the thread rule, inside each statement ---------------------------------------
#
# domain/access.py states the rule: a user may write on a registered thread
# that they own or that is shared, and read those and unregistered ones. Each
# statement below applies it itself, so an RPC is one round trip and no
# concurrent DeleteThread or re-registration can slip between a check and the
# work. `user_id` None: a service acting as itself, which is not checked.


def _owned_or_shared(user_id: str):
    return Thread.owner_user_id.in_(["", user_id])


def _with_owner(thread_id: str, data: Select, columns: list[str], order_by: str | None = None) -> Select:
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


def _read_with_owner(
    thread_id: str, plain: tuple, with_owner: Callable[[], tuple]
) -> tuple[str | None, list]:
    """(the thread's owner, the rows of a read): from one `_with_owner`
    statement where the dialect prefers one round trip, else from an owner
    lookup and the `plain` statement."""
    if not database.one_statement_reads:
        return thread_owner(thread_id), database.execute_sql(*plain).fetchall()
    rows = database.execute_sql(*with_owner()).fetchall()
    return rows[0][0], [row[1:] for row in rows if row[1] is not None]


# --- feedback writes ---------------------------------------------------------------


def _insert_if_run_in_thread(thread_id, run_id, user_id, values):
    """INSERT ... SELECT ... FROM run: inserts `values` (one per
    INSERTED_COLUMNS) only if the run belongs to the thread and, for a user,
    the thread is theirs or shared, in one statement (0 rows inserted: not so)."""
    where = (Run.run_id == run_id) & (Run.thread == thread_id)
    source = Run.select(*(Value(v) for v in values))
    if user_id is not None:
        source = source.join(Thread, on=Run.thread == Thread.thread_id)
        where &= _owned_or_shared(user_id)
    return Feedback.insert_from(source.where(where), INSERTED_COLUMNS)


def _upsert_if_run_in_thread(thread_id, run_id, user_id, values):
    """The same insert, updating the existing row of the key instead of failing."""
    return database.upsert(
        _insert_if_run_in_thread(thread_id, run_id, user_id, values),
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


def _refuse_thread(thread_id: str, user_id: str | None) -> None:
    """After a write changed nothing, says why when the thread rule was the
    reason (a second statement, on this failure path only)."""
    if user_id is not None and thread_owner(thread_id) not in ("", user_id):
        raise NotFound(f"thread {thread_id} not found")


def _not_found(draft: FeedbackDraft, user_id: str | None) -> NotFound:
    _refuse_thread(draft.thread_id, user_id)
    return NotFound(f"run {draft.run_id} not found in thread {draft.thread_id}")


class _Unchanged(Exception):
    """Raised inside a write's transaction when it changed nothing: the
    transaction (and a request_id claimed in it) rolls back."""


def _key(row: FeedbackRow) -> tuple[str, str, str, str, str]:
    """(feedback_id, thread_id, run_id, user_id, message_id) of a feedback row."""
    return (row.feedback_id, row.thread_id, row.run_id, row.user_id, row.message_id)


def _row_json(row: FeedbackRow) -> str:
    return json.dumps(row._asdict())


def create_feedback(draft: FeedbackDraft, checked: bool, request: RequestClaim | None = None) -> FeedbackRow:
    """Inserts new feedback; an existing one for the same key is
    ALREADY_EXISTS. `checked`: apply the thread rule for the draft's user.
    With a request claim, a repeat of the request returns the feedback the
    first call created."""
    row = _new_row(draft)
    user_id = draft.user_id if checked else None
    inserting = False
    try:
        with database.atomic():
            if request is not None:
                earlier = requests.claim(request, _row_json(row), row.created_at)
                if earlier is not None:
                    return FeedbackRow(**json.loads(earlier))
            inserting = True
            statement = _INSERT_IF_RUN(draft.thread_id, draft.run_id, user_id, _inserted_values(row))
            if database.execute_sql(*statement).rowcount != 1:
                raise _Unchanged
            inserting = False
            append_changes(ChangeKind.CREATED, [_key(row)], row.updated_at)
    except IntegrityError as exc:
        if not inserting:
            raise
        # The unique key collided (the thread rule passed, as the row was
        # selected), or the run vanished under a concurrent delete.
        _require_run(draft.thread_id, draft.run_id)
        raise AlreadyExists(
            "feedback by this user on this run"
            + (f" and message {draft.message_id}" if draft.message_id else "")
            + " already exists; use UpsertFeedback to change it"
        ) from exc
    except _Unchanged:
        raise _not_found(draft, user_id) from None
    return row


def upsert_feedback(draft: FeedbackDraft, checked: bool) -> FeedbackRow:
    """Creates or updates the feedback for the draft's key in one statement
    (two where the dialect cannot return the row), then records the change."""
    user_id = draft.user_id if checked else None
    new = _new_row(draft)
    statement = _UPSERT_IF_RUN(draft.thread_id, draft.run_id, user_id, _inserted_values(new))
    key = (draft.thread_id, draft.run_id, draft.user_id, draft.message_id)
    upserting = True
    try:
        with database.atomic():
            stored = database.run_upsert(statement, lambda: database.execute_sql(*_BY_KEY(*key)).fetchone())
            if stored is None:  # nothing inserted or updated: the run is not in the thread, or not theirs
                raise _Unchanged
            upserting = False
            row = FeedbackRow._make(stored)
            kind = ChangeKind.CREATED if row.feedback_id == new.feedback_id else ChangeKind.UPDATED
            append_changes(kind, [_key(row)], row.updated_at)
    except IntegrityError as exc:
        if not upserting:
            raise
        # Only the foreign key can fail here: the run vanished under a concurrent delete.
        raise _not_found(draft, user_id) from exc
    except _Unchanged:
        raise _not_found(draft, user_id) from None
    return row


def _in_their_thread(thread_id: str, user_id: str | None):
    """For a user, the thread must be theirs or shared (see the rule above)."""
    if user_id is None:
        return SQL("1 = 1")
    owned = Thread.select(Thread.thread_id).where((Thread.thread_id == thread_id) & _owned_or_shared(user_id))
    return Feedback.thread_id.in_(owned)


# Deleting returns the key of each deleted feedback, for the change log.
KEY_COLUMNS = (Feedback.feedback_id, Feedback.thread_id, Feedback.run, Feedback.user_id, Feedback.message_id)
DELETE_BATCH = 500


def _deletion(where: Callable[..., object]) -> tuple[Prepared, Prepared]:
    """The two ways to delete the feedback `where(*args)` selects and learn
    what was deleted: DELETE ... RETURNING, or a locking read of the rows
    (their row ids first) before deleting them by id. The dialect picks one."""
    returning = Prepared(lambda *args: Feedback.delete().where(where(*args)).returning(*KEY_COLUMNS))
    locking = Prepared(
        lambda *args: database.locking(Feedback.select(Feedback.id, *KEY_COLUMNS).where(where(*args)))
    )
    return returning, locking


def _delete_where(returning: Prepared, locking: Prepared, *args: object) -> list[tuple]:
    """Deletes the feedback the `_deletion` statements select; returns the
    deleted rows' keys (see KEY_COLUMNS). Call it inside a transaction."""

    def lock_then_delete() -> list[tuple]:
        rows = database.execute_sql(*locking(*args)).fetchall()
        for start in range(0, len(rows), DELETE_BATCH):
            ids = [row[0] for row in rows[start : start + DELETE_BATCH]]
            Feedback.delete().where(Feedback.id.in_(ids)).execute()
        return [row[1:] for row in rows]

    return database.deleted_rows(lambda: database.execute_sql(*returning(*args)).fetchall(), lock_then_delete)


_DELETE_ONE = _deletion(
    lambda thread_id, run_id, feedback_id, user_id, checked_user: (
        (Feedback.feedback_id == feedback_id)
        & (Feedback.thread_id == thread_id)
        & (Feedback.run == run_id)
        & (Feedback.user_id == user_id)
        & _in_their_thread(thread_id, checked_user)
    )
)
_DELETE_RUN = _deletion(
    lambda thread_id, run_id, user_id, checked_user: (
        (Feedback.thread_id == thread_id)
        & (Feedback.run == run_id)
        & (Feedback.user_id == user_id)
        & _in_their_thread(thread_id, checked_user)
    )
)
_DELETE_THREAD = _deletion(lambda thread_id: Feedback.thread_id == thread_id)
_DELETE_USER = _deletion(lambda user_id: Feedback.user_id == user_id)


def _delete_users_feedback(
    deletion: tuple[Prepared, Prepared],
    args: tuple,
    thread_id: str,
    checked_user: str | None,
    request: RequestClaim | None,
) -> bool:
    """One of a user's deletes: claims the request (if any), deletes, records
    the changes, in one transaction. False when nothing was deleted (the
    claim rolls back); NOT_FOUND when the thread rule was the reason."""
    now = now_us()
    try:
        with database.atomic():
            if request is not None and requests.claim(request, "", now) is not None:
                return True  # the first call with this request id deleted it
            deleted = _delete_where(*deletion, *args)
            if not deleted:
                raise _Unchanged
            append_changes(ChangeKind.DELETED, deleted, now)
    except _Unchanged:
        _refuse_thread(thread_id, checked_user)
        return False
    return True


def delete_feedback(
    thread_id: str,
    run_id: str,
    feedback_id: str,
    user_id: str,
    checked: bool,
    request: RequestClaim | None = None,
) -> bool:
    """Deletes one feedback of the user on that thread and run, if the thread
    rule lets them (`checked`: else NOT_FOUND); False if there was none. A
    repeat of a request that deleted it is True again."""
    checked_user = user_id if checked else None
    args = (thread_id, run_id, feedback_id, user_id, checked_user)
    return _delete_users_feedback(_DELETE_ONE, args, thread_id, checked_user, request)


def delete_run_feedback(
    thread_id: str, run_id: str, user_id: str, checked: bool, request: RequestClaim | None = None
) -> bool:
    """Deletes all of the user's feedback on a run, if the thread rule lets
    them (`checked`: else NOT_FOUND); False if there was none. A repeat of a
    request that deleted some is True again."""
    checked_user = user_id if checked else None
    args = (thread_id, run_id, user_id, checked_user)
    return _delete_users_feedback(_DELETE_RUN, args, thread_id, checked_user, request)


def delete_user_feedback(user_id: str) -> int:
    """Erases every feedback of a user, on every thread, and what was kept to
    answer their retried requests, in one transaction; returns how many
    feedback were erased."""
    now = now_us()
    with database.atomic():
        deleted = _delete_where(*_DELETE_USER, user_id)
        requests.forget_user(user_id)
        append_changes(ChangeKind.DELETED, deleted, now)
    return len(deleted)


# --- feedback reads -------------------------------------------------------------


def _page_query(thread_id, run_id, user_id, after_id, limit):
    where = (Feedback.thread_id == thread_id) & (Feedback.id > after_id)
    if run_id is not None:
        where &= Feedback.run == run_id
    if user_id is not None:
        where &= Feedback.user_id == user_id
    return Feedback.select(*FEEDBACK_COLUMNS).where(where).order_by(Feedback.id).limit(limit)


_FEEDBACK_FIELDS = list(FeedbackRow._fields)
_PAGE = Prepared(_page_query)
_PAGE_WITH_OWNER = Prepared(
    lambda thread_id, *args: _with_owner(thread_id, _page_query(thread_id, *args), _FEEDBACK_FIELDS, "id")
)


def feedback_page(
    thread_id: str, run_id: str | None, user_id: str | None, after_id: int, limit: int, with_owner: bool
) -> tuple[str | None, list[FeedbackRow]]:
    """Feedback on a thread (or one run of it), oldest first, after a row id,
    and the thread's owner when `with_owner` (else None). user_id None means
    every user's feedback."""
    args = (thread_id, run_id, user_id, after_id, limit)
    if with_owner:
        owner, rows = _read_with_owner(thread_id, _PAGE(*args), lambda: _PAGE_WITH_OWNER(*args))
    else:
        owner, rows = None, database.execute_sql(*_PAGE(*args)).fetchall()
    return owner, [FeedbackRow._make(row) for row in rows]


def _stats_query(thread_id, run_ids):
    positive = fn.SUM(Case(None, [(Feedback.rating == 1, 1)], 0)).alias("positive")
    negative = fn.SUM(Case(None, [(Feedback.rating == -1, 1)], 0)).alias("negative")
    return (
        Feedback.select(
            Feedback.run.alias("run_id"), fn.COUNT(Feedback.id).alias("total"), positive, negative
        )
        .where((Feedback.thread_id == thread_id) & (Feedback.run.in_(run_ids)))
        .group_by(Feedback.run)
    )


_STATS_FIELDS = ["run_id", "total", "positive", "negative"]
_STATS = Prepared(_stats_query)
_STATS_WITH_OWNER = Prepared(
    lambda thread_id, run_ids: _with_owner(thread_id, _stats_query(thread_id, run_ids), _STATS_FIELDS)
)


def stats_for_runs(
    thread_id: str, run_ids: Sequence[str], with_owner: bool
) -> tuple[str | None, dict[str, RunStats]]:
    """Counts every user's feedback per run, in one grouped query, and the
    thread's owner when `with_owner` (else None)."""
    unique_ids = list(dict.fromkeys(run_ids))
    if with_owner:
        plain = _STATS(thread_id, unique_ids)
        owner, rows = _read_with_owner(thread_id, plain, lambda: _STATS_WITH_OWNER(thread_id, unique_ids))
    else:
        owner, rows = None, database.execute_sql(*_STATS(thread_id, unique_ids)).fetchall()
    counted = {run: RunStats(run, int(t), int(p or 0), int(n or 0)) for run, t, p, n in rows}
    return owner, {run: counted.get(run, RunStats(run, 0, 0, 0)) for run in unique_ids}

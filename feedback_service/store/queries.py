"""Every query the service runs. Each function is one unit of work (one
statement where it can be, else one transaction), runs synchronously where
the Store puts it (a database thread, or the event loop on SQLite for the
units marked `short`: those that stay short whatever the data), and raises
domain errors when the data says no.

Every write of feedback records what it changed in the change log
(store/changes.py), in its own transaction and as its last step; a write
sent with a request_id first claims it (store/requests.py), in the same
transaction.
"""

import functools
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from peewee import (
    JOIN,
    SQL,
    Case,
    ColumnBase,
    CompoundSelectQuery,
    Insert,
    IntegrityError,
    NodeList,
    Select,
    SelectBase,
    Value,
    fn,
)

from feedback_service.core.clock import now_us
from feedback_service.core.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from feedback_service.core.records import (
    BucketCount,
    ChangeKind,
    FeedbackDraft,
    FeedbackRow,
    Labels,
    ListFilter,
    MessageStats,
    RequestClaim,
    RunRecord,
    RunStats,
    TagCount,
    ThreadRecord,
    ThreadStats,
    VoteCounts,
    may_use_thread,
)
from feedback_service.store import one_round_trip, requests
from feedback_service.store.changes import append_changes
from feedback_service.store.database import short, short_when
from feedback_service.store.models import (
    TAG_SEPARATOR,
    Feedback,
    FeedbackTag,
    Run,
    RunLabel,
    Thread,
    database,
    split_tags,
)
from feedback_service.store.prepared import Prepared

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
    Feedback.tags,
)
assert tuple(c.column_name for c in FEEDBACK_COLUMNS) == FeedbackRow._fields


def _feedback_row(values: Sequence[Any]) -> FeedbackRow:
    """A FeedbackRow from FEEDBACK_COLUMNS' values as stored."""
    *fields, tags = values
    return FeedbackRow._make((*fields, split_tags(tags)))


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


@short
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


@short
def register_run(thread_id: str, run_id: str, labels: Labels | None = None) -> RunRecord:
    """Registers a run with its labels, or finds it registered with the same
    ones; FAILED_PRECONDITION if it is in another thread or has other labels
    (a run's labels never change)."""
    wanted = tuple(sorted((labels or {}).items()))
    with database.atomic():
        # Locked, the thread (and so each of its runs) outlives this transaction.
        if _lock_thread(thread_id) is None:
            raise NotFound(f"thread {thread_id} is not registered")
        inserted = (
            Run.insert(run_id=run_id, thread=thread_id, created_at=now_us())
            .on_conflict_ignore()
            .as_rowcount()
            .execute()
        )
        if inserted and wanted:
            rows = [(run_id, key, value) for key, value in wanted]
            RunLabel.insert_many(rows, fields=LABEL_COLUMNS).execute()
        run = Run.get_or_none(Run.run_id == run_id)
        stored = wanted if inserted else _run_labels(run_id)
    # None: the run was in another thread, deleted since (this call came first).
    if run is None or run.thread_id != thread_id:
        raise FailedPrecondition(f"run {run_id} already belongs to another thread")
    if stored != wanted:
        raise FailedPrecondition(f"run {run_id} is already registered with other labels; labels never change")
    return RunRecord(run.run_id, run.thread_id, run.created_at, stored)


LABEL_COLUMNS = (RunLabel.run, RunLabel.key, RunLabel.value)


def _run_labels(run_id: str) -> tuple[tuple[str, str], ...]:
    """A run's labels, (key, value) sorted by key."""
    query = RunLabel.select(RunLabel.key, RunLabel.value).where(RunLabel.run == run_id).order_by(RunLabel.key)
    return tuple((str(key), str(value)) for key, value in database.execute(query).fetchall())


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
        tags=draft.tags,
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


def _owned_or_shared(user_id: str) -> ColumnBase:
    return Thread.owner_user_id.in_(["", user_id])


def _with_owner(thread_id: str, data: SelectBase, columns: list[str], order_by: str | None = None) -> Select:
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
    thread_id: str,
    with_owner: bool,
    plain: Callable[[], tuple[str, list[Any]]],
    joined: Callable[[], tuple[str, list[Any]]],
) -> tuple[str | None, list[tuple[Any, ...]]]:
    """(the thread's owner, the rows of a read). Without `with_owner`: None
    and the `plain` statement's rows. With it: from the `joined` statement (a
    `_with_owner` one) where the dialect prefers one round trip, else from an
    owner lookup and the `plain` statement."""
    if not with_owner:
        return None, database.execute_sql(*plain()).fetchall()
    if not database.one_statement_reads:
        return thread_owner(thread_id), database.execute_sql(*plain()).fetchall()
    rows = database.execute_sql(*joined()).fetchall()
    return rows[0][0], [row[1:] for row in rows if row[1] is not None]


def _insert_if_run_in_thread(
    thread_id: str, run_id: str, user_id: str | None, values: Sequence[object]
) -> Insert:
    """INSERT ... SELECT ... FROM run: inserts `values` (one per
    INSERTED_COLUMNS) only if the run belongs to the thread and, for a user,
    the thread is theirs or shared, in one statement (0 rows inserted: not so)."""
    where = (Run.run_id == run_id) & (Run.thread == thread_id)
    source = Run.select(*(Value(v) for v in values))
    if user_id is not None:
        source = source.join(Thread, on=Run.thread == Thread.thread_id)
        where &= _owned_or_shared(user_id)
    return Feedback.insert_from(source.where(where), INSERTED_COLUMNS)


def _upsert_if_run_in_thread(
    thread_id: str, run_id: str, user_id: str | None, values: Sequence[object]
) -> Insert:
    """The same insert, updating the existing row of the key instead of failing."""
    upsert: Insert = database.upsert(
        _insert_if_run_in_thread(thread_id, run_id, user_id, values),
        key=FEEDBACK_KEY,
        preserve=(Feedback.rating, Feedback.comment, Feedback.updated_at, Feedback.tags),
        returning=FEEDBACK_COLUMNS,
    )
    return upsert


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
    values = [getattr(row, field) for field in INSERTED_FIELDS]
    values[-1] = TAG_SEPARATOR.join(row.tags)
    return values


# --- a feedback's rows in feedback_tag --------------------------------------------
#
# Written in the transaction that writes the feedback, so that the filter and
# the counts, which read them, never see a feedback without its tags or with
# another write's.

TAG_COLUMNS = (
    FeedbackTag.feedback_row,
    FeedbackTag.tag,
    FeedbackTag.thread_id,
    FeedbackTag.run_id,
    FeedbackTag.message_id,
)
_INSERT_TAGS = Prepared(
    lambda feedback_id, thread_id, run_id, message_id, tags: FeedbackTag.insert_many(
        [
            (
                Feedback.select(Feedback.id).where(Feedback.feedback_id == feedback_id),
                tag,
                thread_id,
                run_id,
                message_id,
            )
            for tag in tags
        ],
        fields=TAG_COLUMNS,
    )
)
_DELETE_TAGS = Prepared(lambda row_id: FeedbackTag.delete().where(FeedbackTag.feedback_row == row_id))


def _insert_tags(row: FeedbackRow) -> None:
    if row.tags:
        statement = _INSERT_TAGS(row.feedback_id, row.thread_id, row.run_id, row.message_id, list(row.tags))
        database.execute_sql(*statement)


def _refuse_thread(thread_id: str, user_id: str | None) -> None:
    """After a write changed nothing, says why when the thread rule was the
    reason (a second statement, on this failure path only)."""
    if user_id is not None:
        owner = thread_owner(thread_id)
        if owner is None or not may_use_thread(owner, user_id):
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


def _row_from_json(text: str) -> FeedbackRow:
    fields = json.loads(text)
    return FeedbackRow(**{**fields, "tags": tuple(fields.get("tags", ()))})


@short
def create_feedback(draft: FeedbackDraft, checked: bool, request: RequestClaim | None = None) -> FeedbackRow:
    """Inserts new feedback; an existing one for the same key is
    ALREADY_EXISTS. `checked`: apply the thread rule for the draft's user.
    With a request claim, a repeat of the request returns the feedback the
    first call created."""
    row = _new_row(draft)
    user_id = draft.user_id if checked else None
    if database.one_round_trip_writes:
        try:
            if one_round_trip.create(row, user_id, request, "" if request is None else _row_json(row)):
                return row
        except IntegrityError as exc:
            raise _already_exists(draft) from exc
        if request is None:
            raise _not_found(draft, user_id)
        # Refused, or a repeat of the request: the steps below tell which.
    inserting = False
    try:
        with database.atomic():
            if request is not None:
                earlier = requests.claim(request, _row_json(row), row.created_at)
                if earlier is not None:
                    return _row_from_json(earlier)
            inserting = True
            statement = _INSERT_IF_RUN(draft.thread_id, draft.run_id, user_id, _inserted_values(row))
            if database.execute_sql(*statement).rowcount != 1:
                raise _Unchanged
            inserting = False
            _insert_tags(row)
            append_changes(ChangeKind.CREATED, [_key(row)], row.updated_at)
    except IntegrityError as exc:
        if not inserting:
            raise
        raise _already_exists(draft) from exc
    except _Unchanged:
        raise _not_found(draft, user_id) from None
    return row


def _already_exists(draft: FeedbackDraft) -> AlreadyExists:
    """After the insert of a feedback failed on a constraint: the unique key
    collided (the thread rule passed, as the row was selected), or the run
    vanished under a concurrent delete (NOT_FOUND)."""
    _require_run(draft.thread_id, draft.run_id)
    return AlreadyExists(
        "feedback by this user on this run"
        + (f" and message {draft.message_id}" if draft.message_id else "")
        + " already exists; use UpsertFeedback to change it"
    )


@short
def upsert_feedback(draft: FeedbackDraft, checked: bool) -> FeedbackRow:
    """Creates or updates the feedback for the draft's key, replaces its tags
    and records the change, in one transaction: the upsert statement (with a
    read back where the dialect cannot return the row), then, when it
    replaced an existing feedback, the deletion of its old tags, the
    insertion of the new ones, and the change-log append. The upsert holds
    the feedback's row lock until the end, so concurrent upserts of one key
    replace the tags one after the other."""
    user_id = draft.user_id if checked else None
    new = _new_row(draft)
    if database.one_round_trip_writes:
        try:
            stored = one_round_trip.upsert(new, user_id)
        except IntegrityError as exc:  # only the foreign key: the run vanished under a concurrent delete
            raise _not_found(draft, user_id) from exc
        if stored is None:
            raise _not_found(draft, user_id)
        return _feedback_row(stored)
    statement = _UPSERT_IF_RUN(draft.thread_id, draft.run_id, user_id, _inserted_values(new))
    key = (draft.thread_id, draft.run_id, draft.user_id, draft.message_id)
    upserting = True
    try:
        with database.atomic():
            stored = database.run_upsert(statement, lambda: database.execute_sql(*_BY_KEY(*key)).fetchone())
            if stored is None:  # nothing inserted or updated: the run is not in the thread, or not theirs
                raise _Unchanged
            upserting = False
            row = _feedback_row(stored)
            if row.feedback_id != new.feedback_id:  # an existing feedback, whose old tags go
                database.execute_sql(*_DELETE_TAGS(row.id))
            _insert_tags(row)
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


def _in_their_thread(thread_id: str, user_id: str | None) -> ColumnBase:
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


def _delete_where(returning: Prepared, locking: Prepared, *args: object) -> list[tuple[Any, ...]]:
    """Deletes the feedback the `_deletion` statements select; returns the
    deleted rows' keys (see KEY_COLUMNS). Call it inside a transaction."""

    def lock_then_delete() -> list[tuple[Any, ...]]:
        rows = database.execute_sql(*locking(*args)).fetchall()
        for start in range(0, len(rows), DELETE_BATCH):
            ids = [row[0] for row in rows[start : start + DELETE_BATCH]]
            Feedback.delete().where(Feedback.id.in_(ids)).execute()
        return [row[1:] for row in rows]

    deleted: list[tuple[Any, ...]] = database.deleted_rows(
        lambda: database.execute_sql(*returning(*args)).fetchall(), lock_then_delete
    )
    return deleted


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
    args: tuple[object, ...],
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


@short
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


def _page_query(
    thread_id: str,
    run_id: str | None,
    user_id: str | None,
    after_id: int,
    limit: int,
    rating: int | None,
    has_comment: int | None,
    tag: str | None,
    created_after: int | None,
    created_before: int | None,
) -> Select:
    """The page, through the index that bounds it to the run or thread (and
    the user, when one): (thread_id, run_id, id), (thread_id, run_id, user_id,
    message_id) or (thread_id, user_id, id), the filters checked on the rows
    it yields. With a tag and neither run nor user, the rows come instead from
    feedback_tag's (thread_id, tag, feedback_row_id): only that tag's, in
    order. Arguments that are None filter nothing."""
    where = Feedback.thread_id == thread_id
    if run_id is not None:
        where &= Feedback.run == run_id
    if user_id is not None:
        where &= Feedback.user_id == user_id
    if rating is not None:
        where &= Feedback.rating == rating
    if has_comment is not None:  # 1: with a comment, 0: without
        where &= Case(None, [(Feedback.comment == "", 0)], 1) == has_comment
    if created_after is not None:
        where &= Feedback.created_at >= created_after
    if created_before is not None:
        where &= Feedback.created_at < created_before
    if tag is not None and run_id is None and user_id is None:
        return (
            FeedbackTag.select(*FEEDBACK_COLUMNS)
            .join(Feedback, on=FeedbackTag.feedback_row == Feedback.id)
            .where(
                (FeedbackTag.thread_id == thread_id)
                & (FeedbackTag.tag == tag)
                & (FeedbackTag.feedback_row > after_id)
                & where
            )
            .order_by(FeedbackTag.feedback_row)
            .limit(limit)
        )
    if tag is not None:  # the primary key of feedback_tag answers for each row
        where &= fn.EXISTS(
            FeedbackTag.select(SQL("1")).where(
                (FeedbackTag.feedback_row == Feedback.id) & (FeedbackTag.tag == tag)
            )
        )
    where &= Feedback.id > after_id
    return Feedback.select(*FEEDBACK_COLUMNS).where(where).order_by(Feedback.id).limit(limit)


# A page of up to this many rows, unfiltered, of one run or one user, reads
# at most one row more through its index (see _short_page).
SHORT_PAGE_ROWS = 101


def _short_page(
    thread_id: str,
    run_id: str | None,
    user_id: str | None,
    after_id: int,
    limit: int,
    kept: ListFilter,
    with_owner: bool,
) -> bool:
    """Whether a page is short whatever the table holds: without a filter
    (the user, which an index leads with, aside), a run's page reads
    (thread_id, run_id, id) and a user's (thread_id, user_id, id) in order,
    and stop after `limit` rows (a user's page of a run passes over that
    user's other feedback on the thread, at most). Every user's page of a
    whole thread, and a filtered page, may pass over many rows."""
    unfiltered = kept._replace(user_id="") == ListFilter()
    return unfiltered and limit <= SHORT_PAGE_ROWS and (run_id is not None or user_id is not None)


_FEEDBACK_FIELDS = list(FeedbackRow._fields)
_PAGE = Prepared(_page_query)
_PAGE_WITH_OWNER = Prepared(
    lambda thread_id, *args: _with_owner(thread_id, _page_query(thread_id, *args), _FEEDBACK_FIELDS, "id")
)


@short_when(_short_page)
def feedback_page(
    thread_id: str,
    run_id: str | None,
    user_id: str | None,
    after_id: int,
    limit: int,
    kept: ListFilter,
    with_owner: bool,
) -> tuple[str | None, list[FeedbackRow]]:
    """Feedback on a thread (or one run of it) that the filter keeps, oldest
    first, after a row id, and the thread's owner when `with_owner` (else
    None). user_id None means every user's feedback."""
    args = (
        thread_id,
        run_id,
        user_id,
        after_id,
        limit,
        kept.rating,
        None if kept.has_comment is None else int(kept.has_comment),
        kept.tag or None,
        kept.created_after,
        kept.created_before,
    )
    owner, rows = _read_with_owner(
        thread_id, with_owner, lambda: _PAGE(*args), lambda: _PAGE_WITH_OWNER(*args)
    )
    return owner, [_feedback_row(row) for row in rows]


def _caller_feedback_query(thread_id: str, user_id: str, run_ids: Sequence[str], limit: int) -> Select:
    return (
        Feedback.select(*FEEDBACK_COLUMNS)
        .where((Feedback.thread_id == thread_id) & (Feedback.user_id == user_id) & Feedback.run.in_(run_ids))
        .order_by(Feedback.id)
        .limit(limit)
    )


_CALLER_FEEDBACK = Prepared(_caller_feedback_query)
_CALLER_FEEDBACK_WITH_OWNER = Prepared(
    lambda thread_id, *args: _with_owner(
        thread_id, _caller_feedback_query(thread_id, *args), _FEEDBACK_FIELDS, "id"
    )
)


def caller_feedback(
    thread_id: str, user_id: str, run_ids: Sequence[str], limit: int, with_owner: bool
) -> tuple[str | None, list[FeedbackRow]]:
    """A user's feedback (run- and message-level) on some runs of a thread,
    oldest first, at most `limit` rows, through the index (thread_id, user_id,
    id) or the unique (thread_id, run_id, user_id, message_id); and the
    thread's owner when `with_owner`."""
    args = (thread_id, user_id, list(dict.fromkeys(run_ids)), limit)
    owner, rows = _read_with_owner(
        thread_id, with_owner, lambda: _CALLER_FEEDBACK(*args), lambda: _CALLER_FEEDBACK_WITH_OWNER(*args)
    )
    return owner, [_feedback_row(row) for row in rows]


# A vote is a user's run-level feedback (message_id ''): one per user and run.
VOTE = ""
# The first column of a counting query's rows, saying what the row counts.
COUNTS, TAGS = "c", "t"


def _positive() -> ColumnBase:
    return fn.SUM(Case(None, [(Feedback.rating == 1, 1)], 0)).alias("positive")


def _negative() -> ColumnBase:
    return fn.SUM(Case(None, [(Feedback.rating == -1, 1)], 0)).alias("negative")


def _stats_query(thread_id: str, run_ids: Sequence[str], by_message: bool) -> CompoundSelectQuery:
    """Rows (kind, run_id, key, total, positive, negative), one statement:
    COUNTS rows count the votes of each run (key '') and, `by_message`, the
    feedback on each message (key: the message id), from the index (thread_id,
    run_id, message_id, rating); TAGS rows count the votes carrying each tag
    (key: the tag) from feedback_tag's (thread_id, message_id, run_id, tag)."""
    in_runs = (Feedback.thread_id == thread_id) & Feedback.run.in_(run_ids)
    key = Feedback.message_id if by_message else Value(VOTE)
    counts = Feedback.select(
        Value(COUNTS).alias("kind"),
        Feedback.run.alias("run_id"),
        key.alias("key"),
        fn.COUNT(Feedback.id).alias("total"),
        _positive(),
        _negative(),
    )
    if by_message:
        counts = counts.where(in_runs).group_by(Feedback.run, Feedback.message_id)
    else:
        counts = counts.where(in_runs & (Feedback.message_id == VOTE)).group_by(Feedback.run)
    tags = (
        FeedbackTag.select(
            Value(TAGS), FeedbackTag.run_id, FeedbackTag.tag, fn.COUNT(SQL("*")), Value(0), Value(0)
        )
        .where(
            (FeedbackTag.thread_id == thread_id)
            & (FeedbackTag.message_id == VOTE)
            & FeedbackTag.run_id.in_(run_ids)
        )
        .group_by(FeedbackTag.run_id, FeedbackTag.tag)
    )
    return counts + tags  # UNION ALL


_STATS_FIELDS = ["kind", "run_id", "key", "total", "positive", "negative"]
# Keyed by `by_message`: Prepared caches by the arguments' shape, not their value.
_STATS = {
    by_message: Prepared(functools.partial(_stats_query, by_message=by_message))
    for by_message in (False, True)
}
_STATS_WITH_OWNER = {
    by_message: Prepared(
        lambda thread_id, run_ids, by_message=by_message: _with_owner(
            thread_id, _stats_query(thread_id, run_ids, by_message), _STATS_FIELDS
        )
    )
    for by_message in (False, True)
}


def _one_run_votes(thread_id: str, run_ids: Sequence[str], by_message: bool, with_owner: bool) -> bool:
    """GetFeedbackStats without messages counts one run's votes (one per user
    at most) from a covering index: short. Batches, and every message of a
    run, may count many more."""
    return len(run_ids) == 1 and not by_message


@short_when(_one_run_votes)
def stats_for_runs(
    thread_id: str, run_ids: Sequence[str], by_message: bool, with_owner: bool
) -> tuple[str | None, dict[str, RunStats]]:
    """The votes on each run, their tags, and, `by_message`, the message-level
    feedback per message, in one statement; and the thread's owner when
    `with_owner` (else None)."""
    unique_ids = list(dict.fromkeys(run_ids))
    owner, rows = _read_with_owner(
        thread_id,
        with_owner,
        lambda: _STATS[by_message](thread_id, unique_ids),
        lambda: _STATS_WITH_OWNER[by_message](thread_id, unique_ids),
    )
    votes: dict[str, tuple[int, int, int]] = {}
    messages: dict[str, list[MessageStats]] = {}
    tags: dict[str, list[TagCount]] = {}
    for kind, run, key, total, positive, negative in rows:
        if kind == TAGS:
            tags.setdefault(run, []).append(TagCount(key, int(total)))
        elif key == VOTE:
            votes[run] = (int(total), int(positive or 0), int(negative or 0))
        else:
            messages.setdefault(run, []).append(
                MessageStats(key, int(total), int(positive or 0), int(negative or 0))
            )
    return owner, {
        run: RunStats(
            run,
            *votes.get(run, (0, 0, 0)),
            tags=tuple(sorted(tags.get(run, ()))),
            messages=tuple(sorted(messages.get(run, ()))),
        )
        for run in unique_ids
    }


def _thread_stats_query(thread_id: str) -> CompoundSelectQuery:
    """Rows (kind, key, total, positive, negative, runs), one statement: one
    COUNTS row with the thread's votes and the runs they are on, from the
    index (thread_id, message_id, created_at, rating, run_id); a TAGS row per
    tag those votes carry (key: the tag), from feedback_tag's (thread_id,
    message_id, run_id, tag)."""
    votes = Feedback.select(
        Value(COUNTS).alias("kind"),
        Value("").alias("key"),
        fn.COUNT(Feedback.id).alias("total"),
        _positive(),
        _negative(),
        fn.COUNT(NodeList((SQL("DISTINCT"), Feedback.run))).alias("runs"),
    ).where((Feedback.thread_id == thread_id) & (Feedback.message_id == VOTE))
    tags = (
        FeedbackTag.select(Value(TAGS), FeedbackTag.tag, fn.COUNT(SQL("*")), Value(0), Value(0), Value(0))
        .where((FeedbackTag.thread_id == thread_id) & (FeedbackTag.message_id == VOTE))
        .group_by(FeedbackTag.tag)
    )
    return votes + tags  # UNION ALL


_THREAD_STATS_FIELDS = ["kind", "key", "total", "positive", "negative", "runs"]
_THREAD_STATS = Prepared(_thread_stats_query)
_THREAD_STATS_WITH_OWNER = Prepared(
    lambda thread_id: _with_owner(thread_id, _thread_stats_query(thread_id), _THREAD_STATS_FIELDS)
)


def thread_stats(thread_id: str, with_owner: bool) -> tuple[str | None, ThreadStats]:
    """The votes on every run of a thread, their tags and the runs they are
    on, in one statement; and the thread's owner when `with_owner`."""
    owner, rows = _read_with_owner(
        thread_id, with_owner, lambda: _THREAD_STATS(thread_id), lambda: _THREAD_STATS_WITH_OWNER(thread_id)
    )
    total = positive = negative = runs = 0
    tags = []
    for kind, key, count, plus, minus, voted_runs in rows:
        if kind == TAGS:
            tags.append(TagCount(key, int(count)))
        else:
            total, positive, negative, runs = int(count), int(plus or 0), int(minus or 0), int(voted_runs)
    return owner, ThreadStats(thread_id, total, positive, negative, tuple(sorted(tags)), runs)


def _time_series_query(thread_id: str | None, start: int, end: int, width: int) -> Select:
    """Rows (bucket, positive, negative): the votes created in [start, end)
    per bucket of `width` microseconds (buckets start at multiples of it),
    empty buckets left out. With a thread, from the index (thread_id,
    message_id, created_at, rating, run_id); without (None: every thread),
    from (message_id, created_at, rating)."""
    created = Feedback.created_at
    bucket = (created - database.remainder(created, SQL(str(width)))).alias("bucket")
    where = (Feedback.message_id == VOTE) & (created >= start) & (created < end)
    if thread_id is not None:
        where &= Feedback.thread_id == thread_id
    # The width is a literal, so that GROUP BY repeats the selected expression exactly.
    return Feedback.select(bucket, _positive(), _negative()).where(where).group_by(SQL("1"))


_SERIES_FIELDS = ["bucket", "positive", "negative"]
# Keyed by bucket width (a literal in the SQL).
_SERIES: dict[int, Prepared] = {}
_SERIES_WITH_OWNER: dict[int, Prepared] = {}


def _series_statements(width: int) -> tuple[Prepared, Prepared]:
    if width not in _SERIES:
        _SERIES[width] = Prepared(functools.partial(_time_series_query, width=width))
        _SERIES_WITH_OWNER[width] = Prepared(
            lambda thread_id, start, end: _with_owner(
                thread_id, _time_series_query(thread_id, start, end, width), _SERIES_FIELDS
            )
        )
    return _SERIES[width], _SERIES_WITH_OWNER[width]


def time_series(
    thread_id: str | None, start: int, end: int, width: int, with_owner: bool
) -> tuple[str | None, list[BucketCount]]:
    """The votes created in [start, end) on a thread (None: on every thread),
    per bucket of `width` microseconds, non-empty buckets only, in one
    statement; and the thread's owner when `with_owner`."""
    plain, with_thread_owner = _series_statements(width)
    owner, rows = _read_with_owner(
        thread_id or "",  # with an owner only when there is a thread
        with_owner,
        lambda: plain(thread_id, start, end),
        lambda: with_thread_owner(thread_id, start, end),
    )
    return owner, [BucketCount(int(b), int(p or 0), int(n or 0)) for b, p, n in rows]


# --- votes by run label -----------------------------------------------------------
#
# A vote's run carries labels (run_label: one row per (run_id, key)). A
# selection (`release=1, model=m`) joins one run_label row per label, each
# found through the primary key (run_id, key); grouping by a label's value
# LEFT JOINs that key's row, so that runs without it form a NULL group.


def _labelled_votes(
    query: Select,
    run: Any,
    label_key: str | None,
    group: Any,
    keys: Sequence[str],
    values: Sequence[str],
) -> Select:
    """`query` (votes, or their tags, whose run is the column `run`) joined
    to the run labels it is grouped by and selected by."""
    if label_key is not None:
        query = query.join(group, JOIN.LEFT_OUTER, on=(group.run == run) & (group.key == label_key))
    for index, (key, value) in enumerate(zip(keys, values, strict=True)):
        label = RunLabel.alias(f"s{index}")
        query = query.join(label, on=(label.run == run) & (label.key == key) & (label.value == value))
    return query


def _votes_where(thread_id: str | None, start: int | None, end: int | None) -> Any:
    where = Feedback.message_id == VOTE
    if thread_id is not None:
        where &= Feedback.thread_id == thread_id
    if start is not None:
        where &= Feedback.created_at >= start
    if end is not None:
        where &= Feedback.created_at < end
    return where


def _label_votes_query(
    label_key: str | None,
    keys: Sequence[str],
    values: Sequence[str],
    thread_id: str | None,
    start: int | None,
    end: int | None,
) -> Any:
    """Rows (kind, label_value, tag, total, positive, negative), one
    statement: COUNTS rows count the votes of the selected runs per value of
    `label_key` (NULL: runs without it; one row in all without a key), TAGS
    rows the votes carrying each tag per value."""
    group = RunLabel.alias("g")
    label_value = group.value if label_key is not None else Value(None)
    counts: Select = Feedback.select(
        Value(COUNTS).alias("kind"),
        label_value.alias("label_value"),
        Value("").alias("tag"),
        fn.COUNT(Feedback.id).alias("total"),
        _positive(),
        _negative(),
    )
    counts = _labelled_votes(counts, Feedback.run, label_key, group, keys, values)
    counts = counts.where(_votes_where(thread_id, start, end))
    tags: Select = FeedbackTag.select(
        Value(TAGS), label_value, FeedbackTag.tag, fn.COUNT(SQL("*")), Value(0), Value(0)
    ).join(Feedback, on=FeedbackTag.feedback_row == Feedback.id)
    tags = _labelled_votes(tags, FeedbackTag.run_id, label_key, group, keys, values)
    tags = tags.where(_votes_where(thread_id, start, end) & (FeedbackTag.message_id == VOTE))
    if label_key is not None:
        counts = counts.group_by(group.value)
        tags = tags.group_by(group.value, FeedbackTag.tag)
    else:
        tags = tags.group_by(FeedbackTag.tag)
    return counts + tags  # UNION ALL


_LABEL_VOTES_FIELDS = ["kind", "label_value", "tag", "total", "positive", "negative"]
_LABEL_VOTES = Prepared(_label_votes_query)
_LABEL_VOTES_WITH_OWNER = Prepared(
    lambda thread_id, label_key, keys, values, start, end: _with_owner(
        thread_id, _label_votes_query(label_key, keys, values, thread_id, start, end), _LABEL_VOTES_FIELDS
    )
)


def _label_votes(
    label_key: str | None, selection: Labels, thread_id: str | None, start: int | None, end: int | None
) -> tuple[str | None, dict[str, VoteCounts]]:
    """(the thread's owner, the votes per label value) of one statement; the
    owner is read (in the same statement where the dialect prefers it) for a
    named thread only, else None."""
    keys, values = zip(*sorted(selection.items()), strict=True) if selection else ((), ())
    args = (label_key, list(keys), list(values))
    owner, rows = _read_with_owner(
        thread_id or "",
        thread_id is not None,
        lambda: _LABEL_VOTES(*args, thread_id, start, end),
        lambda: _LABEL_VOTES_WITH_OWNER(thread_id, *args, start, end),
    )
    counts: dict[str, tuple[int, int, int]] = {}
    tags: dict[str, list[TagCount]] = {}
    for kind, label_value, tag, total, positive, negative in rows:
        value = label_value or ""
        if kind == TAGS:
            tags.setdefault(value, []).append(TagCount(tag, int(total)))
        elif int(total):
            counts[value] = (int(total), int(positive or 0), int(negative or 0))
    return owner, {
        value: VoteCounts(*counted, tags=tuple(sorted(tags.get(value, ()))))
        for value, counted in counts.items()
    }


def votes_by_label(
    label_key: str, selection: Labels, thread_id: str | None, start: int | None, end: int | None
) -> tuple[str | None, dict[str, VoteCounts]]:
    """The votes on the runs carrying every label of `selection` (on one
    thread, or every thread when None; first given in [start, end), either
    bound None for none), per value of `label_key` ('' for runs without it),
    with their tags, in one statement; and the thread's owner when one is
    named (None otherwise)."""
    return _label_votes(label_key, selection, thread_id, start, end)


def votes_of_selections(
    selections: Sequence[Labels], thread_id: str | None, start: int | None, end: int | None
) -> tuple[str | None, list[VoteCounts]]:
    """The votes on the runs of each selection, as votes_by_label counts
    them, one statement each; and the thread's owner when one is named."""
    owner, results = None, []
    for selection in selections:
        owner, counted = _label_votes(None, selection, thread_id, start, end)
        results.append(counted.get("", VoteCounts(0, 0, 0)))
    return owner, results


# --- export -------------------------------------------------------------------------


def _export_query(
    keys: Sequence[str],
    values: Sequence[str],
    thread_id: str | None,
    after_id: int,
    limit: int,
    rating: int | None,
    has_comment: int | None,
    tag: str | None,
    created_after: int | None,
    created_before: int | None,
) -> Any:
    """The next `limit` feedback after a row id that the filters keep, in row
    id order (the primary key's), on the runs carrying every label of
    (keys, values). Arguments that are None filter nothing."""
    query = _labelled_votes(Feedback.select(*FEEDBACK_COLUMNS), Feedback.run, None, None, keys, values)
    where = Feedback.id > after_id
    if thread_id is not None:
        where &= Feedback.thread_id == thread_id
    if rating is not None:
        where &= Feedback.rating == rating
    if has_comment is not None:  # 1: with a comment, 0: without
        where &= Case(None, [(Feedback.comment == "", 0)], 1) == has_comment
    if created_after is not None:
        where &= Feedback.created_at >= created_after
    if created_before is not None:
        where &= Feedback.created_at < created_before
    if tag is not None:  # the primary key of feedback_tag answers for each row
        where &= fn.EXISTS(
            FeedbackTag.select(SQL("1")).where(
                (FeedbackTag.feedback_row == Feedback.id) & (FeedbackTag.tag == tag)
            )
        )
    return query.where(where).order_by(Feedback.id).limit(limit)


_EXPORT = Prepared(_export_query)
_LABELS_OF_RUNS = Prepared(
    lambda run_ids: RunLabel.select(RunLabel.run, RunLabel.key, RunLabel.value).where(
        RunLabel.run.in_(run_ids)
    )
)


def export_page(
    selection: Labels, thread_id: str | None, after_id: int, limit: int, kept: ListFilter
) -> tuple[list[FeedbackRow], dict[str, Labels]]:
    """A page of the export: at most `limit` feedback after a row id that the
    selection and the filter keep, oldest first, and the labels of their runs
    (runs without labels left out). Two statements, no transaction kept."""
    keys, values = zip(*sorted(selection.items()), strict=True) if selection else ((), ())
    statement = _EXPORT(
        list(keys),
        list(values),
        thread_id,
        after_id,
        limit,
        kept.rating,
        None if kept.has_comment is None else int(kept.has_comment),
        kept.tag or None,
        kept.created_after,
        kept.created_before,
    )
    rows = [_feedback_row(row) for row in database.execute_sql(*statement).fetchall()]
    labels: dict[str, Labels] = {}
    run_ids = list(dict.fromkeys(row.run_id for row in rows))
    if run_ids:
        for run_id, key, value in database.execute_sql(*_LABELS_OF_RUNS(run_ids)).fetchall():
            labels.setdefault(run_id, {})[key] = value
    return rows, labels

"""Feedback writes: create and upsert, with their rows in feedback_tag, in
one transaction that also records the change (store/changes.py) and claims
a request_id (store/requests.py) when one is sent."""

import json
import uuid
from collections.abc import Sequence

from peewee import Insert, IntegrityError, Value

from feedback_service.core.clock import now_us
from feedback_service.core.errors import AlreadyExists, NotFound
from feedback_service.core.records import ChangeKind, FeedbackDraft, FeedbackRow, RequestClaim
from feedback_service.store import one_round_trip, requests
from feedback_service.store.changes import append_changes
from feedback_service.store.database import short
from feedback_service.store.models import TAG_SEPARATOR, Feedback, FeedbackTag, Run, Thread, database
from feedback_service.store.prepared import Prepared
from feedback_service.store.rows import FEEDBACK_COLUMNS, decode_row
from feedback_service.store.thread_rule import Unchanged, owned_or_shared, refuse_thread
from feedback_service.store.threads import require_run


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
        where &= owned_or_shared(user_id)
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


def _not_found(draft: FeedbackDraft, user_id: str | None) -> NotFound:
    refuse_thread(draft.thread_id, user_id)
    return NotFound(f"run {draft.run_id} not found in thread {draft.thread_id}")


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
                raise Unchanged
            inserting = False
            _insert_tags(row)
            append_changes(ChangeKind.CREATED, [_key(row)], row.updated_at)
    except IntegrityError as exc:
        if not inserting:
            raise
        raise _already_exists(draft) from exc
    except Unchanged:
        raise _not_found(draft, user_id) from None
    return row


def _already_exists(draft: FeedbackDraft) -> AlreadyExists:
    """After the insert of a feedback failed on a constraint: the unique key
    collided (the thread rule passed, as the row was selected), or the run
    vanished under a concurrent delete (NOT_FOUND)."""
    require_run(draft.thread_id, draft.run_id)
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
        return decode_row(stored)
    statement = _UPSERT_IF_RUN(draft.thread_id, draft.run_id, user_id, _inserted_values(new))
    key = (draft.thread_id, draft.run_id, draft.user_id, draft.message_id)
    upserting = True
    try:
        with database.atomic():
            stored = database.run_upsert(statement, lambda: database.execute_sql(*_BY_KEY(*key)).fetchone())
            if stored is None:  # nothing inserted or updated: the run is not in the thread, or not theirs
                raise Unchanged
            upserting = False
            row = decode_row(stored)
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
    except Unchanged:
        raise _not_found(draft, user_id) from None
    return row

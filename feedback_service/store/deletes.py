"""Deletions: one feedback, a user's feedback on a run, a thread with its
runs, and the erasure of a user; each records what it deleted in the change
log, in the same transaction."""

from collections.abc import Callable
from typing import Any

from peewee import SQL, ColumnBase

from feedback_service.core.clock import now_us
from feedback_service.core.errors import NotFound
from feedback_service.core.records import ChangeKind, RequestClaim
from feedback_service.store import requests
from feedback_service.store.changes import append_changes
from feedback_service.store.database import short
from feedback_service.store.models import Feedback, Run, Thread, database
from feedback_service.store.prepared import Prepared
from feedback_service.store.thread_rule import Unchanged, owned_or_shared, refuse_thread
from feedback_service.store.threads import lock_thread

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
        if lock_thread(thread_id) is None:
            raise NotFound(f"thread {thread_id} is not registered")
        database.execute_sql(*_LOCKED_RUNS(thread_id)).fetchall()
        feedback = _delete_where(*_DELETE_THREAD, thread_id)
        runs = Run.delete().where(Run.thread == thread_id).execute()
        Thread.delete().where(Thread.thread_id == thread_id).execute()
        append_changes(ChangeKind.DELETED, feedback, now)
    return runs, len(feedback)


def _in_their_thread(thread_id: str, user_id: str | None) -> ColumnBase:
    """For a user, the thread must be theirs or shared (see the rule above)."""
    if user_id is None:
        return SQL("1 = 1")
    owned = Thread.select(Thread.thread_id).where((Thread.thread_id == thread_id) & owned_or_shared(user_id))
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
                raise Unchanged
            append_changes(ChangeKind.DELETED, deleted, now)
    except Unchanged:
        refuse_thread(thread_id, checked_user)
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

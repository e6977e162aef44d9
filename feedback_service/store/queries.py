"""Every query the service runs. Each function is one unit of work (one
statement where it can be, else one transaction), runs synchronously in a
database worker thread, and raises domain errors when the data says no.
"""

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from peewee import Case, IntegrityError, MySQLDatabase, fn

from feedback_service.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from feedback_service.store.models import Feedback, Run, Thread, database


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class FeedbackDraft:
    """The caller-supplied part of a feedback record, already validated."""

    thread_id: str
    run_id: str
    user_id: str
    message_id: str
    rating: int
    comment: str


@dataclass(frozen=True, slots=True)
class RunStats:
    run_id: str
    total: int
    positive: int
    negative: int


# --- threads and runs ---------------------------------------------------------


def get_thread(thread_id: str) -> Thread | None:
    return Thread.get_or_none(Thread.thread_id == thread_id)


def register_thread(thread_id: str, owner_user_id: str) -> Thread:
    with database.atomic():
        Thread.insert(
            thread_id=thread_id, owner_user_id=owner_user_id, created_at=now_us()
        ).on_conflict_ignore().execute()
        thread = Thread.get_by_id(thread_id)
    if thread.owner_user_id != owner_user_id:
        raise FailedPrecondition(f"thread {thread_id} is already registered with another owner")
    return thread


def register_run(thread_id: str, run_id: str) -> Run:
    with database.atomic():
        if get_thread(thread_id) is None:
            raise NotFound(f"thread {thread_id} is not registered")
        Run.insert(run_id=run_id, thread=thread_id, created_at=now_us()).on_conflict_ignore().execute()
        run = Run.get_by_id(run_id)
    if run.thread_id != thread_id:
        raise FailedPrecondition(f"run {run_id} already belongs to another thread")
    return run


def delete_thread(thread_id: str) -> tuple[int, int]:
    """Deletes a thread with its runs and feedback; returns (runs, feedback)."""
    with database.atomic():
        if get_thread(thread_id) is None:
            raise NotFound(f"thread {thread_id} is not registered")
        feedback = Feedback.delete().where(Feedback.thread_id == thread_id).execute()
        runs = Run.delete().where(Run.thread == thread_id).execute()
        Thread.delete().where(Thread.thread_id == thread_id).execute()
    return runs, feedback


def _require_run(thread_id: str, run_id: str) -> None:
    run_thread = Run.select(Run.thread).where(Run.run_id == run_id).scalar()
    if run_thread != thread_id:
        raise NotFound(f"run {run_id} not found in thread {thread_id}")


# --- feedback writes ------------------------------------------------------------


def _new_row(draft: FeedbackDraft) -> dict:
    now = now_us()
    return {
        "feedback_id": str(uuid.uuid4()),
        "thread_id": draft.thread_id,
        "run": draft.run_id,
        "user_id": draft.user_id,
        "message_id": draft.message_id,
        "rating": draft.rating,
        "comment": draft.comment,
        "created_at": now,
        "updated_at": now,
    }


def _key(draft: FeedbackDraft) -> tuple:
    return (
        (Feedback.thread_id == draft.thread_id)
        & (Feedback.run == draft.run_id)
        & (Feedback.user_id == draft.user_id)
        & (Feedback.message_id == draft.message_id)
    )


def create_feedback(draft: FeedbackDraft) -> Feedback:
    """Inserts new feedback; an existing one for the same key is ALREADY_EXISTS."""
    row = _new_row(draft)
    try:
        with database.atomic():
            _require_run(draft.thread_id, draft.run_id)
            Feedback.insert(row).execute()
    except IntegrityError as exc:
        # The unique key collided, or the run vanished under a concurrent delete.
        _require_run(draft.thread_id, draft.run_id)
        raise AlreadyExists(
            "feedback by this user on this run"
            + (f" and message {draft.message_id}" if draft.message_id else "")
            + " already exists; use UpsertFeedback to change it"
        ) from exc
    return Feedback(**row)


def upsert_feedback(draft: FeedbackDraft) -> Feedback:
    """Creates or updates the feedback for the draft's key in one statement."""
    preserve = (Feedback.rating, Feedback.comment, Feedback.updated_at)
    target = (Feedback.thread_id, Feedback.run, Feedback.user_id, Feedback.message_id)
    if isinstance(database.obj, MySQLDatabase):
        target = None  # ON DUPLICATE KEY UPDATE takes no target.
    try:
        with database.atomic():
            _require_run(draft.thread_id, draft.run_id)
            Feedback.insert(_new_row(draft)).on_conflict(conflict_target=target, preserve=preserve).execute()
            return Feedback.get(_key(draft))
    except IntegrityError:
        # Only a foreign key can fail here: the run vanished under a concurrent delete.
        _require_run(draft.thread_id, draft.run_id)
        raise


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


def feedback_page(
    thread_id: str,
    run_id: str | None,
    user_id: str | None,
    after_id: int,
    limit: int,
) -> list[Feedback]:
    """Feedback on a thread (or one run of it), oldest first, after a row id.

    user_id None means every user's feedback.
    """
    where = (Feedback.thread_id == thread_id) & (Feedback.id > after_id)
    if run_id is not None:
        where &= Feedback.run == run_id
    if user_id is not None:
        where &= Feedback.user_id == user_id
    return list(Feedback.select().where(where).order_by(Feedback.id).limit(limit))


def stats_for_runs(thread_id: str, run_ids: Sequence[str]) -> dict[str, RunStats]:
    """Counts every user's feedback per run, in one grouped query."""
    unique_ids = list(dict.fromkeys(run_ids))
    positive = fn.SUM(Case(None, [(Feedback.rating == 1, 1)], 0))
    negative = fn.SUM(Case(None, [(Feedback.rating == -1, 1)], 0))
    rows = (
        Feedback.select(Feedback.run, fn.COUNT(Feedback.id), positive, negative)
        .where((Feedback.thread_id == thread_id) & (Feedback.run.in_(unique_ids)))
        .group_by(Feedback.run)
        .tuples()
    )
    counted = {run: RunStats(run, int(t), int(p), int(n)) for run, t, p, n in rows}
    return {run: counted.get(run, RunStats(run, 0, 0, 0)) for run in unique_ids}

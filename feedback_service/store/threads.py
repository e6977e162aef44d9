"""Threads and runs: registering them (with a run's labels), locking a
thread's row, and joining a run's labels to a query. Each function is one
unit of work; those marked `short` may run on SQLite's event loop."""

from collections.abc import Sequence
from typing import Any

from peewee import JOIN, Select

from feedback_service.core.clock import now_us
from feedback_service.core.errors import FailedPrecondition, NotFound, Unavailable
from feedback_service.core.records import Labels, RunRecord, ThreadRecord
from feedback_service.store.database import short
from feedback_service.store.models import Run, RunLabel, Thread, database
from feedback_service.store.prepared import Prepared

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


def lock_thread(thread_id: str) -> ThreadRecord | None:
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
            thread = lock_thread(thread_id)
            if thread is None:
                Thread.insert(
                    thread_id=thread_id, owner_user_id=owner_user_id, created_at=now_us()
                ).on_conflict_ignore().execute()
                thread = lock_thread(thread_id)
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
        if lock_thread(thread_id) is None:
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


_RUN_THREAD = Prepared(lambda run_id: Run.select(Run.thread).where(Run.run_id == run_id).limit(1))


def require_run(thread_id: str, run_id: str) -> None:
    row = database.execute_sql(*_RUN_THREAD(run_id)).fetchone()
    if row is None or row[0] != thread_id:
        raise NotFound(f"run {run_id} not found in thread {thread_id}")


# --- votes by run label -----------------------------------------------------------
#
# A vote's run carries labels (run_label: one row per (run_id, key)). A
# selection (`release=1, model=m`) joins one run_label row per label, each
# found through the primary key (run_id, key); grouping by a label's value
# LEFT JOINs that key's row, so that runs without it form a NULL group.


def join_run_labels(
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

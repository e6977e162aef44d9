"""Feedback writes in one round trip, for a database that runs data-modifying
CTEs and takes several statements in one message as one transaction
(PostgreSQL; dialects.Dialect.one_round_trip_writes).

A create is one statement: the request's claim (when it has a request id),
the feedback, its tags and its change, each a CTE over the one before. Run
outside a transaction it commits on its own, so the whole write costs one
round trip instead of BEGIN, three or four statements and COMMIT.

An upsert is two statements in one message, which the server runs as one
transaction: the upsert with its change, then the replacement of its tags.
The tags need a statement of their own: under READ COMMITTED, an upsert that
waited for a concurrent one to commit updates the row as that one left it,
but the other CTEs of its statement read the snapshot taken before the wait
and would miss the tags the other one wrote. The second statement takes a
fresh snapshot, after the first holds the row's lock.

The SQL is written out here once per shape (number of tags, thread rule or
not, request id or not); the values are bound by the driver.
"""

# ruff: noqa: S608 - the SQL is built only from this module's constants and counts; values are bound

import functools
from collections.abc import Sequence
from typing import Any

from feedback_service.core.records import ChangeKind, FeedbackRow, RequestClaim
from feedback_service.store.models import TAG_SEPARATOR, database

# The columns a write gives a new feedback, in FeedbackRow's order (all but the row id).
INSERTED = (
    *("feedback_id", "thread_id", "run_id", "user_id", "message_id"),
    *("rating", "comment", "created_at", "updated_at", "tags"),
)
_KEY = ("feedback_id", "thread_id", "run_id", "user_id", "message_id")
_CHANGE_COLUMNS = "xact_id, kind, feedback_id, thread_id, run_id, user_id, message_id, changed_at"
_TAG_COLUMNS = "feedback_row_id, tag, thread_id, run_id, message_id"
_XACT = "pg_current_xact_id()::text::bigint"


def _run_source(checked: bool) -> str:
    """FROM the run, only if it is in the thread and, `checked`, the thread
    is the user's or shared (domain/access.py's rule). Binds run_id,
    thread_id, then the user_id when checked."""
    if not checked:
        return "FROM run AS r WHERE r.run_id = %s AND r.thread_id = %s"
    return (
        "FROM run AS r JOIN thread AS t ON t.thread_id = r.thread_id"
        " WHERE r.run_id = %s AND r.thread_id = %s AND t.owner_user_id IN ('', %s)"
    )


def _source_params(row: FeedbackRow, user_id: str | None) -> list[Any]:
    return [row.run_id, row.thread_id] if user_id is None else [row.run_id, row.thread_id, user_id]


def _values(row: FeedbackRow) -> list[Any]:
    return [*(getattr(row, name) for name in INSERTED[:-1]), TAG_SEPARATOR.join(row.tags)]


def _tag_rows(count: int) -> str:
    return ", ".join(["(%s)"] * count)


@functools.cache
def _create_sql(tags: int, checked: bool, claiming: bool) -> str:
    source = _run_source(checked)
    marks = ", ".join(["%s"] * len(INSERTED))
    ctes = []
    if claiming:
        # Claimed only where the feedback will be inserted (the same test, in
        # the same snapshot), so a refused write leaves no claim behind.
        ctes.append(
            'claim AS (INSERT INTO idempotent_request ("key", user_id, fingerprint, response, created_at)'
            f" SELECT %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 {source})"
            " ON CONFLICT DO NOTHING RETURNING 1)"
        )
    gate = " AND EXISTS (SELECT 1 FROM claim)" if claiming else ""
    ctes.append(
        f"ins AS (INSERT INTO feedback ({', '.join(INSERTED)}) SELECT {marks} {source}{gate}"
        f" RETURNING id, {', '.join(_KEY)})"
    )
    if tags:
        ctes.append(
            f"tags AS (INSERT INTO feedback_tag ({_TAG_COLUMNS})"
            " SELECT ins.id, v.tag, ins.thread_id, ins.run_id, ins.message_id"
            f" FROM ins, (VALUES {_tag_rows(tags)}) AS v (tag))"
        )
    ctes.append(
        f"change AS (INSERT INTO feedback_change ({_CHANGE_COLUMNS})"
        f" SELECT {_XACT}, %s, {', '.join('ins.' + c for c in _KEY)}, %s FROM ins)"
    )
    return "WITH " + ", ".join(ctes) + " SELECT COUNT(*) FROM ins"


def create(row: FeedbackRow, user_id: str | None, request: RequestClaim | None, response: str) -> bool:
    """Inserts the new feedback with its tags and its CREATED change, and
    claims the request (recording `response`), in one statement; whether it
    was inserted. False: the run is not in the thread, or the thread not the
    user's, or the request was claimed before (the caller tells which)."""
    source = _source_params(row, user_id)
    params: list[Any] = []
    if request is not None:
        params += [request.key, request.user_id, request.fingerprint, response, row.created_at, *source]
    params += [*_values(row), *source, *row.tags, int(ChangeKind.CREATED), row.updated_at]
    sql = _create_sql(len(row.tags), user_id is not None, request is not None)
    return bool(database.execute_sql(sql, params).fetchone()[0])


@functools.cache
def _upsert_sql(tags: int, checked: bool) -> str:
    marks = ", ".join(["%s"] * len(INSERTED))
    upsert = (
        f"WITH up AS (INSERT INTO feedback ({', '.join(INSERTED)}) SELECT {marks} {_run_source(checked)}"
        " ON CONFLICT (thread_id, run_id, user_id, message_id) DO UPDATE SET rating = EXCLUDED.rating,"
        " comment = EXCLUDED.comment, updated_at = EXCLUDED.updated_at, tags = EXCLUDED.tags"
        f" RETURNING {', '.join(_KEY)}, updated_at)"
        f" INSERT INTO feedback_change ({_CHANGE_COLUMNS}) SELECT {_XACT},"
        f" CASE WHEN up.feedback_id = %s THEN {int(ChangeKind.CREATED)} ELSE {int(ChangeKind.UPDATED)} END,"
        f" {', '.join('up.' + c for c in _KEY)}, up.updated_at FROM up"
    )
    # The row this transaction just wrote (its change says so), whatever its
    # feedback_id; none when the upsert was refused.
    mine = (
        "mine AS (SELECT f.* FROM feedback AS f WHERE f.thread_id = %s AND f.run_id = %s"
        " AND f.user_id = %s AND f.message_id = %s AND EXISTS (SELECT 1 FROM feedback_change AS c"
        f" WHERE c.xact_id = {_XACT} AND c.feedback_id = f.feedback_id))"
    )
    # Tags not kept go; new ones come; kept ones stay (no conflict between the two).
    kept = f" AND tag NOT IN ({', '.join(['%s'] * tags)})" if tags else ""
    ctes = [mine, f"gone AS (DELETE FROM feedback_tag WHERE feedback_row_id IN (SELECT id FROM mine){kept})"]
    if tags:
        ctes.append(
            f"tags AS (INSERT INTO feedback_tag ({_TAG_COLUMNS})"
            " SELECT mine.id, v.tag, mine.thread_id, mine.run_id, mine.message_id"
            f" FROM mine, (VALUES {_tag_rows(tags)}) AS v (tag) ON CONFLICT DO NOTHING)"
        )
    columns = ", ".join(["id", *INSERTED])
    return f"{upsert}; WITH {', '.join(ctes)} SELECT {columns} FROM mine"


def upsert(row: FeedbackRow, user_id: str | None) -> Sequence[Any] | None:
    """Creates `row` or updates the feedback of its key (rating, comment,
    updated_at, tags), replaces its tags and records the change, in one
    round trip; the row as stored, or None when the run is not in the thread
    or the thread not the user's."""
    key = [row.thread_id, row.run_id, row.user_id, row.message_id]
    params = [*_values(row), *_source_params(row, user_id), row.feedback_id, *key, *row.tags, *row.tags]
    stored: Sequence[Any] | None = database.execute_sql(
        _upsert_sql(len(row.tags), user_id is not None), params
    ).fetchone()
    return stored

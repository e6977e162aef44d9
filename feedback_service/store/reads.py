"""Feedback reads: a page of a thread or run that a ListQuery keeps, a
caller's own feedback on some runs, and the export's pages. A list's SQL is
read top-down: `_conditions` (what a row must meet), then `_page_query` or
`_export_query` (where the rows come from, in which order)."""

import functools
import operator
from collections.abc import Sequence

from peewee import SQL, ColumnBase, Expression, Select, fn

from feedback_service.core.records import FeedbackRow, Labels, ListQuery
from feedback_service.store.database import short_when
from feedback_service.store.models import Feedback, FeedbackTag, RunLabel, database
from feedback_service.store.prepared import Prepared
from feedback_service.store.rows import FEEDBACK_COLUMNS, decode_row
from feedback_service.store.thread_rule import joined_with_owner, read_with_owner
from feedback_service.store.threads import join_run_labels


def _conditions(query: ListQuery) -> list[Expression]:
    """The conditions a feedback row must meet to be in the list, the tag
    aside: where it looks (thread, run, user), then what it keeps."""
    conditions = []
    if query.thread_id is not None:
        conditions.append(Feedback.thread_id == query.thread_id)
    if query.run_id is not None:
        conditions.append(Feedback.run == query.run_id)
    if query.user_id is not None:
        conditions.append(Feedback.user_id == query.user_id)
    if query.rating is not None:
        conditions.append(Feedback.rating == query.rating)
    if query.has_comment is not None:
        conditions.append((Feedback.comment != "") == query.has_comment)
    if query.created_after is not None:
        conditions.append(Feedback.created_at >= query.created_after)
    if query.created_before is not None:
        conditions.append(Feedback.created_at < query.created_before)
    return conditions


def _has_tag(tag: str) -> ColumnBase:
    """The row carries the tag: the primary key of feedback_tag answers for each row."""
    carrying = FeedbackTag.select(SQL("1")).where(
        (FeedbackTag.feedback_row == Feedback.id) & (FeedbackTag.tag == tag)
    )
    return fn.EXISTS(carrying)


def _page_query(query: ListQuery, after_id: int, limit: int) -> Select:
    """The next `limit` feedback after a row id that the query keeps, through
    the index that bounds it to the run or thread (and the user, when one):
    (thread_id, run_id, id), (thread_id, run_id, user_id, message_id) or
    (thread_id, user_id, id), the filters checked on the rows it yields. With
    a tag and neither run nor user, the rows come instead from feedback_tag's
    (thread_id, tag, feedback_row_id): only that tag's, in order."""
    where = functools.reduce(operator.and_, _conditions(query))
    if query.tag is not None and query.run_id is None and query.user_id is None:
        return (
            FeedbackTag.select(*FEEDBACK_COLUMNS)
            .join(Feedback, on=FeedbackTag.feedback_row == Feedback.id)
            .where(
                (FeedbackTag.thread_id == query.thread_id)
                & (FeedbackTag.tag == query.tag)
                & (FeedbackTag.feedback_row > after_id)
                & where
            )
            .order_by(FeedbackTag.feedback_row)
            .limit(limit)
        )
    if query.tag is not None:
        where &= _has_tag(query.tag)
    where &= Feedback.id > after_id
    return Feedback.select(*FEEDBACK_COLUMNS).where(where).order_by(Feedback.id).limit(limit)


# A page of up to this many rows, unfiltered, of one run or one user, reads
# at most one row more through its index (see _short_page).
SHORT_PAGE_ROWS = 101


def _short_page(query: ListQuery, after_id: int, limit: int, with_owner: bool) -> bool:
    """Whether a page is short whatever the table holds: without a filter
    (the user, which an index leads with, aside), a run's page reads
    (thread_id, run_id, id) and a user's (thread_id, user_id, id) in order,
    and stop after `limit` rows (a user's page of a run passes over that
    user's other feedback on the thread, at most). Every user's page of a
    whole thread, and a filtered page, may pass over many rows."""
    narrow = query.run_id is not None or query.user_id is not None
    return query.filters_nothing() and limit <= SHORT_PAGE_ROWS and narrow


_FEEDBACK_FIELDS = list(FeedbackRow._fields)
_PAGE = Prepared(_page_query)
_PAGE_WITH_OWNER = Prepared(
    lambda query, after_id, limit: joined_with_owner(
        query.thread_id, _page_query(query, after_id, limit), _FEEDBACK_FIELDS, "id"
    )
)


@short_when(_short_page)
def feedback_page(
    query: ListQuery, after_id: int, limit: int, with_owner: bool
) -> tuple[str | None, list[FeedbackRow]]:
    """Feedback on a thread (or one run of it) that the query keeps, oldest
    first, after a row id, and the thread's owner when `with_owner` (else
    None)."""
    assert query.thread_id is not None, "a list names its thread"
    owner, rows = read_with_owner(
        query.thread_id,
        with_owner,
        lambda: _PAGE(query, after_id, limit),
        lambda: _PAGE_WITH_OWNER(query, after_id, limit),
    )
    return owner, [decode_row(row) for row in rows]


def _caller_feedback_query(thread_id: str, user_id: str, run_ids: Sequence[str], limit: int) -> Select:
    return (
        Feedback.select(*FEEDBACK_COLUMNS)
        .where((Feedback.thread_id == thread_id) & (Feedback.user_id == user_id) & Feedback.run.in_(run_ids))
        .order_by(Feedback.id)
        .limit(limit)
    )


_CALLER_FEEDBACK = Prepared(_caller_feedback_query)
_CALLER_FEEDBACK_WITH_OWNER = Prepared(
    lambda thread_id, *args: joined_with_owner(
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
    owner, rows = read_with_owner(
        thread_id, with_owner, lambda: _CALLER_FEEDBACK(*args), lambda: _CALLER_FEEDBACK_WITH_OWNER(*args)
    )
    return owner, [decode_row(row) for row in rows]


# --- export -------------------------------------------------------------------------


def _export_query(query: ListQuery, after_id: int, limit: int) -> Select:
    """The next `limit` feedback after a row id that the query keeps, in row
    id order (the primary key's), on the runs carrying every label of its
    selection."""
    keys = [key for key, _ in query.run_labels]
    values = [value for _, value in query.run_labels]
    selected = join_run_labels(Feedback.select(*FEEDBACK_COLUMNS), Feedback.run, None, None, keys, values)
    where = functools.reduce(operator.and_, _conditions(query), Feedback.id > after_id)
    if query.tag is not None:
        where &= _has_tag(query.tag)
    return selected.where(where).order_by(Feedback.id).limit(limit)


_EXPORT = Prepared(_export_query)
_LABELS_OF_RUNS = Prepared(
    lambda run_ids: RunLabel.select(RunLabel.run, RunLabel.key, RunLabel.value).where(
        RunLabel.run.in_(run_ids)
    )
)


def export_page(query: ListQuery, after_id: int, limit: int) -> tuple[list[FeedbackRow], dict[str, Labels]]:
    """A page of the export: at most `limit` feedback after a row id that the
    query keeps, oldest first, and the labels of their runs (runs without
    labels left out). Two statements, no transaction kept."""
    statement = _EXPORT(query, after_id, limit)
    rows = [decode_row(row) for row in database.execute_sql(*statement).fetchall()]
    labels: dict[str, Labels] = {}
    run_ids = list(dict.fromkeys(row.run_id for row in rows))
    if run_ids:
        for run_id, key, value in database.execute_sql(*_LABELS_OF_RUNS(run_ids)).fetchall():
            labels.setdefault(run_id, {})[key] = value
    return rows, labels

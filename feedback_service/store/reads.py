"""Feedback reads: a page of a thread or run that a filter keeps, a
caller's own feedback on some runs, and the export's pages."""

from collections.abc import Sequence
from typing import Any

from peewee import SQL, Case, Select, fn

from feedback_service.core.records import FeedbackRow, Labels, ListFilter
from feedback_service.store.database import short_when
from feedback_service.store.models import Feedback, FeedbackTag, RunLabel, database
from feedback_service.store.prepared import Prepared
from feedback_service.store.rows import FEEDBACK_COLUMNS, decode_row
from feedback_service.store.thread_rule import joined_with_owner, read_with_owner
from feedback_service.store.threads import join_run_labels


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
    lambda thread_id, *args: joined_with_owner(
        thread_id, _page_query(thread_id, *args), _FEEDBACK_FIELDS, "id"
    )
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
    owner, rows = read_with_owner(
        thread_id, with_owner, lambda: _PAGE(*args), lambda: _PAGE_WITH_OWNER(*args)
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
    query = join_run_labels(Feedback.select(*FEEDBACK_COLUMNS), Feedback.run, None, None, keys, values)
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
    rows = [decode_row(row) for row in database.execute_sql(*statement).fetchall()]
    labels: dict[str, Labels] = {}
    run_ids = list(dict.fromkeys(row.run_id for row in rows))
    if run_ids:
        for run_id, key, value in database.execute_sql(*_LABELS_OF_RUNS(run_ids)).fetchall():
            labels.setdefault(run_id, {})[key] = value
    return rows, labels

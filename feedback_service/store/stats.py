"""Counts: votes per run and per message, a thread's votes, votes over
time, and votes by run label; each in one statement, with the thread's
owner where the caller asks for it."""

import functools
from collections.abc import Sequence
from typing import Any

from peewee import SQL, Case, ColumnBase, CompoundSelectQuery, NodeList, Select, Value, fn

from feedback_service.core.records import (
    BucketCount,
    Labels,
    MessageStats,
    RunStats,
    TagCount,
    ThreadStats,
    VoteCounts,
)
from feedback_service.store.database import scan, short_when
from feedback_service.store.models import Feedback, FeedbackTag, RunLabel, database
from feedback_service.store.prepared import Prepared
from feedback_service.store.thread_rule import joined_with_owner, read_with_owner
from feedback_service.store.threads import join_run_labels

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
        lambda thread_id, run_ids, by_message=by_message: joined_with_owner(
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
    owner, rows = read_with_owner(
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
    lambda thread_id: joined_with_owner(thread_id, _thread_stats_query(thread_id), _THREAD_STATS_FIELDS)
)


@scan
def thread_stats(thread_id: str, with_owner: bool) -> tuple[str | None, ThreadStats]:
    """The votes on every run of a thread, their tags and the runs they are
    on, in one statement; and the thread's owner when `with_owner`."""
    owner, rows = read_with_owner(
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
            lambda thread_id, start, end: joined_with_owner(
                thread_id, _time_series_query(thread_id, start, end, width), _SERIES_FIELDS
            )
        )
    return _SERIES[width], _SERIES_WITH_OWNER[width]


@scan
def time_series(
    thread_id: str | None, start: int, end: int, width: int, with_owner: bool
) -> tuple[str | None, list[BucketCount]]:
    """The votes created in [start, end) on a thread (None: on every thread),
    per bucket of `width` microseconds, non-empty buckets only, in one
    statement; and the thread's owner when `with_owner`."""
    plain, with_thread_owner = _series_statements(width)
    owner, rows = read_with_owner(
        thread_id or "",  # with an owner only when there is a thread
        with_owner,
        lambda: plain(thread_id, start, end),
        lambda: with_thread_owner(thread_id, start, end),
    )
    return owner, [BucketCount(int(b), int(p or 0), int(n or 0)) for b, p, n in rows]


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
    counts = join_run_labels(counts, Feedback.run, label_key, group, keys, values)
    counts = counts.where(_votes_where(thread_id, start, end))
    tags: Select = FeedbackTag.select(
        Value(TAGS), label_value, FeedbackTag.tag, fn.COUNT(SQL("*")), Value(0), Value(0)
    ).join(Feedback, on=FeedbackTag.feedback_row == Feedback.id)
    tags = join_run_labels(tags, FeedbackTag.run_id, label_key, group, keys, values)
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
    lambda thread_id, label_key, keys, values, start, end: joined_with_owner(
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
    owner, rows = read_with_owner(
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


@scan
def votes_by_label(
    label_key: str, selection: Labels, thread_id: str | None, start: int | None, end: int | None
) -> tuple[str | None, dict[str, VoteCounts]]:
    """The votes on the runs carrying every label of `selection` (on one
    thread, or every thread when None; first given in [start, end), either
    bound None for none), per value of `label_key` ('' for runs without it),
    with their tags, in one statement; and the thread's owner when one is
    named (None otherwise)."""
    return _label_votes(label_key, selection, thread_id, start, end)


@scan
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

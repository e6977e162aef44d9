"""The records the domain works with and the store returns: plain values,
no gRPC and no SQL. A leaf module: it imports nothing of ours."""

from dataclasses import dataclass
from typing import NamedTuple

# Every id (thread, run, message, feedback, user) is at most this long: the
# validation pattern, the database columns and the proto comments agree on it.
ID_MAX_LENGTH = 128
# Tags: names of at most TAG_MAX_LENGTH characters, at most TAGS_MAX per feedback.
TAG_MAX_LENGTH = 32
TAGS_MAX = 6


@dataclass(frozen=True, slots=True)
class FeedbackDraft:
    """The caller-supplied part of a feedback record, already validated."""

    thread_id: str
    run_id: str
    user_id: str
    message_id: str
    rating: int
    comment: str
    tags: tuple[str, ...] = ()


class FeedbackRow(NamedTuple):
    """One feedback record as stored; `id` orders rows and keys pagination."""

    id: int
    feedback_id: str
    thread_id: str
    run_id: str
    user_id: str
    message_id: str
    rating: int
    comment: str
    created_at: int  # microseconds since the Unix epoch, UTC
    updated_at: int
    tags: tuple[str, ...]  # in the order given


class ListFilter(NamedTuple):
    """What a list keeps, already validated; None (or '') keeps everything."""

    rating: int | None = None
    has_comment: bool | None = None
    tag: str = ""
    created_after: int | None = None  # microseconds, inclusive
    created_before: int | None = None  # microseconds, exclusive
    user_id: str = ""  # a service's filter on one user


class TagCount(NamedTuple):
    tag: str
    count: int


class MessageStats(NamedTuple):
    """Every user's feedback on one message of a run, counted."""

    message_id: str
    total: int
    positive: int
    negative: int


@dataclass(frozen=True, slots=True)
class RunStats:
    """The votes on one run (run-level feedback, one per user), their tags
    sorted by tag, and, when asked for, the message-level feedback per message."""

    run_id: str
    total: int
    positive: int
    negative: int
    tags: tuple[TagCount, ...] = ()
    messages: tuple[MessageStats, ...] = ()


@dataclass(frozen=True, slots=True)
class ThreadStats:
    """The votes on every run of a thread, their tags, and the runs voted on."""

    thread_id: str
    total: int
    positive: int
    negative: int
    tags: tuple[TagCount, ...]
    runs_with_feedback: int


@dataclass(frozen=True, slots=True)
class CallerRunFeedback:
    """One user's feedback on one run: run-level (None if none), and per message."""

    run_id: str
    run_feedback: FeedbackRow | None
    message_feedback: list[FeedbackRow]


class BucketCount(NamedTuple):
    """The votes first given in one time bucket."""

    start: int  # microseconds, UTC
    positive: int
    negative: int


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    """A registered thread; owner_user_id is '' for a shared thread."""

    thread_id: str
    owner_user_id: str
    created_at: int


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A registered run of a thread."""

    run_id: str
    thread_id: str
    created_at: int

"""The records the domain works with and the store returns: plain values,
no gRPC and no SQL. A leaf module: it imports nothing of ours."""

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple


def may_use_thread(owner: str, user_id: str | None) -> bool:
    """The thread rule: a thread registered with this owner ('' when shared)
    may be used by this user. The domain applies it (domain/access.py), and
    the store's statements apply the same test in SQL."""
    return owner in ("", user_id)


# Every id (thread, run, message, feedback, user) is at most this long: the
# validation pattern, the database columns and the proto comments agree on it.
ID_MAX_LENGTH = 128
# Tags: names of at most TAG_MAX_LENGTH characters, at most TAGS_MAX per feedback.
TAG_MAX_LENGTH = 32
TAGS_MAX = 6
# Run labels: at most LABELS_MAX per run, keys of at most LABEL_KEY_MAX_LENGTH
# characters, values of at most LABEL_VALUE_MAX_LENGTH.
LABELS_MAX = 8
LABEL_KEY_MAX_LENGTH = 32
LABEL_VALUE_MAX_LENGTH = 128

# A run's labels, or a selection of runs by labels: key -> value.
Labels = dict[str, str]


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

    id: int | None  # None in the row CreateFeedback returns: the database assigns it
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ListQuery:
    """What a list keeps and where it looks, checked, with the visibility
    rule applied: the domain builds it once from the request, and the store
    turns it into SQL (store/reads.py). A field left at its default keeps
    everything; the page-token scope encodes the fields that differ from
    their defaults (domain/pagination.py), so a field added later with a
    default that keeps everything leaves live tokens valid."""

    thread_id: str | None  # None: every thread (ExportFeedback only)
    run_id: str | None = None  # None: every run of the thread
    user_id: str | None = None  # whose feedback; None: everyone's
    rating: int | None = None
    has_comment: bool | None = None
    tag: str | None = None
    created_after: int | None = None  # microseconds, inclusive
    created_before: int | None = None  # microseconds, exclusive
    # ExportFeedback's selection of runs: (key, value) pairs, sorted by key.
    run_labels: tuple[tuple[str, str], ...] = ()

    def filters_nothing(self) -> bool:
        """Whether only where it looks (thread, run, user) narrows the list."""
        return (self.rating, self.has_comment, self.tag, self.created_after, self.created_before) == (
            (None,) * 5
        ) and not self.run_labels


class TagCount(NamedTuple):
    tag: str
    count: int  # type: ignore[assignment]  # hides tuple.count(), which nothing here calls


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
    """A registered run of a thread, with its labels."""

    run_id: str
    thread_id: str
    created_at: int
    labels: tuple[tuple[str, str], ...] = ()  # (key, value), sorted by key


class VoteCounts(NamedTuple):
    """The votes on a set of runs, and the votes carrying each tag."""

    votes: int
    positive: int
    negative: int
    tags: tuple[TagCount, ...] = ()  # sorted by tag


# --- the change log and request ids --------------------------------------------


class ChangeKind(IntEnum):
    """What a change did to a feedback (the numbers of feedback.v1.ChangeKind)."""

    CREATED = 1
    UPDATED = 2
    DELETED = 3


# A change's position in the change log: (transaction, sequence), compared as
# a pair. The transaction is 0 where the log is ordered by its head.
Position = tuple[int, int]


class ChangeRow(NamedTuple):
    """One change of the change log, with the feedback as it is when read.

    `position` orders the log: no change that commits later takes a lower
    position than one a reader has seen (store/changes.py). The
    feedback's rating, comment and timestamps are None (and its tags empty)
    when it no longer exists (a DELETED change, or an older change of
    feedback deleted since).
    """

    position: Position
    kind: int
    changed_at: int  # microseconds since the Unix epoch, UTC
    feedback_id: str
    thread_id: str
    run_id: str
    user_id: str
    message_id: str
    rating: int | None
    comment: str | None
    created_at: int | None
    updated_at: int | None
    tags: tuple[str, ...]  # () once the feedback no longer exists


@dataclass(frozen=True, slots=True)
class ChangeLogState:
    """The change log as one read saw it: its id (which cursors carry), the
    position up to which that read saw every change (the newest change, or
    where changes are ordered by transaction, the horizon's start), and the
    newest position pruned so far."""

    log_id: str
    last_position: Position
    pruned_through: Position


@dataclass(frozen=True, slots=True)
class RequestClaim:
    """A request sent with a request_id (AIP-155): `key` names the caller's
    request id, `fingerprint` what was asked, `user_id` whose request it is
    (erasing a user forgets their requests)."""

    key: str
    fingerprint: str
    user_id: str

"""The records the domain works with and the store returns: plain values,
no gRPC and no SQL. A leaf module: it imports nothing of ours."""

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

# Every id (thread, run, message, feedback, user) is at most this long: the
# validation pattern, the database columns and the proto comments agree on it.
ID_MAX_LENGTH = 128


@dataclass(frozen=True, slots=True)
class FeedbackDraft:
    """The caller-supplied part of a feedback record, already validated."""

    thread_id: str
    run_id: str
    user_id: str
    message_id: str
    rating: int
    comment: str


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


@dataclass(frozen=True, slots=True)
class RunStats:
    """Counts of every user's feedback on one run."""

    run_id: str
    total: int
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


# --- the change log and request ids --------------------------------------------


class ChangeKind(IntEnum):
    """What a change did to a feedback (the numbers of feedback.v1.ChangeKind)."""

    CREATED = 1
    UPDATED = 2
    DELETED = 3


class ChangeRow(NamedTuple):
    """One change of the change log, with the feedback as it is when read.

    `position` orders the log: positions are dense and in commit order. The
    feedback's rating, comment and timestamps are None when it no longer
    exists (a DELETED change, or an older change of feedback deleted since).
    """

    position: int
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


@dataclass(frozen=True, slots=True)
class ChangeLogState:
    """The change log as one read saw it: its id (which cursors carry), the
    position of its newest change, and the newest position pruned so far."""

    log_id: str
    last_position: int
    pruned_through: int


@dataclass(frozen=True, slots=True)
class RequestClaim:
    """A request sent with a request_id (AIP-155): `key` names the caller's
    request id, `fingerprint` what was asked, `user_id` whose request it is
    (erasing a user forgets their requests)."""

    key: str
    fingerprint: str
    user_id: str

"""The change feed: the feedback changes after a cursor, in commit order,
read from the change log (store/changes.py explains why its positions never
skip a change that commits late), and the retention that prunes the log.

A cursor is opaque to callers: base64url of "<sequence>.<log id>" for a
position (0, sequence), as every cursor was before positions had a
transaction, else "<transaction>.<sequence>.<log id>". The log id is random
per database, so a cursor from another database is refused rather than read
as a position of this one.
"""

import asyncio
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from feedback_service.core.clock import now_us
from feedback_service.core.errors import FailedPrecondition, FieldViolation, InvalidArgument
from feedback_service.core.records import ChangeLogState, ChangeRow, Position
from feedback_service.domain.pagination import pack_token, unpack_numbers
from feedback_service.domain.validation import Checker
from feedback_service.store import changes
from feedback_service.store.database import Store

log = logging.getLogger(__name__)

# Changes read per query while a stream catches up.
PAGE_SIZE = 500
# Changes pruned per transaction, so that pruning a long backlog never holds
# one long transaction.
PRUNE_BATCH = 10_000
NOT_A_CURSOR = "is not a cursor of this service's change log; start with an empty cursor"


@dataclass(frozen=True, slots=True)
class Change:
    """A change as a stream sends it: its cursor, and the change itself."""

    cursor: str
    row: ChangeRow


def encode_cursor(position: Position, log_id: str) -> str:
    xact, seq = position
    return pack_token(seq if xact == 0 else position, log_id)


def decode_cursor(cursor: str) -> tuple[Position, str] | None:
    """(position, log id); None for the empty cursor (the start of the log)."""
    if not cursor:
        return None
    unpacked = unpack_numbers(cursor, 2)
    if unpacked is None:
        raise InvalidArgument([FieldViolation("after_cursor", NOT_A_CURSOR)])
    numbers, log_id = unpacked
    position = (0, numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
    return position, log_id


def _expired(retention: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"the changes after this cursor were pruned (changes are kept for {retention}): resync by "
        "listing the feedback as a service (ListThreadFeedback), then stream again from an empty "
        "after_cursor"
    )


class ChangeFeed:
    """StreamFeedbackChanges, and the pruning of the change log."""

    def __init__(self, store: Store, *, poll_interval_s: float, retention_s: float) -> None:
        self._store = store
        self._poll_interval_s = poll_interval_s
        self._retention_s = retention_s

    async def stream(
        self, *, after_cursor: str, follow: bool, thread_id: str, deadline: float | None
    ) -> AsyncGenerator[list[Change], None]:
        """Batches of changes after the cursor, oldest first; with `follow`,
        then the new ones as they commit, polling the database (whichever
        replica wrote them), until the caller stops reading."""
        check = Checker()
        check.id("thread_id", thread_id, required=False)
        check.done()
        start = decode_cursor(after_cursor)
        position: Position = (0, 0) if start is None else start[0]
        only_thread = thread_id or None
        first = True
        while True:
            state, rows = await self._store.read(
                changes.change_page, position, only_thread, PAGE_SIZE, deadline=deadline
            )
            if first:  # the empty cursor starts after the newest change pruned (none is left below it)
                position = self._start(start, state)
                first = False
            if position < state.pruned_through:
                raise _expired(_duration(self._retention_s))
            if rows:
                yield [Change(encode_cursor(row.position, state.log_id), row) for row in rows]
                position = rows[-1].position
            if len(rows) < PAGE_SIZE:
                # Every change up to last_position was in this snapshot: none of
                # them is for us (with a thread filter) past the page's end.
                position = max(position, state.last_position)
                if not follow:
                    return
                await asyncio.sleep(self._poll_interval_s)

    @staticmethod
    def _start(start: tuple[Position, str] | None, state: ChangeLogState) -> Position:
        """The position to stream after: the cursor's, checked against the log
        it claims to come from, or the oldest kept for the empty cursor."""
        if start is None:
            return state.pruned_through
        position, log_id = start
        if log_id != state.log_id or position > state.last_position:
            raise InvalidArgument([FieldViolation("after_cursor", NOT_A_CURSOR)])
        return position

    @property
    def retention(self) -> str:
        """The retention, as 7d, 12h, 30m or 45s."""
        return _duration(self._retention_s)

    async def prune(self) -> int:
        """Deletes changes older than the retention; returns how many."""
        cutoff = now_us() - int(self._retention_s * 1_000_000)
        pruned = 0
        while True:
            deleted = await self._store.write(changes.prune_changes, cutoff, PRUNE_BATCH)
            pruned += deleted
            if deleted < PRUNE_BATCH:
                return pruned


def _duration(seconds: float) -> str:
    """7d, 12h, 30m or 45s: the largest unit that divides it, else seconds."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"

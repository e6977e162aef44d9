"""The feedback operations: validate the request once, apply the thread rule
the caller's Access names, then run one unit of work in the store.

`deadline` is the caller's, as a time.monotonic() value (None: no deadline);
work still queued when it passes is dropped.
"""

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from feedback_service.domain.access import Access
from feedback_service.domain.errors import NotFound
from feedback_service.domain.pagination import decode_page_token, encode_page_token, within_budget
from feedback_service.domain.records import FeedbackDraft, FeedbackRow, RequestClaim, RunStats
from feedback_service.domain.validation import Checker
from feedback_service.store import queries
from feedback_service.store.database import Store

FEEDBACK_WRITTEN = Counter(
    "feedback_written_total", "Feedback created or upserted, by RPC and rating", ["method", "rating"]
)
RATING_LABELS = {1: "positive", -1: "negative"}
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Page:
    feedback: list[FeedbackRow]
    next_page_token: str


class FeedbackRules:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def create(
        self,
        access: Access,
        *,
        thread_id: str,
        run_id: str,
        rating: int,
        comment: str,
        message_id: str,
        request_id: str = "",
        deadline: float | None,
    ) -> FeedbackRow:
        """New feedback; ALREADY_EXISTS if the caller already rated that run (or
        message). A repeat of a request_id returns the first call's feedback."""
        check = Checker()
        request_id = check.request_id(request_id)
        draft = _draft(access, thread_id, run_id, rating, comment, message_id, check)
        fields = (thread_id, run_id, message_id, rating, comment)
        request = _request(access, request_id, "CreateFeedback", *fields)
        return await self._write(access, draft, queries.create_feedback, "CreateFeedback", deadline, request)

    async def upsert(
        self,
        access: Access,
        *,
        thread_id: str,
        run_id: str,
        rating: int,
        comment: str,
        message_id: str,
        deadline: float | None,
    ) -> FeedbackRow:
        """Creates or replaces the caller's feedback on that run (or message)."""
        draft = _draft(access, thread_id, run_id, rating, comment, message_id)
        return await self._write(access, draft, queries.upsert_feedback, "UpsertFeedback", deadline)

    async def _write(
        self,
        access: Access,
        draft: FeedbackDraft,
        query: Callable[..., FeedbackRow],
        method: str,
        deadline: float | None,
        *request: RequestClaim | None,
    ) -> FeedbackRow:
        row = await self._store.write(query, draft, access.checks_thread, *request, deadline=deadline)
        FEEDBACK_WRITTEN.labels(method, RATING_LABELS[row.rating]).inc()
        return row

    async def list_run(
        self,
        access: Access,
        *,
        thread_id: str,
        run_id: str,
        page_size: int,
        page_token: str,
        deadline: float | None,
    ) -> Page:
        """One page of feedback on a run, oldest first."""
        check = Checker()
        check.id("thread_id", thread_id)
        check.id("run_id", run_id)
        size = check.page_size(page_size)
        check.done()
        return await self._page(access, thread_id, run_id, size, page_token, deadline)

    async def list_thread(
        self, access: Access, *, thread_id: str, page_size: int, page_token: str, deadline: float | None
    ) -> Page:
        """One page of feedback on every run of a thread, oldest first."""
        check = Checker()
        check.id("thread_id", thread_id)
        size = check.page_size(page_size)
        check.done()
        return await self._page(access, thread_id, None, size, page_token, deadline)

    async def _page(
        self,
        access: Access,
        thread_id: str,
        run_id: str | None,
        size: int,
        token: str,
        deadline: float | None,
    ) -> Page:
        # A user sees only their own feedback; a service acting as itself sees all.
        viewer = access.user_id
        # Newlines cannot occur in ids, so distinct queries never share a scope.
        scope = "\n".join((thread_id, run_id or "", viewer or ""))
        after_id = decode_page_token(scope, token)
        owner, rows = await self._store.read(
            queries.feedback_page,
            thread_id,
            run_id,
            viewer,
            after_id,
            size + 1,
            access.checks_thread,
            deadline=deadline,
        )
        access.check_thread(thread_id, owner)
        # At most `size` rows, and fewer when they would pass the byte budget.
        fitting = within_budget([row.comment for row in rows[:size]])
        if fitting == len(rows):
            return Page(rows, "")
        rows = rows[:fitting]
        return Page(rows, encode_page_token(scope, rows[-1].id))

    async def stats_for_run(
        self, access: Access, *, thread_id: str, run_id: str, deadline: float | None
    ) -> RunStats:
        """Every user's feedback on one run, counted."""
        check = Checker()
        check.id("thread_id", thread_id)
        check.id("run_id", run_id)
        check.done()
        (stats,) = await self._stats(access, thread_id, [run_id], deadline)
        return stats

    async def stats_for_runs(
        self, access: Access, *, thread_id: str, run_ids: list[str], deadline: float | None
    ) -> list[RunStats]:
        """Every user's feedback on each of up to 100 runs, in request order."""
        check = Checker()
        check.id("thread_id", thread_id)
        check.run_ids(run_ids)
        check.done()
        return await self._stats(access, thread_id, run_ids, deadline)

    async def _stats(
        self, access: Access, thread_id: str, run_ids: list[str], deadline: float | None
    ) -> list[RunStats]:
        owner, counted = await self._store.read(
            queries.stats_for_runs, thread_id, run_ids, access.checks_thread, deadline=deadline
        )
        access.check_thread(thread_id, owner)
        return [counted[run_id] for run_id in run_ids]

    async def delete(
        self,
        access: Access,
        *,
        thread_id: str,
        run_id: str,
        feedback_id: str,
        request_id: str = "",
        deadline: float | None,
    ) -> None:
        """Deletes one of the caller's feedback; NOT_FOUND unless it is theirs,
        there. A repeat of a request_id that deleted it succeeds again."""
        check = Checker()
        check.id("thread_id", thread_id)
        check.id("run_id", run_id)
        check.id("feedback_id", feedback_id)
        request_id = check.request_id(request_id)
        check.done()
        user = access.acting_user()
        request = _request(access, request_id, "DeleteFeedback", thread_id, run_id, feedback_id)
        deleted = await self._store.write(
            queries.delete_feedback,
            thread_id,
            run_id,
            feedback_id,
            user,
            access.checks_thread,
            request,
            deadline=deadline,
        )
        if not deleted:
            raise NotFound(f"feedback {feedback_id} not found in run {run_id}")

    async def delete_run(
        self, access: Access, *, thread_id: str, run_id: str, request_id: str = "", deadline: float | None
    ) -> None:
        """Deletes all of the caller's feedback on a run; NOT_FOUND if there was
        none. A repeat of a request_id that deleted some succeeds again."""
        check = Checker()
        check.id("thread_id", thread_id)
        check.id("run_id", run_id)
        request_id = check.request_id(request_id)
        check.done()
        user = access.acting_user()
        request = _request(access, request_id, "DeleteRunFeedback", thread_id, run_id)
        deleted = await self._store.write(
            queries.delete_run_feedback,
            thread_id,
            run_id,
            user,
            access.checks_thread,
            request,
            deadline=deadline,
        )
        if not deleted:
            raise NotFound(f"no feedback of yours found on run {run_id}")

    async def erase_user(self, access: Access, *, user_id: str, deadline: float | None) -> int:
        """Erases every feedback of a user, everywhere, in one transaction (a
        privacy request); returns how many there were. Logged with the calling
        service and the user id: the record that the request was carried out."""
        check = Checker()
        check.id("user_id", user_id)
        check.done()
        erased = await self._store.write(queries.delete_user_feedback, user_id, deadline=deadline)
        log.info("erased %d feedback of user %s for service %s", erased, user_id, access.caller)
        return erased


def _draft(
    access: Access,
    thread_id: str,
    run_id: str,
    rating: int,
    comment: str,
    message_id: str,
    check: Checker | None = None,
) -> FeedbackDraft:
    check = check or Checker()
    check.id("thread_id", thread_id)
    check.id("run_id", run_id)
    check.rating(rating)
    check.comment(comment)
    check.id("message_id", message_id, required=False)
    check.done()
    return FeedbackDraft(thread_id, run_id, access.acting_user(), message_id, rating, comment)


def _request(access: Access, request_id: str, method: str, *fields: object) -> RequestClaim | None:
    """The claim of a request sent with a (validated) request_id; None without
    one. A request id is the caller's own: the same id from another caller is
    another request. The fingerprint covers the method and every field the
    request's outcome depends on, so reusing an id for anything else is caught."""
    if not request_id:
        return None
    key = hashlib.sha256(f"{access.caller}\n{request_id}".encode()).hexdigest()
    fingerprint = hashlib.sha256(json.dumps([method, *fields]).encode()).hexdigest()
    return RequestClaim(key, fingerprint, access.acting_user())

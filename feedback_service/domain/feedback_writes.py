"""Feedback writes: create, upsert, delete one, delete a run's, and the
erasure of a user. Each validates the request once, applies the thread
rule the caller's Access names, then runs one unit of work in the store."""

import logging
from collections.abc import Callable, Sequence

from feedback_service.core.errors import NotFound
from feedback_service.core.records import FeedbackDraft, FeedbackRow, RequestClaim
from feedback_service.domain.access import Access
from feedback_service.domain.request_ids import request_claim
from feedback_service.domain.validation import Checker
from feedback_service.store import deletes, writes
from feedback_service.store.database import Store

# Erasures log under the name the operations handbook gives (operations.md).
log = logging.getLogger("feedback_service.domain.feedback")


class FeedbackWrites:
    """The write operations of FeedbackRules."""

    # Set by FeedbackRules.__init__: the store, and the vocabulary of tags in
    # its configured order.
    _store: Store
    _tags: tuple[str, ...]

    async def create(
        self,
        access: Access,
        *,
        thread_id: str,
        run_id: str,
        rating: int,
        comment: str,
        message_id: str,
        tags: Sequence[str],
        request_id: str = "",
        deadline: float | None,
    ) -> FeedbackRow:
        """New feedback; ALREADY_EXISTS if the caller already rated that run (or
        message). A repeat of a request_id returns the first call's feedback."""
        check = Checker()
        request_id = check.request_id(request_id)
        draft = self._draft(access, thread_id, run_id, rating, comment, message_id, tags, check)
        fields = (thread_id, run_id, message_id, rating, comment, list(draft.tags))
        request = request_claim(access, request_id, "CreateFeedback", *fields)
        return await self._write(access, draft, writes.create_feedback, deadline, request)

    async def upsert(
        self,
        access: Access,
        *,
        thread_id: str,
        run_id: str,
        rating: int,
        comment: str,
        message_id: str,
        tags: Sequence[str],
        deadline: float | None,
    ) -> FeedbackRow:
        """Creates or replaces the caller's feedback on that run (or message), tags included."""
        draft = self._draft(access, thread_id, run_id, rating, comment, message_id, tags)
        return await self._write(access, draft, writes.upsert_feedback, deadline)

    async def _write(
        self,
        access: Access,
        draft: FeedbackDraft,
        query: Callable[..., FeedbackRow],
        deadline: float | None,
        *request: RequestClaim | None,
    ) -> FeedbackRow:
        return await self._store.write(query, draft, access.checks_thread, *request, deadline=deadline)

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
        request = request_claim(access, request_id, "DeleteFeedback", thread_id, run_id, feedback_id)
        deleted = await self._store.write(
            deletes.delete_feedback,
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
        request = request_claim(access, request_id, "DeleteRunFeedback", thread_id, run_id)
        deleted = await self._store.write(
            deletes.delete_run_feedback,
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
        erased = await self._store.write(deletes.delete_user_feedback, user_id, deadline=deadline)
        log.info("erased %d feedback of user %s for service %s", erased, user_id, access.caller)
        return erased

    def _draft(
        self,
        access: Access,
        thread_id: str,
        run_id: str,
        rating: int,
        comment: str,
        message_id: str,
        tags: Sequence[str],
        check: Checker | None = None,
    ) -> FeedbackDraft:
        check = check or Checker()
        check.id("thread_id", thread_id)
        check.id("run_id", run_id)
        check.rating(rating)
        check.comment(comment)
        check.id("message_id", message_id, required=False)
        checked_tags = check.tags(tags, self._tags)
        check.done()
        return FeedbackDraft(
            thread_id, run_id, access.acting_user(), message_id, rating, comment, checked_tags
        )

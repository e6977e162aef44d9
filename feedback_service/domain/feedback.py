"""The feedback operations: validate, then run one unit of work in the store.

Callers pass an authenticated Principal whose access rule has already been
checked; these functions add the rules that depend on the data.
"""

from dataclasses import dataclass

from feedback_service.auth.principal import Principal
from feedback_service.domain.errors import NotFound
from feedback_service.domain.pagination import decode_page_token, encode_page_token, within_budget
from feedback_service.domain.validation import Checker
from feedback_service.store import queries
from feedback_service.store.database import Store
from feedback_service.store.queries import FeedbackDraft, FeedbackRow, RunStats


@dataclass(frozen=True, slots=True)
class Page:
    feedback: list[FeedbackRow]
    next_page_token: str


def _acting_user(actor: Principal) -> str:
    # The access rule (caller: CALLER_USER) guarantees a user on writes.
    assert actor.user_id is not None
    return actor.user_id


class FeedbackRules:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def create(
        self, actor: Principal, thread_id: str, run_id: str, rating: int, comment: str, message_id: str
    ) -> FeedbackRow:
        draft = _draft(actor, thread_id, run_id, rating, comment, message_id)
        return await self._store.write(queries.create_feedback, draft)

    async def upsert(
        self, actor: Principal, thread_id: str, run_id: str, rating: int, comment: str, message_id: str
    ) -> FeedbackRow:
        draft = _draft(actor, thread_id, run_id, rating, comment, message_id)
        return await self._store.write(queries.upsert_feedback, draft)

    async def list_run(
        self, actor: Principal, thread_id: str, run_id: str, page_size: int, page_token: str
    ) -> Page:
        check = Checker()
        check.id("thread_id", thread_id)
        check.id("run_id", run_id)
        size = check.page_size(page_size)
        check.done()
        return await self._page(actor, thread_id, run_id, size, page_token)

    async def list_thread(self, actor: Principal, thread_id: str, page_size: int, page_token: str) -> Page:
        check = Checker()
        check.id("thread_id", thread_id)
        size = check.page_size(page_size)
        check.done()
        return await self._page(actor, thread_id, None, size, page_token)

    async def _page(
        self, actor: Principal, thread_id: str, run_id: str | None, size: int, token: str
    ) -> Page:
        # A user sees only their own feedback; a service acting as itself sees all.
        viewer = actor.user_id
        # Newlines cannot occur in ids, so distinct queries never share a scope.
        scope = "\n".join((thread_id, run_id or "", viewer or ""))
        after_id = decode_page_token(scope, token)
        rows = await self._store.read(queries.feedback_page, thread_id, run_id, viewer, after_id, size + 1)
        # At most `size` rows, and fewer when they would pass the byte budget.
        fitting = within_budget([row.comment for row in rows[:size]])
        if fitting == len(rows):
            return Page(rows, "")
        rows = rows[:fitting]
        return Page(rows, encode_page_token(scope, rows[-1].id))

    async def stats(self, thread_id: str, run_ids: list[str], *, batch: bool) -> list[RunStats]:
        check = Checker()
        check.id("thread_id", thread_id)
        if batch:
            check.run_ids(run_ids)
        else:
            check.id("run_id", run_ids[0])
        check.done()
        counted = await self._store.read(queries.stats_for_runs, thread_id, run_ids)
        return [counted[run_id] for run_id in run_ids]

    async def delete(self, actor: Principal, thread_id: str, run_id: str, feedback_id: str) -> None:
        check = Checker()
        check.id("thread_id", thread_id)
        check.id("run_id", run_id)
        check.id("feedback_id", feedback_id)
        check.done()
        user = _acting_user(actor)
        deleted = await self._store.write(queries.delete_feedback, thread_id, run_id, feedback_id, user)
        if not deleted:
            raise NotFound(f"feedback {feedback_id} not found in run {run_id}")

    async def delete_run(self, actor: Principal, thread_id: str, run_id: str) -> None:
        check = Checker()
        check.id("thread_id", thread_id)
        check.id("run_id", run_id)
        check.done()
        deleted = await self._store.write(queries.delete_run_feedback, thread_id, run_id, _acting_user(actor))
        if not deleted:
            raise NotFound(f"no feedback of yours found on run {run_id}")


def _draft(
    actor: Principal, thread_id: str, run_id: str, rating: int, comment: str, message_id: str
) -> FeedbackDraft:
    check = Checker()
    check.id("thread_id", thread_id)
    check.id("run_id", run_id)
    check.rating(rating)
    check.comment(comment)
    check.id("message_id", message_id, required=False)
    check.done()
    return FeedbackDraft(thread_id, run_id, _acting_user(actor), message_id, rating, comment)

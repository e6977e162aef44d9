"""Feedback lists: a page of a run's or a thread's feedback, the caller's
own feedback on some runs, and the export. A list's request is checked once
into a ListQuery (core/records.py), with the visibility rule applied, and
carried whole to the store."""

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field, replace

from feedback_service.core.errors import FailedPrecondition, PermissionDenied
from feedback_service.core.records import CallerRunFeedback, FeedbackRow, ListQuery
from feedback_service.domain.access import Access
from feedback_service.domain.pagination import (
    decode_page_token,
    encode_page_token,
    query_scope,
    within_budget,
)
from feedback_service.domain.validation import Checker
from feedback_service.store import reads
from feedback_service.store.database import Store

# BatchGetCallerFeedback answers at most this many feedback (and at most the
# page byte budget): a thread view asks for a page of runs, not for everything.
MAX_CALLER_FEEDBACK = 1000


@dataclass(frozen=True, slots=True)
class Page:
    feedback: list[FeedbackRow]
    next_page_token: str


# ExportFeedback sends at most this many feedback per message (and at most the
# page byte budget of their comments): with their run labels, a message stays
# far below a default client's 4 MiB receive limit.
EXPORT_PAGE_SIZE = 200


@dataclass(frozen=True, slots=True)
class ExportPage:
    """A page of an export: feedback, the labels of their runs (by run id;
    runs without labels left out), and the token to resume after it."""

    feedback: list[FeedbackRow]
    run_labels: dict[str, dict[str, str]]
    page_token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListRequest:
    """What a list or an export asks for, as the caller sent it (unchecked):
    servicers/convert.py builds it from a ListFeedback, ListThreadFeedback or
    ExportFeedback request, and FeedbackRules checks it once into a
    ListQuery. Timestamps are (seconds, nanos); 0 and '' ask for nothing."""

    thread_id: str
    run_id: str | None = None  # None: every run of the thread
    user_id: str = ""  # a service's filter on one user
    rating: int = 0
    has_comment: bool | None = None
    tag: str = ""
    created_after: tuple[int, int] | None = None
    created_before: tuple[int, int] | None = None
    run_labels: Mapping[str, str] = field(default_factory=dict)  # ExportFeedback's selection


def _visible(access: Access, query: ListQuery) -> ListQuery:
    """The visibility rule: a user sees only their own feedback; a service
    acting as itself sees all, or one user's with the user_id filter."""
    viewer = access.user_id
    if viewer is None:
        return query
    if query.user_id is not None and query.user_id != viewer:
        raise PermissionDenied("only a service acting as itself may list another user's feedback")
    return replace(query, user_id=viewer)


class FeedbackLists:
    """The list operations of FeedbackRules."""

    # Set by FeedbackRules.__init__: the store, and the vocabulary of tags in
    # its configured order.
    _store: Store
    _tags: tuple[str, ...]

    async def list_feedback(
        self, access: Access, asked: ListRequest, *, page_size: int, page_token: str, deadline: float | None
    ) -> Page:
        """One page of the feedback on a run (or, run_id None, on every run of
        the thread) that the request keeps, oldest first."""
        check = Checker()
        check.id("thread_id", asked.thread_id)
        if asked.run_id is not None:
            check.id("run_id", asked.run_id)
        size = check.page_size(page_size)
        query = self._checked(check, asked)
        check.done()
        query = _visible(access, query)
        scope = query_scope("list", query, access.user_id)
        after_id = decode_page_token(scope, page_token)
        owner, rows = await self._store.read(
            reads.feedback_page, query, after_id, size + 1, access.checks_thread, deadline=deadline
        )
        access.check_thread(asked.thread_id, owner)
        # At most `size` rows, and fewer when they would pass the byte budget.
        fitting = within_budget([row.comment for row in rows[:size]])
        if fitting == len(rows):
            return Page(rows, "")
        rows = rows[:fitting]
        last_id = rows[-1].id
        assert last_id is not None, "a stored row has its id"
        return Page(rows, encode_page_token(scope, last_id))

    def _checked(self, check: Checker, asked: ListRequest) -> ListQuery:
        """The query a list or an export runs, its filters checked (the ids
        that lead a request, and an export's run labels, are checked by the
        operation, in the order its fields come); before the visibility rule."""
        after = check.timestamp("created_after", asked.created_after)
        before = check.timestamp("created_before", asked.created_before)
        if after is not None and before is not None and after >= before:
            check.fail("created_before", "must be later than created_after")
        return ListQuery(
            thread_id=asked.thread_id or None,
            run_id=asked.run_id,
            rating=check.rating_filter(asked.rating),
            has_comment=asked.has_comment,
            tag=check.tag(asked.tag, self._tags) or None,
            created_after=after,
            created_before=before,
            user_id=check.id("user_id", asked.user_id, required=False) or None,
        )

    async def caller_feedback(
        self, access: Access, *, thread_id: str, run_ids: list[str], deadline: float | None
    ) -> list[CallerRunFeedback]:
        """The caller's run-level and message-level feedback on each of up to
        100 runs, in request order; FAILED_PRECONDITION past
        MAX_CALLER_FEEDBACK feedback or the page byte budget."""
        check = Checker()
        check.id("thread_id", thread_id)
        check.run_ids(run_ids)
        check.done()
        user = access.acting_user()
        owner, rows = await self._store.read(
            reads.caller_feedback,
            thread_id,
            user,
            run_ids,
            MAX_CALLER_FEEDBACK + 1,
            access.checks_thread,
            deadline=deadline,
        )
        access.check_thread(thread_id, owner)
        if len(rows) > MAX_CALLER_FEEDBACK or within_budget([row.comment for row in rows]) < len(rows):
            raise FailedPrecondition(
                f"your feedback on these runs passes {MAX_CALLER_FEEDBACK} feedback or 1 MiB: "
                "ask for fewer runs, or page through a run's with ListFeedback"
            )
        # The unique key allows one run-level feedback per user and run.
        run_level: dict[str, FeedbackRow] = {}
        message_level: dict[str, list[FeedbackRow]] = {}
        for row in rows:  # oldest first
            if row.message_id:
                message_level.setdefault(row.run_id, []).append(row)
            else:
                run_level[row.run_id] = row
        return [
            CallerRunFeedback(run_id, run_level.get(run_id), message_level.get(run_id, []))
            for run_id in run_ids
        ]

    async def export(
        self, asked: ListRequest, *, page_token: str, deadline: float | None
    ) -> AsyncGenerator[ExportPage, None]:
        """Every feedback the request keeps, oldest first, page by page with
        its runs' labels and the token to resume after it; each page is read
        on its own (no transaction spans the export)."""
        check = Checker()
        selection = check.labels("run_labels", asked.run_labels)
        check.id("thread_id", asked.thread_id, required=False)
        query = replace(self._checked(check, asked), run_labels=tuple(sorted(selection.items())))
        check.done()
        scope = query_scope("export", query)
        after_id = decode_page_token(scope, page_token)
        while True:
            fetched, labels = await self._store.read(
                reads.export_page, query, after_id, EXPORT_PAGE_SIZE, deadline=deadline
            )
            rows = fetched[: within_budget([row.comment for row in fetched])]
            if rows:
                last_id = rows[-1].id
                assert last_id is not None, "a stored row has its id"
                after_id = last_id
                yield ExportPage(rows, labels, encode_page_token(scope, after_id))
            if len(rows) == len(fetched) < EXPORT_PAGE_SIZE:
                return  # a short page, sent whole: nothing follows it

"""The feedback operations: validate the request once, apply the thread rule
the caller's Access names, then run one unit of work in the store.

`deadline` is the caller's, as a time.monotonic() value (None: no deadline);
work still queued when it passes is dropped.
"""

import hashlib
import json
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from feedback_service.core.errors import FailedPrecondition, NotFound, PermissionDenied
from feedback_service.core.records import (
    BucketCount,
    CallerRunFeedback,
    FeedbackDraft,
    FeedbackRow,
    ListQuery,
    RequestClaim,
    RunStats,
    ThreadStats,
)
from feedback_service.domain import analytics
from feedback_service.domain.access import Access
from feedback_service.domain.analytics import Comparison, VoteGroup
from feedback_service.domain.pagination import (
    decode_page_token,
    encode_page_token,
    query_scope,
    within_budget,
)
from feedback_service.domain.validation import DEFAULT_TAGS, Checker
from feedback_service.store import deletes, reads, stats, writes
from feedback_service.store.database import Store

log = logging.getLogger(__name__)

# BatchGetCallerFeedback answers at most this many feedback (and at most the
# page byte budget): a thread view asks for a page of runs, not for everything.
MAX_CALLER_FEEDBACK = 1000

# Time series buckets: their width in microseconds, and how many one request
# may span (31 days of hours, a leap year of days).
HOUR_US = 3600 * 1_000_000
BUCKET_WIDTHS = {"hour": HOUR_US, "day": 24 * HOUR_US}
MAX_BUCKETS = {"hour": 744, "day": 366}


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


class FeedbackRules:
    def __init__(self, store: Store, tags: Sequence[str] = DEFAULT_TAGS) -> None:
        self._store = store
        self._tags = tuple(tags)  # the vocabulary of tags, in its configured order

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
        request = _request(access, request_id, "CreateFeedback", *fields)
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

    async def stats_for_run(
        self,
        access: Access,
        *,
        thread_id: str,
        run_id: str,
        include_messages: bool,
        deadline: float | None,
    ) -> RunStats:
        """The votes on one run (every user's run-level feedback) and their
        tags; with include_messages, the message-level feedback per message."""
        check = Checker()
        check.id("thread_id", thread_id)
        check.id("run_id", run_id)
        check.done()
        (counted,) = await self._stats(access, thread_id, [run_id], include_messages, deadline)
        return counted

    async def stats_for_runs(
        self,
        access: Access,
        *,
        thread_id: str,
        run_ids: list[str],
        include_messages: bool,
        deadline: float | None,
    ) -> list[RunStats]:
        """The same for each of up to 100 runs, in request order."""
        check = Checker()
        check.id("thread_id", thread_id)
        check.run_ids(run_ids)
        check.done()
        return await self._stats(access, thread_id, run_ids, include_messages, deadline)

    async def _stats(
        self,
        access: Access,
        thread_id: str,
        run_ids: list[str],
        include_messages: bool,
        deadline: float | None,
    ) -> list[RunStats]:
        owner, counted = await self._store.read(
            stats.stats_for_runs,
            thread_id,
            run_ids,
            include_messages,
            access.checks_thread,
            deadline=deadline,
        )
        access.check_thread(thread_id, owner)
        return [counted[run_id] for run_id in run_ids]

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

    async def thread_stats(self, access: Access, *, thread_id: str, deadline: float | None) -> ThreadStats:
        """The votes on every run of a thread, their tags, and the runs voted on."""
        check = Checker()
        check.id("thread_id", thread_id)
        check.done()
        owner, counted = await self._store.read(
            stats.thread_stats, thread_id, access.checks_thread, deadline=deadline
        )
        access.check_thread(thread_id, owner)
        return counted

    async def time_series(
        self,
        access: Access,
        *,
        thread_id: str,
        bucket: str,
        start_time: tuple[int, int] | None,
        end_time: tuple[int, int] | None,
        deadline: float | None,
    ) -> list[BucketCount]:
        """The votes first given in each `bucket` ("hour" or "day") of
        [start_time, end_time), empty buckets included; an empty thread_id
        counts every thread (only for a service acting as itself)."""
        check = Checker()
        check.id("thread_id", thread_id, required=False)
        width = BUCKET_WIDTHS.get(bucket)
        if width is None:
            check.fail("bucket", "must be TIME_BUCKET_HOUR or TIME_BUCKET_DAY")
        start = check.timestamp("start_time", start_time, required=True)
        end = check.timestamp("end_time", end_time, required=True)
        if width is not None and start is not None and end is not None:
            unit = "a whole hour (UTC)" if bucket == "hour" else "midnight UTC"
            if start % width:
                check.fail("start_time", f"must be {unit}")
            if end % width:
                check.fail("end_time", f"must be {unit}")
            if end <= start:
                check.fail("end_time", "must be later than start_time")
            elif (end - start) // width > MAX_BUCKETS[bucket]:
                check.fail("end_time", f"must be at most {MAX_BUCKETS[bucket]} {bucket}s after start_time")
        check.done()  # so width, start and end are set from here on
        assert width is not None and start is not None and end is not None
        if not thread_id and access.user_id is not None:
            raise PermissionDenied("only a service acting as itself may count every thread; name a thread_id")
        checked = access.checks_thread and bool(thread_id)
        owner, counted = await self._store.read(
            stats.time_series, thread_id or None, start, end, width, checked, deadline=deadline
        )
        if thread_id:
            access.check_thread(thread_id, owner)
        by_start = {count.start: count for count in counted}
        return [by_start.get(at, BucketCount(at, 0, 0)) for at in range(start, end, width)]

    async def breakdown(
        self,
        access: Access,
        *,
        label_key: str,
        run_labels: Mapping[str, str],
        thread_id: str,
        start_time: tuple[int, int] | None,
        end_time: tuple[int, int] | None,
        confidence: float,
        deadline: float | None,
    ) -> list[VoteGroup]:
        """The votes on the runs carrying every one of `run_labels`, per value
        of the label `label_key`, most votes first, with Wilson intervals; an
        empty thread_id counts every thread (only for a service acting as itself)."""
        check = Checker()
        check.label_key("label_key", label_key)
        selection = check.labels("run_labels", run_labels)
        window = self._label_window(check, thread_id, start_time, end_time)
        level = check.confidence(confidence)
        check.done()
        owner, counted = await self._store.read(
            stats.votes_by_label,
            label_key,
            selection,
            *self._scope(access, thread_id),
            *window,
            deadline=deadline,
        )
        if thread_id:
            access.check_thread(thread_id, owner)
        return analytics.breakdown(counted, level)

    async def compare(
        self,
        access: Access,
        *,
        baseline_labels: Mapping[str, str],
        candidate_labels: Mapping[str, str],
        thread_id: str,
        start_time: tuple[int, int] | None,
        end_time: tuple[int, int] | None,
        confidence: float,
        deadline: float | None,
    ) -> Comparison:
        """The votes on the candidate's runs against the baseline's, each set
        the runs carrying every one of its labels."""
        check = Checker()
        baseline = check.labels("baseline_labels", baseline_labels, required=True)
        candidate = check.labels("candidate_labels", candidate_labels, required=True)
        window = self._label_window(check, thread_id, start_time, end_time)
        level = check.confidence(confidence)
        check.done()
        owner, (base, cand) = await self._store.read(
            stats.votes_of_selections,
            [baseline, candidate],
            *self._scope(access, thread_id),
            *window,
            deadline=deadline,
        )
        if thread_id:
            access.check_thread(thread_id, owner)
        return analytics.compare(base, cand, level)

    @staticmethod
    def _label_window(
        check: Checker, thread_id: str, start_time: tuple[int, int] | None, end_time: tuple[int, int] | None
    ) -> tuple[int | None, int | None]:
        """The optional thread and [start, end) of the label analytics, checked."""
        check.id("thread_id", thread_id, required=False)
        start = check.timestamp("start_time", start_time)
        end = check.timestamp("end_time", end_time)
        if start is not None and end is not None and end <= start:
            check.fail("end_time", "must be later than start_time")
        return start, end

    @staticmethod
    def _scope(access: Access, thread_id: str) -> tuple[str | None]:
        """The thread a count is limited to (None: every thread, for a
        service acting as itself only), as the store takes it."""
        if not thread_id and access.user_id is not None:
            raise PermissionDenied("only a service acting as itself may count every thread; name a thread_id")
        return (thread_id or None,)

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
        request = _request(access, request_id, "DeleteRunFeedback", thread_id, run_id)
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

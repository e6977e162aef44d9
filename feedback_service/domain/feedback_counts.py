"""Feedback counts: votes per run and message, a thread's votes, votes
over time, and the label analytics (breakdown and comparison)."""

from collections.abc import Mapping

from feedback_service.core.errors import PermissionDenied
from feedback_service.core.records import BucketCount, RunStats, ThreadStats
from feedback_service.domain import analytics
from feedback_service.domain.access import Access
from feedback_service.domain.analytics import Comparison, VoteGroup
from feedback_service.domain.validation import Checker
from feedback_service.store import stats
from feedback_service.store.database import Store

# Time series buckets: their width in microseconds, and how many one request
# may span (31 days of hours, a leap year of days).
HOUR_US = 3600 * 1_000_000
BUCKET_WIDTHS = {"hour": HOUR_US, "day": 24 * HOUR_US}
MAX_BUCKETS = {"hour": 744, "day": 366}


class FeedbackCounts:
    """The counting operations of FeedbackRules."""

    # Set by FeedbackRules.__init__: the store, and the vocabulary of tags in
    # its configured order.
    _store: Store
    _tags: tuple[str, ...]

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

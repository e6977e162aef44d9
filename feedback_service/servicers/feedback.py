"""feedback.v1.FeedbackService. The interceptors have authenticated the caller
and checked the RPC's declared rule; each method reads what the rule granted
(`current_access`), calls one domain operation and returns a message (the
stream writes its messages)."""

import contextlib
from typing import TypeAlias

import grpc

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import feedback_pb2_grpc
from feedback_service.auth.access import current_access
from feedback_service.domain.changes import ChangeFeed
from feedback_service.domain.feedback import FeedbackRules
from feedback_service.observability import count_written
from feedback_service.servicers.convert import (
    BUCKETS,
    breakdown_response,
    caller_feedback_response,
    change_message,
    comparison_response,
    deadline,
    export_response,
    feedback_message,
    feedback_page,
    list_request,
    optional_time,
    stats_message,
    thread_stats_message,
    time_series_response,
)

# The servicer relies on no request or response type of its context.
Context: TypeAlias = "grpc.aio.ServicerContext[object, object]"  # generic only to the checker


class FeedbackServicer(feedback_pb2_grpc.FeedbackServiceServicer):
    def __init__(self, rules: FeedbackRules, changes: ChangeFeed) -> None:
        self._rules = rules
        self._changes = changes

    async def CreateFeedback(self, request: pb.CreateFeedbackRequest, context: Context) -> pb.Feedback:
        row = await self._rules.create(
            current_access.get(),
            thread_id=request.thread_id,
            run_id=request.run_id,
            rating=request.rating,
            comment=request.comment,
            message_id=request.message_id,
            tags=request.tags,
            request_id=request.request_id,
            deadline=deadline(context),
        )
        count_written("CreateFeedback", row.rating)
        return feedback_message(row)

    async def UpsertFeedback(self, request: pb.UpsertFeedbackRequest, context: Context) -> pb.Feedback:
        row = await self._rules.upsert(
            current_access.get(),
            thread_id=request.thread_id,
            run_id=request.run_id,
            rating=request.rating,
            comment=request.comment,
            message_id=request.message_id,
            tags=request.tags,
            deadline=deadline(context),
        )
        count_written("UpsertFeedback", row.rating)
        return feedback_message(row)

    async def ListFeedback(
        self, request: pb.ListFeedbackRequest, context: Context
    ) -> pb.ListFeedbackResponse:
        page = await self._rules.list_feedback(
            current_access.get(),
            list_request(request),
            page_size=request.page_size,
            page_token=request.page_token,
            deadline=deadline(context),
        )
        return feedback_page(pb.ListFeedbackResponse(next_page_token=page.next_page_token), page.feedback)

    async def ListThreadFeedback(
        self, request: pb.ListThreadFeedbackRequest, context: Context
    ) -> pb.ListThreadFeedbackResponse:
        page = await self._rules.list_feedback(
            current_access.get(),
            list_request(request),
            page_size=request.page_size,
            page_token=request.page_token,
            deadline=deadline(context),
        )
        return feedback_page(
            pb.ListThreadFeedbackResponse(next_page_token=page.next_page_token), page.feedback
        )

    async def GetFeedbackStats(
        self, request: pb.GetFeedbackStatsRequest, context: Context
    ) -> pb.FeedbackStats:
        stats = await self._rules.stats_for_run(
            current_access.get(),
            thread_id=request.thread_id,
            run_id=request.run_id,
            include_messages=request.include_messages,
            deadline=deadline(context),
        )
        return stats_message(stats)

    async def BatchGetFeedbackStats(
        self, request: pb.BatchGetFeedbackStatsRequest, context: Context
    ) -> pb.BatchGetFeedbackStatsResponse:
        stats = await self._rules.stats_for_runs(
            current_access.get(),
            thread_id=request.thread_id,
            run_ids=list(request.run_ids),
            include_messages=request.include_messages,
            deadline=deadline(context),
        )
        return pb.BatchGetFeedbackStatsResponse(stats=[stats_message(s) for s in stats])

    async def DeleteFeedback(
        self, request: pb.DeleteFeedbackRequest, context: Context
    ) -> pb.DeleteFeedbackResponse:
        await self._rules.delete(
            current_access.get(),
            thread_id=request.thread_id,
            run_id=request.run_id,
            feedback_id=request.feedback_id,
            request_id=request.request_id,
            deadline=deadline(context),
        )
        return pb.DeleteFeedbackResponse(success=True)

    async def DeleteRunFeedback(
        self, request: pb.DeleteRunFeedbackRequest, context: Context
    ) -> pb.DeleteFeedbackResponse:
        await self._rules.delete_run(
            current_access.get(),
            thread_id=request.thread_id,
            run_id=request.run_id,
            request_id=request.request_id,
            deadline=deadline(context),
        )
        return pb.DeleteFeedbackResponse(success=True)

    async def BatchGetCallerFeedback(
        self, request: pb.BatchGetCallerFeedbackRequest, context: Context
    ) -> pb.BatchGetCallerFeedbackResponse:
        entries = await self._rules.caller_feedback(
            current_access.get(),
            thread_id=request.thread_id,
            run_ids=list(request.run_ids),
            deadline=deadline(context),
        )
        return caller_feedback_response(entries)

    async def GetThreadFeedbackStats(
        self, request: pb.GetThreadFeedbackStatsRequest, context: Context
    ) -> pb.ThreadFeedbackStats:
        stats = await self._rules.thread_stats(
            current_access.get(), thread_id=request.thread_id, deadline=deadline(context)
        )
        return thread_stats_message(stats)

    async def GetFeedbackTimeSeries(
        self, request: pb.GetFeedbackTimeSeriesRequest, context: Context
    ) -> pb.GetFeedbackTimeSeriesResponse:
        buckets = await self._rules.time_series(
            current_access.get(),
            thread_id=request.thread_id,
            bucket=BUCKETS.get(request.bucket, ""),
            start_time=optional_time(request, "start_time"),
            end_time=optional_time(request, "end_time"),
            deadline=deadline(context),
        )
        return time_series_response(buckets)

    # The generated base declares an iterator of responses; grpc.aio also lets
    # a server-streaming method write them with context.write, as this one does.
    async def StreamFeedbackChanges(  # type: ignore[override]  # writes, see above
        self, request: pb.StreamFeedbackChangesRequest, context: Context
    ) -> None:
        """Writes each change as it is read (the call is a server stream)."""
        batches = self._changes.stream(
            after_cursor=request.after_cursor,
            follow=request.follow,
            thread_id=request.thread_id,
            deadline=deadline(context),
        )
        async with contextlib.aclosing(batches):
            async for batch in batches:
                for change in batch:
                    await context.write(change_message(change))

    async def DeleteUserFeedback(
        self, request: pb.DeleteUserFeedbackRequest, context: Context
    ) -> pb.DeleteUserFeedbackResponse:
        erased = await self._rules.erase_user(
            current_access.get(), user_id=request.user_id, deadline=deadline(context)
        )
        return pb.DeleteUserFeedbackResponse(deleted_feedback=erased)

    async def GetFeedbackBreakdown(
        self, request: pb.GetFeedbackBreakdownRequest, context: Context
    ) -> pb.GetFeedbackBreakdownResponse:
        groups = await self._rules.breakdown(
            current_access.get(),
            label_key=request.label_key,
            run_labels=dict(request.run_labels),
            thread_id=request.thread_id,
            start_time=optional_time(request, "start_time"),
            end_time=optional_time(request, "end_time"),
            confidence=request.confidence,
            deadline=deadline(context),
        )
        return breakdown_response(groups)

    async def CompareFeedback(
        self, request: pb.CompareFeedbackRequest, context: Context
    ) -> pb.CompareFeedbackResponse:
        comparison = await self._rules.compare(
            current_access.get(),
            baseline_labels=dict(request.baseline_labels),
            candidate_labels=dict(request.candidate_labels),
            thread_id=request.thread_id,
            start_time=optional_time(request, "start_time"),
            end_time=optional_time(request, "end_time"),
            confidence=request.confidence,
            deadline=deadline(context),
        )
        return comparison_response(comparison)

    async def ExportFeedback(  # type: ignore[override]  # writes, as StreamFeedbackChanges does
        self, request: pb.ExportFeedbackRequest, context: Context
    ) -> None:
        """Writes each page as it is read (the call is a server stream)."""
        pages = self._rules.export(
            list_request(request), page_token=request.page_token, deadline=deadline(context)
        )
        async with contextlib.aclosing(pages):
            async for page in pages:
                await context.write(export_response(page))

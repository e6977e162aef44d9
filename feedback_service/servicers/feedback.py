"""feedback.v1.FeedbackService. Access was checked by the interceptors."""

from feedback.v1 import feedback_pb2, feedback_pb2_grpc
from feedback_service.auth.principal import current_principal
from feedback_service.domain.feedback import FeedbackRules
from feedback_service.servicers.convert import feedback_message, feedback_page, stats_message


class FeedbackServicer(feedback_pb2_grpc.FeedbackServiceServicer):
    def __init__(self, rules: FeedbackRules) -> None:
        self._rules = rules

    async def CreateFeedback(self, request, context) -> feedback_pb2.Feedback:
        row = await self._rules.create(
            current_principal.get(),
            request.thread_id,
            request.run_id,
            request.rating,
            request.comment,
            request.message_id,
        )
        return feedback_message(row)

    async def UpsertFeedback(self, request, context) -> feedback_pb2.Feedback:
        row = await self._rules.upsert(
            current_principal.get(),
            request.thread_id,
            request.run_id,
            request.rating,
            request.comment,
            request.message_id,
        )
        return feedback_message(row)

    async def ListFeedback(self, request, context) -> feedback_pb2.ListFeedbackResponse:
        page = await self._rules.list_run(
            current_principal.get(),
            request.thread_id,
            request.run_id,
            request.page_size,
            request.page_token,
        )
        response = feedback_pb2.ListFeedbackResponse(next_page_token=page.next_page_token)
        return feedback_page(response, page.feedback)

    async def ListThreadFeedback(self, request, context) -> feedback_pb2.ListThreadFeedbackResponse:
        page = await self._rules.list_thread(
            current_principal.get(), request.thread_id, request.page_size, request.page_token
        )
        response = feedback_pb2.ListThreadFeedbackResponse(next_page_token=page.next_page_token)
        return feedback_page(response, page.feedback)

    async def GetFeedbackStats(self, request, context) -> feedback_pb2.FeedbackStats:
        (stats,) = await self._rules.stats(request.thread_id, [request.run_id], batch=False)
        return stats_message(stats)

    async def BatchGetFeedbackStats(self, request, context) -> feedback_pb2.BatchGetFeedbackStatsResponse:
        stats = await self._rules.stats(request.thread_id, list(request.run_ids), batch=True)
        return feedback_pb2.BatchGetFeedbackStatsResponse(stats=[stats_message(s) for s in stats])

    async def DeleteFeedback(self, request, context) -> feedback_pb2.DeleteFeedbackResponse:
        await self._rules.delete(
            current_principal.get(), request.thread_id, request.run_id, request.feedback_id
        )
        return feedback_pb2.DeleteFeedbackResponse(success=True)

    async def DeleteRunFeedback(self, request, context) -> feedback_pb2.DeleteFeedbackResponse:
        await self._rules.delete_run(current_principal.get(), request.thread_id, request.run_id)
        return feedback_pb2.DeleteFeedbackResponse(success=True)

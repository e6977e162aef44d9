"""feedback.v1.ThreadRegistry. Access was checked by the interceptors."""

from feedback.v1 import thread_registry_pb2, thread_registry_pb2_grpc
from feedback_service.domain.threads import ThreadRules
from feedback_service.servicers.convert import run_message, thread_message


class ThreadRegistryServicer(thread_registry_pb2_grpc.ThreadRegistryServicer):
    def __init__(self, rules: ThreadRules) -> None:
        self._rules = rules

    async def RegisterThread(self, request, context) -> thread_registry_pb2.Thread:
        row = await self._rules.register_thread(request.thread_id, request.owner_user_id)
        return thread_message(row)

    async def RegisterRun(self, request, context) -> thread_registry_pb2.Run:
        row = await self._rules.register_run(request.thread_id, request.run_id)
        return run_message(row)

    async def DeleteThread(self, request, context) -> thread_registry_pb2.DeleteThreadResponse:
        runs, feedback = await self._rules.delete_thread(request.thread_id)
        return thread_registry_pb2.DeleteThreadResponse(deleted_runs=runs, deleted_feedback=feedback)

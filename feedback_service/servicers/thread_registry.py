"""feedback.v1.ThreadRegistry. The interceptors have let only services acting
as themselves in; each method calls one domain operation."""

from typing import TypeAlias

import grpc

from feedback.v1 import thread_registry_pb2 as pb
from feedback.v1 import thread_registry_pb2_grpc
from feedback_service.domain.threads import ThreadRules
from feedback_service.servicers.convert import deadline, run_message, thread_message

# The servicer relies on no request or response type of its context.
Context: TypeAlias = "grpc.aio.ServicerContext[object, object]"  # generic only to the checker


class ThreadRegistryServicer(thread_registry_pb2_grpc.ThreadRegistryServicer):
    def __init__(self, rules: ThreadRules) -> None:
        self._rules = rules

    async def RegisterThread(self, request: pb.RegisterThreadRequest, context: Context) -> pb.Thread:
        record = await self._rules.register_thread(
            thread_id=request.thread_id, owner_user_id=request.owner_user_id, deadline=deadline(context)
        )
        return thread_message(record)

    async def RegisterRun(self, request: pb.RegisterRunRequest, context: Context) -> pb.Run:
        record = await self._rules.register_run(
            thread_id=request.thread_id,
            run_id=request.run_id,
            labels=dict(request.labels),
            deadline=deadline(context),
        )
        return run_message(record)

    async def DeleteThread(
        self, request: pb.DeleteThreadRequest, context: Context
    ) -> pb.DeleteThreadResponse:
        runs, feedback = await self._rules.delete_thread(
            thread_id=request.thread_id, deadline=deadline(context)
        )
        return pb.DeleteThreadResponse(deleted_runs=runs, deleted_feedback=feedback)

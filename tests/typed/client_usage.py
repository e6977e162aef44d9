"""Type-checked (mypy --strict) by tests/test_client_typing.py: the client's
calls and errors as a caller writes them, typed through the generated stubs."""

import asyncio

import grpc

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import thread_registry_pb2 as registry_pb2
from feedback_client import (
    AsyncFeedbackClient,
    FeedbackClient,
    FeedbackError,
    InvalidArgument,
    bearer_token,
    on_behalf_of,
    service_token,
)


def rate(target: str, token: str) -> pb.Feedback:
    with FeedbackClient(target, bearer_token(token), timeout=5) as client:
        request = pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1)
        try:
            return client.feedback.CreateFeedback(request, timeout=2)
        except InvalidArgument as error:
            fields: list[str] = [violation.field for violation in error.field_violations]
            raise ValueError(fields) from error


def register(target: str, token: str) -> registry_pb2.Run:
    with FeedbackClient(target, service_token(token)) as client:
        client.registry.RegisterThread(registry_pb2.RegisterThreadRequest(thread_id="t1"))
        return client.registry.RegisterRun(registry_pb2.RegisterRunRequest(thread_id="t1", run_id="r1"))


async def count(target: str, token: str) -> int:
    async with AsyncFeedbackClient(target, service_token(token)) as client:
        request = pb.GetFeedbackStatsRequest(thread_id="t1", run_id="r1")
        try:
            stats: pb.FeedbackStats = await client.feedback.GetFeedbackStats(
                request, metadata=on_behalf_of("alice")
            )
        except FeedbackError as error:
            code: grpc.StatusCode = error.code
            raise RuntimeError(code.name) from error
        return stats.total


if __name__ == "__main__":
    asyncio.run(count("localhost:50051", "token"))

"""The ceiling: feedback.v1.FeedbackService on a bare grpc.aio server.

    .venv/bin/python benchmarks/noop_server.py --listen 127.0.0.1:PORT

Same generated stubs and the same server options (read from the service's
own code) as `feedback-service serve`, but no interceptors, no database and no
work: every RPC returns a response
built once at start, of the same shape as the real service's answer to the
benchmark's request (a page of 100 feedback, 50 stats, ...). Serialising that
response is the only per-call work left, so the service's throughput divided
by this server's is the share of the gRPC framework's ceiling it reaches.
A health service is registered (SERVING) only so that readiness is checked
the same way as for the real service.
"""

import argparse
import asyncio
import base64
import logging
import signal
import sys
import time
import uuid
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from feedback.v1 import feedback_pb2, feedback_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload as w


def service_server_options() -> list:
    """The options feedback-service gives its own server with the default
    settings, taken from its code so that the ceiling follows the service (the
    service sets no gRPC maximum_concurrent_rpcs: it limits calls itself)."""
    from feedback_service import server as service_server
    from feedback_service.config import Settings

    return service_server.server_options(Settings.from_env({}), False)


def _timestamp() -> Timestamp:
    micros = time.time_ns() // 1000
    return Timestamp(seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1000)


def _feedback(run_id: str, message_id: str, n: int = 0) -> feedback_pb2.Feedback:
    at = _timestamp()
    return feedback_pb2.Feedback(
        feedback_id=str(uuid.uuid4()),
        thread_id=w.READ_THREAD,
        run_id=run_id,
        user_id=w.USER,
        message_id=message_id,
        rating=w.rating_for(n),
        created_at=at,
        updated_at=at,
        tags=w.tags_for(n),
    )


# The tag counts of a run's votes, as the loaded data has them.
TAG_COUNTS = [("incorrect", 1), ("not_as_expected", 2), ("slow", 2), ("style_tone", 1)]


def _stats(run_id: str, total: int) -> feedback_pb2.FeedbackStats:
    return feedback_pb2.FeedbackStats(
        run_id=run_id,
        total=total,
        positive=total * 3 // 4,
        negative=total // 4,
        tags=[{"tag": tag, "count": count} for tag, count in TAG_COUNTS],
    )


class NoopFeedbackServicer(feedback_pb2_grpc.FeedbackServiceServicer):
    def __init__(self) -> None:
        self.one = _feedback(w.WRITE_RUNS[0], "")
        self.page = feedback_pb2.ListFeedbackResponse(
            feedback=[_feedback(w.HOT_RUN, f"msg-{i:04d}", i) for i in range(w.LIST_PAGE_SIZE)],
            next_page_token=base64.urlsafe_b64encode(b"1234567.0123456789abcdef").decode(),
        )
        self.filtered_page = feedback_pb2.ListFeedbackResponse(
            feedback=[_feedback(w.HOT_RUN, f"msg-{i:04d}", i) for i in range(w.FILTERED_ROWS)]
        )
        self.stats = _stats(w.HOT_RUN, w.HOT_RUN_OTHER_ROWS)
        self.batch = feedback_pb2.BatchGetFeedbackStatsResponse(
            stats=[_stats(run, w.OTHER_READ_RUN_ROWS) for run in w.BATCH_RUNS]
        )
        self.caller = feedback_pb2.BatchGetCallerFeedbackResponse()
        for run in w.BATCH_RUNS:
            entry = self.caller.runs.add(run_id=run)
            if run in w.USER_VOTED_RUNS:
                entry.run_feedback.CopyFrom(_feedback(run, ""))
        self.caller.runs[0].message_feedback.extend(
            _feedback(w.HOT_RUN, f"msg-{i:04d}", i) for i in range(w.HOT_RUN_USER_ROWS)
        )
        self.thread_stats = feedback_pb2.ThreadFeedbackStats(
            thread_id=w.READ_THREAD,
            total=557,  # the read thread's votes
            positive=418,
            negative=139,
            tags=[{"tag": tag, "count": count * 50} for tag, count in TAG_COUNTS],
            runs_with_feedback=len(w.READ_RUNS),
        )
        self.deleted = feedback_pb2.DeleteFeedbackResponse(success=True)

    async def CreateFeedback(self, request, context):  # noqa: N802
        return self.one

    async def UpsertFeedback(self, request, context):  # noqa: N802
        return self.one

    async def ListFeedback(self, request, context):  # noqa: N802
        return self.filtered_page if request.tag else self.page

    async def ListThreadFeedback(self, request, context):  # noqa: N802
        return feedback_pb2.ListThreadFeedbackResponse(feedback=self.page.feedback)

    async def GetFeedbackStats(self, request, context):  # noqa: N802
        return self.stats

    async def BatchGetFeedbackStats(self, request, context):  # noqa: N802
        return self.batch

    async def DeleteFeedback(self, request, context):  # noqa: N802
        return self.deleted

    async def DeleteRunFeedback(self, request, context):  # noqa: N802
        return self.deleted

    async def BatchGetCallerFeedback(self, request, context):  # noqa: N802
        return self.caller

    async def GetThreadFeedbackStats(self, request, context):  # noqa: N802
        return self.thread_stats


async def serve(listen: str) -> None:
    options = service_server_options()
    logging.info("server options %s", options)
    server = grpc.aio.server(options=options)
    feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(NoopFeedbackServicer(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(listen)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    logging.info("noop server on %s (port %d)", listen, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", default="127.0.0.1:50061")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s noop: %(message)s")
    asyncio.run(serve(args.listen))


if __name__ == "__main__":
    main()

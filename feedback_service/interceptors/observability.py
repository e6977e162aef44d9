"""Outermost: times and counts every RPC of ours, writes its access-log line,
and records its deadline so queued database work can be abandoned."""

import time
from typing import Any

import grpc

from feedback.v1 import feedback_pb2
from feedback_service.auth.principal import current_principal
from feedback_service.interceptors.base import Behavior, MethodName, ServerInterceptor
from feedback_service.observability import (
    FEEDBACK_WRITTEN,
    IN_FLIGHT,
    LATENCY,
    REQUESTS,
    CallRecord,
    current_call,
    log_access,
)

RATING_LABELS = {1: "positive", -1: "negative"}


class ObservabilityInterceptor(ServerInterceptor):
    async def intercept(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext, method: MethodName
    ) -> Any:
        record = CallRecord()
        remaining = context.time_remaining()
        if remaining is not None:
            record.deadline = time.monotonic() + remaining
        current_call.set(record)
        IN_FLIGHT.inc()
        code = grpc.StatusCode.UNKNOWN
        try:
            response = await behavior(request, context)
            code = grpc.StatusCode.OK
            if isinstance(response, feedback_pb2.Feedback):
                FEEDBACK_WRITTEN.labels(method.name, RATING_LABELS.get(response.rating, "other")).inc()
            return response
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except BaseException:  # cancelled (deadline passed, client gone) or a bug
            if record.deadline is not None and time.monotonic() >= record.deadline:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
            elif context.cancelled():
                code = grpc.StatusCode.CANCELLED
            raise
        finally:
            IN_FLIGHT.dec()
            LATENCY.labels(method.service, method.name).observe(time.perf_counter() - record.started)
            REQUESTS.labels(method.service, method.name, code.name).inc()
            log_access(method.path, code.name, record, current_principal.get(None), context.peer())

"""Outermost but for tracing: times and counts every RPC of ours and writes
its access-log line, naming the principal the authentication interceptor set
(if any) and the trace the call belongs to; when the call is traced, it also
sets the status code and the principal kind on its server span."""

import functools
import time
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from feedback_service.auth.principal import current_principal
from feedback_service.interceptors.base import Behavior, Context, MethodName, ServerInterceptor
from feedback_service.observability import IN_FLIGHT, LATENCY, REQUESTS, log_access
from feedback_service.tracing import current_trace_id, record_outcome


@functools.lru_cache(maxsize=1024)
def _latency(method: MethodName) -> Histogram:
    return LATENCY.labels(method.service, method.name)


@functools.lru_cache(maxsize=4096)
def _requests(method: MethodName, code: grpc.StatusCode) -> Counter:
    return REQUESTS.labels(method.service, method.name, code.name)


class ObservabilityInterceptor(ServerInterceptor):
    """Metric children are resolved once per method (and code): looking them
    up by label on every call cost more than recording the values."""

    def __init__(self, *, traced: bool = False) -> None:
        self._traced = traced  # with tracing off, no span to look up on every call
        self._in_flight = 0
        IN_FLIGHT.set_function(lambda: self._in_flight)

    async def intercept(self, behavior: Behavior, request: Any, context: Context, method: MethodName) -> Any:
        started = time.perf_counter()
        self._in_flight += 1
        code = grpc.StatusCode.UNKNOWN
        try:
            response = await behavior(request, context)
            code = grpc.StatusCode.OK
            return response
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except BaseException:  # cancelled (deadline passed, client gone) or a bug
            code = _ended_early(context)
            raise
        finally:
            self._in_flight -= 1
            duration_s = time.perf_counter() - started
            _latency(method).observe(duration_s)
            _requests(method, code).inc()
            principal = current_principal.get(None)
            kind = principal.kind.value if principal else None
            if self._traced:
                record_outcome(code, kind)
            log_access(
                method.path,
                code.name,
                duration_s,
                kind,
                principal.id if principal else None,
                context.peer(),
                current_trace_id() if self._traced else None,
            )


def _ended_early(context: Context) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED if context.cancelled() else grpc.StatusCode.UNKNOWN

"""Bounds on what callers can hold: calls being served, open change streams,
and open public streams. None counts a call that has not shown credentials
and delivered its request, so a client that opens calls and stalls cannot
starve the rest."""

from collections import Counter
from typing import Any

from prometheus_client import Gauge

from feedback_service.core.errors import ResourceExhausted
from feedback_service.interceptors.base import Behavior, Context, Handler, MethodName, ServerInterceptor
from feedback_service.interceptors.draining import CallerWaits

CHANGE_STREAMS = Gauge("feedback_change_streams_open", "StreamFeedbackChanges streams open now")


class ConcurrencyLimitInterceptor(ServerInterceptor):
    """At most `limit` authenticated calls of ours in progress at once. Our
    streams (StreamFeedbackChanges) may stay open for hours and are bounded
    on their own instead (ChangeStreamLimitInterceptor)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._in_progress = 0

    def applies_to(self, method: MethodName, handler: Handler) -> bool:
        return not method.public and not handler.response_streaming

    async def intercept(self, behavior: Behavior, request: Any, context: Context, method: MethodName) -> Any:
        if self._in_progress >= self._limit:
            raise ResourceExhausted(f"the server is serving {self._limit} calls already; retry later")
        self._in_progress += 1
        try:
            return await behavior(request, context)
        finally:
            self._in_progress -= 1


class ChangeStreamLimitInterceptor(ServerInterceptor):
    """Our server streams (StreamFeedbackChanges and ExportFeedback, open to
    services only): at most `limit` open at once, the next one
    RESOURCE_EXHAUSTED at once.
    Shutdown ends them with UNAVAILABLE, promptly: a following stream would
    otherwise hold the whole grace period (the caller resumes elsewhere from
    its last cursor)."""

    def __init__(self, limit: int, waits: CallerWaits) -> None:
        self._limit = limit
        self._waits = waits
        self._open = 0

    def applies_to(self, method: MethodName, handler: Handler) -> bool:
        return not method.public and handler.response_streaming

    async def intercept(self, behavior: Behavior, request: Any, context: Context, method: MethodName) -> Any:
        if self._open >= self._limit:
            raise ResourceExhausted(
                f"{self._limit} change streams (StreamFeedbackChanges and ExportFeedback) are open "
                "on this server already; close one or retry later"
            )
        self._open += 1
        CHANGE_STREAMS.inc()
        try:
            return await self._waits.wait(behavior(request, context))
        finally:
            self._open -= 1
            CHANGE_STREAMS.dec()


class PublicStreamLimitInterceptor(ServerInterceptor):
    """Health Watch and reflection streams are open to anyone and may stay
    open for ever: at most `per_connection` of them per client connection and
    `total` in all; the next one is RESOURCE_EXHAUSTED at once. Shutdown ends
    them with UNAVAILABLE."""

    def __init__(self, total: int, per_connection: int, waits: CallerWaits) -> None:
        self._waits = waits
        self._total = total
        self._per_connection = per_connection
        self._open: Counter[str] = Counter()
        self._open_total = 0

    def applies_to(self, method: MethodName, handler: Handler) -> bool:
        return method.public and (handler.request_streaming or handler.response_streaming)

    async def intercept(self, behavior: Behavior, request: Any, context: Context, method: MethodName) -> Any:
        connection = context.peer()  # address and port: one client connection
        if self._open_total >= self._total or self._open[connection] >= self._per_connection:
            raise ResourceExhausted(
                f"too many open health and reflection streams (at most {self._per_connection} "
                f"per connection, {self._total} in all); close one first"
            )
        self._open[connection] += 1
        self._open_total += 1
        try:
            return await self._waits.wait(behavior(request, context))
        finally:
            self._open_total -= 1
            self._open[connection] -= 1
            if not self._open[connection]:
                del self._open[connection]

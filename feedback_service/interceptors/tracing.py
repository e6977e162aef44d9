"""Outermost, when tracing is on: a server span per RPC of ours that
continues the caller's trace (W3C `traceparent` and `tracestate` in the
metadata, through the globally configured propagator). The observability
interceptor inside it sets the outcome on the span; database work below
opens child spans.

(opentelemetry-instrumentation-grpc's aio server interceptor does not fit
our chain: it iterates the behaviour of a response-streaming handler, which
ours are coroutines that write with context.write, and it knows a status
code only when something calls context.abort.)"""

from typing import Any

from opentelemetry import propagate, trace

from feedback_service.interceptors.base import Behavior, Context, MethodName, ServerInterceptor
from feedback_service.tracing import RPC_METHOD, RPC_SERVICE, RPC_SYSTEM


class TracingInterceptor(ServerInterceptor):
    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._fields = frozenset(propagate.get_global_textmap().fields)

    async def intercept(self, behavior: Behavior, request: Any, context: Context, method: MethodName) -> Any:
        # Only the propagator's own headers: never a credential.
        carrier = {key: value for key, value in context.invocation_metadata() or () if key in self._fields}
        with self._tracer.start_as_current_span(
            f"{method.service}/{method.name}",
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={RPC_SYSTEM: "grpc", RPC_SERVICE: method.service, RPC_METHOD: method.name},
            record_exception=False,  # exception messages may quote the caller's values
            set_status_on_exception=False,
        ):
            return await behavior(request, context)

"""The shape every interceptor here shares: one `intercept` method that runs
around the next behaviour of a call (the next interceptor, or the servicer).

Behaviours are coroutine functions `(request_or_iterator, context)`: a
streaming response is written with `context.write`, so every interceptor can
simply await the behaviour, whatever the method's arity.
"""

import abc
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeAlias

import grpc

# An interceptor serves every method, whatever its request and response types.
# (grpc's classes are generic to the type checker only, hence the strings.)
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Behavior = Callable[[Any, Context], Awaitable[Any]]
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"

# Served to anyone: load balancers probe health, and grpcurl needs reflection
# to discover the API. Every other method needs credentials and a declared rule.
PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


class MethodName(NamedTuple):
    """'/feedback.v1.FeedbackService/CreateFeedback', in parts."""

    path: str
    service: str  # feedback.v1.FeedbackService
    name: str  # CreateFeedback

    @property
    def public(self) -> bool:
        return self.service in PUBLIC_SERVICES


@functools.lru_cache(maxsize=1024)
def parse_method_name(path: str) -> MethodName:
    """The one parser of method paths; a path without two parts keeps ''.
    Cached: every interceptor asks on every call, for a handful of paths."""
    _, _, rest = path.partition("/")
    service, _, name = rest.partition("/")
    return MethodName(path, service, name)


def handler_factory(handler: Handler) -> tuple[Callable[..., Handler], Callable[..., Any]]:
    """The constructor of a handler like this one, and its behaviour."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler, handler.unary_unary
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler, handler.unary_stream
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler, handler.stream_unary
    behavior = handler.stream_stream
    assert behavior is not None, "a handler has one of the four behaviours"
    return grpc.stream_stream_rpc_method_handler, behavior


def awaitable_behavior(behavior: Callable[..., Any]) -> Behavior:
    """The behaviour itself, or, for one that yields its responses, a
    coroutine that writes them."""
    if not inspect.isasyncgenfunction(behavior):
        return behavior

    async def written(request: Any, context: Context) -> None:
        async for response in behavior(request, context):
            await context.write(response)

    return written


class ServerInterceptor(grpc.aio.ServerInterceptor, abc.ABC):
    """Subclasses implement `intercept`. By default only the methods of our own
    services are intercepted; public ones (health, reflection) pass through."""

    def applies_to(self, method: MethodName, handler: Handler) -> bool:
        return not method.public

    @abc.abstractmethod
    async def intercept(self, behavior: Behavior, request: Any, context: Context, method: MethodName) -> Any:
        """Runs around `await behavior(request, context)` and returns its result."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> "Handler | None":
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED
            return None
        method = parse_method_name(handler_call_details.method)
        if not self.applies_to(method, handler):
            return handler
        factory, behavior = handler_factory(handler)
        # A partial, not a closure: one coroutine frame less per layer and
        # call (gRPC sees through partials to the coroutine function).
        intercepted = functools.partial(self.intercept, awaitable_behavior(behavior), method=method)
        return factory(
            intercepted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class HandlerCache(grpc.aio.ServerInterceptor):
    """Runs the interceptors' `intercept_service` once per method instead of
    once per call, and keeps the handler they build.

    That is sound because every interceptor here decides how to wrap a
    handler from the method and the handler alone; whatever depends on the
    call (metadata, peer, request) happens in the behaviour, per call.
    Unknown methods are not kept: their names are the caller's choice."""

    def __init__(self, interceptors: "list[grpc.aio.ServerInterceptor]") -> None:
        self._interceptors = tuple(interceptors)
        self._handlers: dict[str, Handler] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> "Handler | None":
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = await self._wrapped(0, continuation, handler_call_details)
            if handler is not None:
                self._handlers[method] = handler
        return handler

    async def _wrapped(
        self, index: int, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> "Handler | None":
        if index == len(self._interceptors):
            return await continuation(details)

        async def inner(next_details: grpc.HandlerCallDetails) -> "Handler | None":
            return await self._wrapped(index + 1, continuation, next_details)

        return await self._interceptors[index].intercept_service(inner, details)

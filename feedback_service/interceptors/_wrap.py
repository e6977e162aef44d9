"""The shape every interceptor here shares: wrap the behaviour of each unary
method of ours once, and serve later calls of that method from the cache."""

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from feedback_service.interceptors import is_public

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class UnaryInterceptor(grpc.aio.ServerInterceptor):
    """Subclasses implement wrap(method, behavior). Public services (health,
    reflection) and streaming methods pass through unchanged."""

    def __init__(self) -> None:
        # Only methods the server has (a handler exists) are cached, so made-up
        # method names cannot grow this dict.
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if not is_public(method) and handler.unary_unary is not None:
            handler = grpc.unary_unary_rpc_method_handler(
                self.wrap(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        self._handlers[method] = handler
        return handler

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        raise NotImplementedError

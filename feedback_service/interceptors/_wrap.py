"""Wrapping a unary-unary handler's behaviour, the way every interceptor here does."""

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def wrap_unary(
    handler: grpc.RpcMethodHandler | None, wrap: Callable[[Behavior], Behavior]
) -> grpc.RpcMethodHandler | None:
    """Returns the handler with its behaviour wrapped; streaming handlers pass through."""
    if handler is None or handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        wrap(handler.unary_unary),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )

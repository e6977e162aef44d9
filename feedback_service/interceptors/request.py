"""Receives the request message of every unary-request method (ours, and the
public health checks) with a time limit and decodes it here, where a failure
can be answered properly.

gRPC would otherwise hold a call that sent its headers but never its message
for as long as the caller likes, and answer undecodable bytes with UNKNOWN.
This is the one interceptor that changes a handler's shape: a unary request
becomes a stream that it reads once.
"""

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from feedback_service.core.errors import DeadlineExceeded, InvalidArgument
from feedback_service.interceptors.base import Context, Continuation, Handler
from feedback_service.interceptors.draining import CallerWaits

# Stream handler constructors for the unary-request kinds they replace.
_STREAMING = {
    "unary_unary": grpc.stream_unary_rpc_method_handler,
    "unary_stream": grpc.stream_stream_rpc_method_handler,
}


class RequestInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, waits: CallerWaits) -> None:
        self._waits = waits  # holds the time limit

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> "Handler | None":
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        kind = "unary_unary" if handler.unary_unary else "unary_stream"
        behavior, decode = getattr(handler, kind), handler.request_deserializer

        async def received(_requests: Any, context: Context) -> Any:
            request = _decoded(await self._read(context), decode)
            return await behavior(request, context)

        return _STREAMING[kind](
            received, request_deserializer=None, response_serializer=handler.response_serializer
        )

    async def _read(self, context: Context) -> bytes:
        try:
            message = await self._waits.wait_limited(context.read())
        except TimeoutError:
            raise DeadlineExceeded(
                f"the request message did not arrive within {self._waits.limit_s:g}s of the call's start"
            ) from None
        if not isinstance(message, bytes):  # grpc.aio.EOF: the stream ended first
            raise InvalidArgument([], "the call ended without a request message")
        return message


def _decoded(data: bytes, decode: Callable[[bytes], Any] | None) -> Any:
    if decode is None:  # a method registered without a deserializer takes the bytes
        return data
    try:
        return decode(data)
    except DecodeError:
        raise InvalidArgument(
            [], "the request message could not be decoded: it is not a valid protobuf of this method's type"
        ) from None

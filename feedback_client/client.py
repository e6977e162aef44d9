"""FeedbackClient (blocking) and AsyncFeedbackClient (asyncio).

Each holds one channel and the generated stubs over it: `client.feedback`
(FeedbackService) and `client.registry` (ThreadRegistry), so every RPC of
the contract is there, typed by the stubs' .pyi, as soon as it is generated.
An interceptor gives every call:
- the client's credentials (unless the call passes its own in `metadata`);
- the client's default deadline (unless the call passes `timeout`);
- a fresh `request_id` where the request has an empty one (see retries.py);
- the caller's trace context (W3C `traceparent`), when OpenTelemetry is
  installed;
and turns a failure into the FeedbackError subclass of its status code.
The channel's service config retries what may be retried (retries.py).
"""

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self

import grpc
import grpc.aio
from google.protobuf.message import Message

from feedback.v1 import feedback_pb2_grpc, thread_registry_pb2_grpc
from feedback_client.credentials import Credentials
from feedback_client.errors import error_from
from feedback_client.retries import REQUEST_ID, request_id_paths, service_config

if TYPE_CHECKING:
    from feedback.v1.feedback_pb2_grpc import FeedbackServiceAsyncStub
    from feedback.v1.thread_registry_pb2_grpc import ThreadRegistryAsyncStub

try:
    from opentelemetry import propagate

    TRACING = True
except ImportError:  # the client works without OpenTelemetry; it then propagates nothing
    TRACING = False

DEFAULT_TIMEOUT_S = 10.0
CREDENTIAL_KEYS = frozenset({"authorization", "x-service-token"})
REQUEST_ID_PATHS = request_id_paths()

MetadataPairs = list[tuple[str, str | bytes]]


def channel_options(options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [("grpc.enable_retries", 1), ("grpc.service_config", service_config()), *options]


def trace_context() -> list[tuple[str, str]]:
    """The current trace context as metadata (`traceparent`, `tracestate`),
    in the format of the globally configured propagator (W3C by default)."""
    if not TRACING:
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


class CallSetup:
    """What the interceptors add to each call."""

    def __init__(self, credentials: Credentials | None, timeout: float | None) -> None:
        self._credentials = credentials
        self._timeout = timeout

    def timeout(self, given: float | None) -> float | None:
        return self._timeout if given is None else given

    def metadata(self, given: Any) -> MetadataPairs:
        pairs: MetadataPairs = list(given or ())
        if self._credentials is not None and not any(key in CREDENTIAL_KEYS for key, _ in pairs):
            pairs += self._credentials.metadata()
        return pairs + trace_context()

    def request(self, method: str | bytes, request: Any) -> Any:
        """The request, or for a method with a request_id left empty, a copy
        with a fresh one (a copy: a caller reusing its message for another
        call must not send the same id twice)."""
        path = method.decode() if isinstance(method, bytes) else method
        if path not in REQUEST_ID_PATHS or getattr(request, REQUEST_ID):
            return request
        filled: Message = type(request)()
        filled.CopyFrom(request)
        setattr(filled, REQUEST_ID, str(uuid.uuid4()))
        return filled


# --- blocking -------------------------------------------------------------------


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _CallDetails(_Details, grpc.ClientCallDetails):
    pass


class _TypedOutcome:
    """A call (a grpc.Call and grpc.Future; an iterator too when responses
    stream) that raises a failure as a FeedbackError."""

    def __init__(self, outcome: Any) -> None:
        self._outcome = outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outcome, name)

    def result(self, timeout: float | None = None) -> Any:
        try:
            return self._outcome.result(timeout)
        except grpc.RpcError as error:
            raise error_from(error) from error

    def exception(self, timeout: float | None = None) -> BaseException | None:
        error = self._outcome.exception(timeout)
        return error_from(error) if isinstance(error, grpc.RpcError) else error

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._outcome.add_done_callback(lambda _: callback(self))

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._outcome)
        except grpc.RpcError as error:
            raise error_from(error) from error


class _Interceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, setup: CallSetup) -> None:
        self._setup = setup

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            self._setup.timeout(details.timeout),
            self._setup.metadata(details.metadata),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        request = self._setup.request(client_call_details.method, request)
        return _TypedOutcome(continuation(self._details(client_call_details), request))

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        request = self._setup.request(client_call_details.method, request)
        return _TypedOutcome(continuation(self._details(client_call_details), request))

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return _TypedOutcome(continuation(self._details(client_call_details), request_iterator))

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return _TypedOutcome(continuation(self._details(client_call_details), request_iterator))


class FeedbackClient:
    """A blocking client of the feedback service at `target` (`host:port`).

    `credentials`: bearer_token(jwt) or service_token(token), sent with every
    call. `timeout`: the default deadline of a call, in seconds (a call's own
    `timeout=` overrides it; None: no deadline). `channel_credentials`:
    grpc.ssl_channel_credentials(...) for TLS; plaintext without.
    `options`: more gRPC channel options.
    """

    def __init__(
        self,
        target: str,
        credentials: Credentials | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        channel_credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        opts = channel_options(options)
        if channel_credentials is None:
            self.channel = grpc.insecure_channel(target, opts)
        else:
            self.channel = grpc.secure_channel(target, channel_credentials, opts)
        intercepted = grpc.intercept_channel(self.channel, _Interceptor(CallSetup(credentials, timeout)))
        self.feedback = feedback_pb2_grpc.FeedbackServiceStub(intercepted)
        self.registry = thread_registry_pb2_grpc.ThreadRegistryStub(intercepted)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --- asyncio --------------------------------------------------------------------


async def _typed_stream(call: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        async for response in call:
            yield response
    except grpc.aio.AioRpcError as error:
        raise error_from(error) from error


class _AsyncInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    def __init__(self, setup: CallSetup) -> None:
        self._setup = setup

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            self._setup.timeout(details.timeout),
            grpc.aio.Metadata(*self._setup.metadata(details.metadata)),
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        request = self._setup.request(client_call_details.method, request)
        call = await continuation(self._details(client_call_details), request)
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            raise error_from(error) from error

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        request = self._setup.request(client_call_details.method, request)
        return _typed_stream(await continuation(self._details(client_call_details), request))

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        call = await continuation(self._details(client_call_details), request_iterator)
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            raise error_from(error) from error

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return _typed_stream(await continuation(self._details(client_call_details), request_iterator))


class AsyncFeedbackClient:
    """The asyncio client: the same arguments as FeedbackClient; calls are
    awaited (`await client.feedback.CreateFeedback(request)`). Create it
    inside the event loop that uses it."""

    feedback: "FeedbackServiceAsyncStub"
    registry: "ThreadRegistryAsyncStub"

    def __init__(
        self,
        target: str,
        credentials: Credentials | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        channel_credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        opts = channel_options(options)
        interceptors = [_AsyncInterceptor(CallSetup(credentials, timeout))]
        if channel_credentials is None:
            self.channel = grpc.aio.insecure_channel(target, opts, interceptors=interceptors)
        else:
            self.channel = grpc.aio.secure_channel(
                target, channel_credentials, opts, interceptors=interceptors
            )
        self.feedback = feedback_pb2_grpc.FeedbackServiceStub(self.channel)
        self.registry = thread_registry_pb2_grpc.ThreadRegistryStub(self.channel)

    async def close(self, grace: float | None = None) -> None:
        await self.channel.close(grace)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

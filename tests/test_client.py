"""feedback_client, the Python client: against a real server for what the
server answers (typed errors, credentials), and against a stand-in that
fails on purpose for what only the client decides (deadlines, retries,
request ids, trace context)."""

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import thread_registry_pb2 as registry_pb2
from feedback_client import (
    DEFAULT_TIMEOUT_S,
    AlreadyExists,
    AsyncFeedbackClient,
    FailedPrecondition,
    FeedbackClient,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    bearer_token,
    on_behalf_of,
    service_token,
)
from feedback_client.retries import SERVICES, has_request_id, methods, retried
from tests.harness import SERVICE_TOKEN, running_server, server_settings, user_token

# --- against the real server -------------------------------------------------------


@pytest.fixture
def address(tmp_path) -> Iterator[str]:
    """A fresh server on SQLite with alice's thread t1 (runs r1, r2)."""
    with running_server(server_settings(tmp_path)) as (server, _):
        with FeedbackClient(server.address, service_token(SERVICE_TOKEN)) as platform:
            platform.registry.RegisterThread(
                registry_pb2.RegisterThreadRequest(thread_id="t1", owner_user_id="alice")
            )
            for run in ("r1", "r2"):
                platform.registry.RegisterRun(registry_pb2.RegisterRunRequest(thread_id="t1", run_id=run))
        yield server.address


def rating(run_id: str = "r1", value: int = 1, **fields) -> pb.CreateFeedbackRequest:
    return pb.CreateFeedbackRequest(thread_id="t1", run_id=run_id, rating=value, **fields)


def test_a_user_rates_with_a_bearer_token(address):
    with FeedbackClient(address, bearer_token(user_token("alice"))) as client:
        created = client.feedback.CreateFeedback(rating(comment="helpful"))
        stats = client.feedback.GetFeedbackStats(pb.GetFeedbackStatsRequest(thread_id="t1", run_id="r1"))
    assert (created.user_id, created.comment) == ("alice", "helpful")
    assert (stats.total, stats.positive) == (1, 1)


def test_a_bearer_token_function_is_asked_on_every_call(address):
    asked = []

    def current_token() -> str:
        asked.append(1)
        return user_token("alice")

    with FeedbackClient(address, bearer_token(current_token)) as client:
        client.feedback.CreateFeedback(rating())
        client.feedback.UpsertFeedback(pb.UpsertFeedbackRequest(thread_id="t1", run_id="r1", rating=-1))
    assert len(asked) == 2


def test_a_service_acts_for_the_user_named_on_each_call(address):
    with FeedbackClient(address, service_token(SERVICE_TOKEN)) as client:
        for_alice = client.feedback.CreateFeedback(rating(), metadata=on_behalf_of("alice"))
        with pytest.raises(FailedPrecondition):
            client.feedback.CreateFeedback(rating("r2"))  # as itself: no user to attribute it to
    assert for_alice.user_id == "alice"


def test_credentials_given_with_a_call_replace_the_clients(address):
    with FeedbackClient(address, bearer_token(user_token("bob"))) as client:
        created = client.feedback.CreateFeedback(
            rating(), metadata=bearer_token(user_token("alice")).metadata()
        )
    assert created.user_id == "alice"


def test_failures_raise_the_error_class_of_their_status_code(address):
    with FeedbackClient(address) as anonymous:
        with pytest.raises(Unauthenticated) as raised:
            anonymous.feedback.CreateFeedback(rating())
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
    with FeedbackClient(address, bearer_token(user_token("bob"))) as bob:
        with pytest.raises(NotFound):
            bob.feedback.CreateFeedback(rating())
        with pytest.raises(PermissionDenied):
            bob.registry.RegisterThread(registry_pb2.RegisterThreadRequest(thread_id="t9"))
    with FeedbackClient(address, bearer_token(user_token("alice"))) as alice:
        alice.feedback.CreateFeedback(rating())
        with pytest.raises(AlreadyExists) as raised:
            alice.feedback.CreateFeedback(rating())
        assert "UpsertFeedback" in raised.value.details
        # .future() and .with_call() raise the same errors
        with pytest.raises(AlreadyExists):
            alice.feedback.CreateFeedback.future(rating()).result()
        with pytest.raises(AlreadyExists):
            alice.feedback.CreateFeedback.with_call(rating())


def test_invalid_argument_carries_the_field_violations(address):
    bad = rating(run_id="r 1", value=3)
    with FeedbackClient(address, bearer_token(user_token("alice"))) as client:
        with pytest.raises(InvalidArgument) as raised:
            client.feedback.CreateFeedback(bad)
    error = raised.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [violation.field for violation in error.field_violations] == ["run_id", "rating"]
    assert error.field_violations[1] == FieldViolation("rating", "must be 1 (thumbs up) or -1 (thumbs down)")
    assert isinstance(error.__cause__, grpc.RpcError)


def test_the_async_client_calls_both_services_and_raises_typed_errors(address):
    async def scenario() -> tuple[registry_pb2.Run, pb.Feedback, InvalidArgument]:
        async with AsyncFeedbackClient(address, service_token(SERVICE_TOKEN)) as client:
            run = await client.registry.RegisterRun(
                registry_pb2.RegisterRunRequest(thread_id="t1", run_id="r3")
            )
            created = await client.feedback.CreateFeedback(rating("r3"), metadata=on_behalf_of("alice"))
            try:
                await client.feedback.CreateFeedback(rating("r 3", 3), metadata=on_behalf_of("alice"))
            except InvalidArgument as error:
                return run, created, error
            raise AssertionError("an invalid request was accepted")

    run, created, error = asyncio.run(scenario())
    assert (run.run_id, created.user_id) == ("r3", "alice")
    assert [violation.field for violation in error.field_violations] == ["run_id", "rating"]


# --- against a stand-in that fails on purpose ----------------------------------------


@dataclass
class Seen:
    """One call as the stand-in received it."""

    path: str
    request: Message
    metadata: dict[str, str]
    time_remaining: float | None


@dataclass
class StandIn:
    """Serves every RPC of both services from their descriptors: each call is
    recorded, the first `failures` attempts of each method are UNAVAILABLE,
    then an empty response."""

    failures: int = 0
    calls: list[Seen] = field(default_factory=list)
    attempts: Counter = field(default_factory=Counter)

    def handler(self, method: MethodDescriptor) -> grpc.RpcMethodHandler:
        path = f"/{method.containing_service.full_name}/{method.name}"
        request_class = GetMessageClass(method.input_type)
        response_class = GetMessageClass(method.output_type)

        def answer(request: Message, context: grpc.ServicerContext) -> Message:
            self.calls.append(
                Seen(path, request, dict(context.invocation_metadata()), context.time_remaining())
            )
            self.attempts[path] += 1
            if self.attempts[path] <= self.failures:
                context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
            return response_class()

        def stream(request: Message, context: grpc.ServicerContext) -> Iterator[Message]:
            yield answer(request, context)

        kind = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        return kind(
            stream if method.server_streaming else answer,
            request_deserializer=request_class.FromString,
            response_serializer=response_class.SerializeToString,
        )


@pytest.fixture
def stand_in() -> Iterator[tuple[StandIn, str]]:
    behaviour = StandIn()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    for service in SERVICES:
        handlers = {method.name: behaviour.handler(method) for method in service.methods}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service.full_name, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield behaviour, f"127.0.0.1:{port}"
    server.stop(None)


def call(client: FeedbackClient, method: MethodDescriptor, request: Message | None = None, **kwargs) -> None:
    stub = client.feedback if method.containing_service.name == "FeedbackService" else client.registry
    request = request if request is not None else GetMessageClass(method.input_type)()
    outcome = getattr(stub, method.name)(request, **kwargs)
    if method.server_streaming:
        list(outcome)


def method_named(name: str) -> MethodDescriptor:
    return next(method for method in methods() if method.name == name)


def test_calls_have_the_default_deadline_unless_they_pass_their_own(stand_in):
    behaviour, address = stand_in
    list_feedback = method_named("ListFeedback")
    with FeedbackClient(address) as client:
        call(client, list_feedback)
        call(client, list_feedback, timeout=2)
    with FeedbackClient(address, timeout=None) as client:
        call(client, list_feedback)
    default, overridden, unbounded = (seen.time_remaining for seen in behaviour.calls)
    # The deadline crosses the wire as a grpc-timeout header, rounded: allow a little.
    assert DEFAULT_TIMEOUT_S - 1 < default < DEFAULT_TIMEOUT_S + 0.1
    assert 1 < overridden < 2.1
    assert unbounded is None or unbounded > 10**6  # no deadline


def test_credentials_and_on_behalf_of_travel_as_metadata(stand_in):
    behaviour, address = stand_in
    with FeedbackClient(address, service_token("secret-token")) as client:
        call(client, method_named("UpsertFeedback"), metadata=on_behalf_of("alice"))
        call(client, method_named("RegisterThread"))
    for_alice, as_itself = (seen.metadata for seen in behaviour.calls)
    assert (for_alice["x-service-token"], for_alice["x-on-behalf-of"]) == ("secret-token", "alice")
    assert as_itself["x-service-token"] == "secret-token"
    assert "x-on-behalf-of" not in as_itself


def test_the_retry_rules_cover_reads_idempotent_calls_and_request_ids():
    retried_names = {method.name for method in methods() if retried(method)}
    reads = {"ListFeedback", "GetFeedbackStats", "ListThreadFeedback", "BatchGetFeedbackStats"}
    assert reads | {"UpsertFeedback", "RegisterThread", "RegisterRun"} <= retried_names
    for name in ("CreateFeedback", "DeleteFeedback", "DeleteRunFeedback", "DeleteThread"):
        assert (name in retried_names) == has_request_id(method_named(name)), name


@pytest.mark.parametrize("method", methods(), ids=lambda method: method.name)
def test_unavailable_is_retried_only_where_the_rules_allow(stand_in, method):
    behaviour, address = stand_in
    behaviour.failures = 2
    path = f"/{method.containing_service.full_name}/{method.name}"
    with FeedbackClient(address) as client:
        if retried(method):
            call(client, method)
            assert behaviour.attempts[path] == 3
        else:
            with pytest.raises(Unavailable):
                call(client, method)
            assert behaviour.attempts[path] == 1


REQUEST_ID_METHODS = [method for method in methods() if has_request_id(method)]


@pytest.mark.skipif(
    not REQUEST_ID_METHODS,
    reason="no request has a request_id field yet (AIP-155: being added to CreateFeedbackRequest, "
    "DeleteFeedbackRequest and DeleteRunFeedbackRequest)",
)
@pytest.mark.parametrize("method", REQUEST_ID_METHODS, ids=lambda method: method.name)
def test_an_empty_request_id_is_filled_once_and_every_retry_repeats_it(stand_in, method):
    behaviour, address = stand_in
    behaviour.failures = 2
    request = GetMessageClass(method.input_type)()
    with FeedbackClient(address) as client:
        call(client, method, request)
        call(client, method, GetMessageClass(method.input_type)(request_id="chosen-by-the-caller"))
    filled = {seen.request.request_id for seen in behaviour.calls[:3]}
    assert len(filled) == 1
    assert uuid.UUID(filled.pop()).version == 4
    assert behaviour.calls[3].request.request_id == "chosen-by-the-caller"
    assert request.request_id == ""  # the caller's message is left as it was


def test_the_async_client_has_the_same_deadline_retries_and_metadata(stand_in):
    behaviour, address = stand_in
    behaviour.failures = 1

    async def scenario() -> None:
        async with AsyncFeedbackClient(address, bearer_token("jwt")) as client:
            await client.feedback.ListFeedback(pb.ListFeedbackRequest(), metadata=on_behalf_of("alice"))
            await client.feedback.GetFeedbackStats(pb.GetFeedbackStatsRequest(), timeout=2)

    asyncio.run(scenario())
    first, retried_once, stats, stats_retried = behaviour.calls
    assert first.metadata["authorization"] == "Bearer jwt"
    assert retried_once.metadata["x-on-behalf-of"] == "alice"
    assert DEFAULT_TIMEOUT_S - 1 < first.time_remaining < DEFAULT_TIMEOUT_S + 0.1
    assert stats.time_remaining < 2.1
    assert stats_retried.path.endswith("/GetFeedbackStats")


def test_the_callers_trace_context_is_sent_as_traceparent(stand_in):
    behaviour, address = stand_in
    caller = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, TraceFlags(1))
    with FeedbackClient(address) as client, trace.use_span(NonRecordingSpan(caller)):
        call(client, method_named("GetFeedbackStats"))
    sent = behaviour.calls[0].metadata["traceparent"]
    assert sent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

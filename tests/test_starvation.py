"""Stalled and greedy callers, against a real service process.

A call that sends its headers but never its request holds nothing for long:
it is dropped after FEEDBACK_REQUEST_TIMEOUT_S with DEADLINE_EXCEEDED (or
refused at once with UNAUTHENTICATED when it has no credentials), and it does
not count against FEEDBACK_MAX_CONCURRENT_RPCS, which counts only calls that
are authenticated and have delivered their request. Health/Check always
answers. Public streams (Health/Watch, reflection) are bounded on their own:
10 per client connection and 100 in all, by default; past that a new one is
RESOURCE_EXHAUSTED.
"""

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from feedback.v1 import feedback_pb2 as pb
from tests.harness import (
    JWT_SECRET,
    METHODS,
    Client,
    ServiceProcess,
    as_service,
    as_user,
    outcome,
    register,
    separate_channel,
    sqlite_write_lock,
    wait_until,
)

Code = grpc.StatusCode
CALL_TIMEOUT_S = 20
# How long a test waits for a stalled call to end: far past the request timeout.
ENDING_WAIT_S = 30
REQUEST_TIMEOUT_S = "2"
PATHS = sorted(METHODS)


@contextmanager
def serving(tmp_path: Path, **settings: str) -> Iterator[ServiceProcess]:
    service = ServiceProcess(tmp_path / "data", jwt_secret=JWT_SECRET, shutdown_grace_s="1", **settings)
    try:
        yield service
    finally:
        service.terminate()


class Stalled:
    """Calls that send their headers and then nothing: each request iterator
    blocks until the test ends."""

    def __init__(self) -> None:
        self.calls: list[grpc.Future] = []
        self._released = threading.Event()

    def _nothing(self) -> Iterator[bytes]:
        self._released.wait()
        yield from ()

    def unary(self, channel: grpc.Channel, path: str, metadata) -> None:
        """A call of a unary method that never sends its request."""
        call = channel.stream_unary(path, request_serializer=None, response_deserializer=None)
        self.calls.append(call.future(self._nothing(), metadata=metadata))

    def streaming(self, channel: grpc.Channel, path: str, metadata) -> None:
        """The same on the wire, sent as a bidirectional stream."""
        call = channel.stream_stream(path, request_serializer=None, response_deserializer=None)
        self.calls.append(call(self._nothing(), metadata=metadata))

    def still_open(self) -> int:
        return sum(not call.done() for call in self.calls)

    def endings(self) -> Counter:
        """How each call ended ('still open' if it did not, in ENDING_WAIT_S)."""
        deadline = time.monotonic() + ENDING_WAIT_S
        endings: Counter = Counter()
        for call in self.calls:
            try:
                call.exception(timeout=max(0.0, deadline - time.monotonic()))
            except grpc.FutureTimeoutError:
                endings["still open"] += 1
            else:
                endings[call.code().name] += 1
        return endings

    def release(self) -> None:
        for call in self.calls:
            call.cancel()
        self._released.set()


def calls_in_flight_besides(service: ServiceProcess, stalled: Stalled) -> float:
    """A lower bound of the calls the service is handling other than the
    stalled ones. The stalled calls are counted on our side first: the server
    ends a call before its caller sees it end, so at the later scrape it holds
    at most as many of them as we counted."""
    stalled_open = stalled.still_open()
    return service.metric("feedback_rpc_in_flight") - stalled_open


@contextmanager
def stalled_calls() -> Iterator[Stalled]:
    stalled = Stalled()
    try:
        yield stalled
    finally:
        stalled.release()


class Streams:
    """Public streams held open by the test: Health/Watch, and reflection
    streams that ask one question and keep the stream open."""

    def __init__(self) -> None:
        self.open: list = []
        self._done = threading.Event()

    def watch(self, channel: grpc.Channel):
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        self.open.append(stream)
        return stream

    def reflection(self, channel: grpc.Channel):
        def requests():
            yield reflection_pb2.ServerReflectionRequest(list_services="")
            self._done.wait()

        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(requests())
        self.open.append(stream)
        return stream

    def close(self) -> None:
        for stream in self.open:
            stream.cancel()
        self._done.set()


@contextmanager
def public_streams() -> Iterator[Streams]:
    streams = Streams()
    try:
        yield streams
    finally:
        streams.close()


def first_answer(stream) -> str:
    """'answered' if the stream's first response came, else its status."""
    try:
        next(stream)
    except grpc.RpcError as error:
        return error.code().name
    return "answered"


def first_answers(streams: list) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(first_answer, streams, timeout=ENDING_WAIT_S))


@pytest.fixture
def connect() -> Iterator[Callable[[str], grpc.Channel]]:
    """Opens client connections of their own; closes them after the test."""
    channels: list[grpc.Channel] = []

    def connect_(address: str) -> grpc.Channel:
        channels.append(separate_channel(address))
        return channels[-1]

    yield connect_
    for channel in channels:
        channel.close()


def health(channel: grpc.Channel) -> str:
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S
        )
    except grpc.RpcError as error:
        return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def create_future(client: Client, user: str) -> grpc.Future:
    request = pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1, comment=f"by {user}")
    return client.feedback.CreateFeedback.future(request, metadata=as_user(user), timeout=CALL_TIMEOUT_S)


def stats_future(client: Client) -> grpc.Future:
    request = pb.GetFeedbackStatsRequest(thread_id="t1", run_id="r1")
    return client.feedback.GetFeedbackStats.future(request, metadata=as_service(), timeout=CALL_TIMEOUT_S)


def codes(futures: list[grpc.Future]) -> Counter:
    return Counter(outcome(future).name for future in futures)


# --- stalled callers ------------------------------------------------------------------------


def test_a_stalled_client_starves_neither_health_checks_nor_authenticated_callers(tmp_path, connect):
    """300 calls held by one client without credentials: 240 that never send
    their request, and 60 Health/Watch streams."""
    with (
        serving(tmp_path, max_concurrent_rpcs="200", request_timeout_s=REQUEST_TIMEOUT_S) as service,
        stalled_calls() as stalled,
        public_streams() as streams,
    ):
        other = Client(connect(service.address))
        register(other, "t1", "", ["r1"])
        greedy = connect(service.address)
        for i in range(300):
            if i % 5 == 4:
                streams.watch(greedy)
            elif i % 2:
                stalled.unary(greedy, PATHS[i % len(PATHS)], [])
            else:
                stalled.streaming(greedy, PATHS[i % len(PATHS)], [])

        # First a round trip on the stalled connection: the server has had every one of its calls.
        on_the_same_connection = health(greedy)
        same = Client(greedy)
        stats = [stats_future(client) for client in (other, same) for _ in range(5)]
        creates = [
            create_future(client, f"{name}{i}")
            for name, client in (("o", other), ("s", same))
            for i in range(5)
        ]
        answers = {
            "Health/Check on another connection": health(other.channel),
            "Health/Check on the stalled client's connection": on_the_same_connection,
            "GetFeedbackStats as a service": codes(stats),
            "CreateFeedback as users": codes(creates),
        }
        assert answers == {
            "Health/Check on another connection": "SERVING",
            "Health/Check on the stalled client's connection": "SERVING",
            "GetFeedbackStats as a service": {"OK": 10},
            "CreateFeedback as users": {"OK": 10},
        }
        assert Counter(first_answers(streams.open)) == {"answered": 10, "RESOURCE_EXHAUSTED": 50}
        endings = stalled.endings()
        assert set(endings) <= {"DEADLINE_EXCEEDED", "UNAUTHENTICATED"}, endings


def test_stalled_calls_with_credentials_are_dropped_and_do_not_count_against_the_limit(tmp_path, connect):
    with (
        serving(
            tmp_path,
            max_concurrent_rpcs="5",
            request_timeout_s=REQUEST_TIMEOUT_S,
            metrics_listen="127.0.0.1:0",
        ) as service,
        stalled_calls() as stalled,
    ):
        client = Client(connect(service.address))
        register(client, "t1", "", ["r1"])
        greedy = connect(service.address)
        for i in range(20):
            (stalled.unary if i % 2 else stalled.streaming)(greedy, PATHS[i % len(PATHS)], as_service())

        # First a round trip on the stalled connection: the server has had every one of its calls.
        on_the_same_connection = health(greedy)
        with sqlite_write_lock(tmp_path / "data" / "feedback.db"):
            creates = [create_future(client, f"user{i}") for i in range(5)]
            # The five are in flight at once, waiting for the database.
            wait_until(lambda: calls_in_flight_besides(service, stalled) >= 5)
        answers = {"Health/Check": on_the_same_connection, "five CreateFeedback at once": codes(creates)}
        assert answers == {"Health/Check": "SERVING", "five CreateFeedback at once": {"OK": 5}}
        assert stalled.endings() == {"DEADLINE_EXCEEDED": 20}


def test_health_checks_answer_when_the_concurrency_limit_is_reached(tmp_path, connect):
    with serving(tmp_path, max_concurrent_rpcs="2", metrics_listen="127.0.0.1:0") as service:
        client = Client(connect(service.address))
        register(client, "t1", "", ["r1"])
        with sqlite_write_lock(tmp_path / "data" / "feedback.db"):
            held = [create_future(client, f"user{i}") for i in range(2)]
            # Both are in flight, waiting for the database.
            wait_until(lambda: service.metric("feedback_rpc_in_flight") == 2)
            answers = {
                "Health/Check": health(client.channel),
                "Health/Check on another connection": health(connect(service.address)),
                "a third authenticated call": outcome(create_future(client, "user2")).name,
            }
        assert answers == {
            "Health/Check": "SERVING",
            "Health/Check on another connection": "SERVING",
            "a third authenticated call": "RESOURCE_EXHAUSTED",
        }
        assert codes(held) == {"OK": 2}


# --- public streams -------------------------------------------------------------------------


def test_public_streams_are_bounded_per_connection(tmp_path, connect):
    with serving(tmp_path) as service, public_streams() as streams:
        greedy = connect(service.address)
        opened = [stream for _ in range(8) for stream in (streams.watch(greedy), streams.reflection(greedy))]
        answers = first_answers(opened)
        assert Counter(answers) == {"answered": 10, "RESOURCE_EXHAUSTED": 6}

        other = connect(service.address)
        assert first_answer(streams.watch(other)) == "answered"
        assert first_answer(streams.reflection(other)) == "answered"
        assert health(greedy) == "SERVING"

        # A stream that ends gives its place to a new one.
        held = [stream for stream, answer in zip(opened, answers, strict=True) if answer == "answered"]
        held[0].cancel()
        wait_until(lambda: first_answer(streams.watch(greedy)) == "answered")


def test_public_streams_are_bounded_in_total(tmp_path, connect):
    with serving(tmp_path) as service, public_streams() as streams:
        clients = [connect(service.address) for _ in range(11)]
        for channel in clients:
            for _ in range(10):
                streams.watch(channel)
        assert Counter(first_answers(streams.open)) == {"answered": 100, "RESOURCE_EXHAUSTED": 10}
        assert health(connect(service.address)) == "SERVING"

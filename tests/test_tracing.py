"""Traces across services: a caller's span, the server span of each RPC that
continues it, and the database spans under that, through a real channel;
in-process with the SDK's in-memory exporter, and from a real server
process to an OTLP/HTTP endpoint this test runs."""

import gzip
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import thread_registry_pb2 as registry_pb2
from feedback_client import (
    FeedbackClient,
    NotFound,
    Unauthenticated,
    bearer_token,
    on_behalf_of,
    service_token,
)
from tests.harness import (
    SERVICE_TOKEN,
    ServiceProcess,
    running_server,
    server_settings,
    user_token,
    wait_until,
)

COMMENT = "a private comment about run r1"
# Minted at collection: it must outlive the whole suite, which takes more than
# the default 10 minutes on a loaded machine.
ALICE_TOKEN = user_token("alice", ttl_s=24 * 3600)


def caller_tracer() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def every_value(span: ReadableSpan) -> list[str]:
    """Everything a span carries as text: name, attributes, events, status."""
    values = [span.name, span.status.description or ""]
    values += [str(value) for value in (span.attributes or {}).values()]
    for event in span.events:
        values += [event.name, *(str(value) for value in (event.attributes or {}).values())]
    return values


DB_SYSTEMS = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mysql"}


@pytest.fixture
def traced(database_url, tmp_path) -> Iterator[tuple[str, TracerProvider, InMemorySpanExporter, str]]:
    """A server traced to an in-memory exporter, with alice's thread t1 (run
    r1), once per backend."""
    provider, exporter = caller_tracer()
    with running_server(server_settings(tmp_path, database_url=database_url), provider) as (server, _):
        with FeedbackClient(server.address, service_token(SERVICE_TOKEN)) as platform:
            platform.registry.RegisterThread(
                registry_pb2.RegisterThreadRequest(thread_id="t1", owner_user_id="alice")
            )
            platform.registry.RegisterRun(registry_pb2.RegisterRunRequest(thread_id="t1", run_id="r1"))
        exporter.clear()
        yield server.address, provider, exporter, DB_SYSTEMS[database_url.partition(":")[0]]


def test_client_and_server_spans_form_one_trace(traced):
    address, provider, exporter, db_system = traced
    tracer = provider.get_tracer("caller")
    with FeedbackClient(address, bearer_token(ALICE_TOKEN)) as client:
        with tracer.start_as_current_span("rate run", kind=SpanKind.CLIENT) as caller:
            request = pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1, comment=COMMENT)
            client.feedback.CreateFeedback(request)
            client.feedback.GetFeedbackStats(pb.GetFeedbackStatsRequest(thread_id="t1", run_id="r1"))
    wait_until(lambda: len([s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]) == 2)
    spans = exporter.get_finished_spans()
    trace_id = caller.get_span_context().trace_id
    assert {span.context.trace_id for span in spans} == {trace_id}

    servers = sorted((s for s in spans if s.kind == SpanKind.SERVER), key=lambda span: span.start_time)
    assert [span.name for span in servers] == [
        "feedback.v1.FeedbackService/CreateFeedback",
        "feedback.v1.FeedbackService/GetFeedbackStats",
    ]
    for span in servers:
        assert span.parent.span_id == caller.get_span_context().span_id
        assert span.parent.is_remote
        assert span.attributes["rpc.system"] == "grpc"
        assert span.attributes["rpc.service"] == "feedback.v1.FeedbackService"
        assert span.attributes["rpc.method"] == span.name.rpartition("/")[2]
        assert span.attributes["rpc.grpc.status_code"] == 0
        assert span.attributes["feedback.principal_kind"] == "user"
        assert span.status.status_code == StatusCode.UNSET

    create, stats = servers
    database = {span.name: span for span in spans if span.name.startswith("db ")}
    assert set(database) == {"db create_feedback", "db stats_for_runs"}  # one unit of work per RPC
    assert database["db create_feedback"].parent.span_id == create.context.span_id
    assert database["db stats_for_runs"].parent.span_id == stats.context.span_id
    assert all(span.kind == SpanKind.CLIENT for span in database.values())
    assert {span.attributes["db.system"] for span in database.values()} == {db_system}

    for span in spans:
        for value in every_value(span):
            assert ALICE_TOKEN not in value and COMMENT not in value, (span.name, value)


def test_failed_calls_carry_their_status_code_and_caller(traced):
    address, _provider, exporter, _db_system = traced
    with FeedbackClient(address, service_token(SERVICE_TOKEN)) as client:
        with pytest.raises(NotFound):
            client.feedback.DeleteRunFeedback(
                pb.DeleteRunFeedbackRequest(thread_id="t1", run_id="r1"), metadata=on_behalf_of("bob")
            )
    with FeedbackClient(address, bearer_token("not-a-jwt")) as client:
        with pytest.raises(Unauthenticated):
            client.feedback.ListFeedback(pb.ListFeedbackRequest(thread_id="t1", run_id="r1"))

    def server_spans() -> list[ReadableSpan]:
        spans = [span for span in exporter.get_finished_spans() if span.kind == SpanKind.SERVER]
        return sorted(spans, key=lambda span: span.start_time)

    wait_until(lambda: len(server_spans()) == 2)  # a span ends just after its status is sent
    not_found, unauthenticated = server_spans()
    assert not_found.attributes["rpc.grpc.status_code"] == 5
    assert not_found.attributes["feedback.principal_kind"] == "delegated"
    assert unauthenticated.attributes["rpc.grpc.status_code"] == 16
    assert "feedback.principal_kind" not in unauthenticated.attributes  # nobody was authenticated
    # The caller's mistakes are not the server's errors.
    assert not_found.status.status_code == unauthenticated.status.status_code == StatusCode.UNSET


# --- a real server process exporting over OTLP/HTTP ------------------------------------


class Collector(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP endpoint: keeps every ExportTraceServiceRequest it receives."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.received: list[ExportTraceServiceRequest] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def spans(self) -> list:
        return [
            (resource_spans.resource, span)
            for request in list(self.received)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]


class _Receive(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert self.path == "/v1/traces"
        assert self.headers["Content-Type"] == "application/x-protobuf"
        self.server.received.append(ExportTraceServiceRequest.FromString(body))
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def otlp_env(collector: Collector) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def attribute_value(value) -> object:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def test_a_server_process_exports_its_spans_over_otlp_http(tmp_path, collector):
    service = ServiceProcess(tmp_path / "data", env=otlp_env(collector), log_format="json")
    try:
        tracer = TracerProvider().get_tracer("caller")
        with FeedbackClient(service.address, service_token(SERVICE_TOKEN)) as client:
            with tracer.start_as_current_span("register") as caller:
                client.registry.RegisterThread(registry_pb2.RegisterThreadRequest(thread_id="t1"))
            client.registry.RegisterRun(registry_pb2.RegisterRunRequest(thread_id="t1", run_id="r1"))
        trace_id = caller.get_span_context().trace_id.to_bytes(16, "big")
        wait_until(lambda: len(collector.spans()) >= 4)
    finally:
        assert service.terminate() == 0

    resource, server = next((r, s) for r, s in collector.spans() if s.name.endswith("/RegisterThread"))
    assert {a.key: attribute_value(a.value) for a in resource.attributes}[
        "service.name"
    ] == "feedback-service"
    assert server.trace_id == trace_id
    assert server.parent_span_id == caller.get_span_context().span_id.to_bytes(8, "big")
    assert server.kind == server.SPAN_KIND_SERVER
    found = {a.key: attribute_value(a.value) for a in server.attributes}
    assert found["rpc.method"] == "RegisterThread"
    assert found["rpc.grpc.status_code"] == 0
    assert found["feedback.principal_kind"] == "service"
    database = [s for _, s in collector.spans() if s.parent_span_id == server.span_id]
    assert [s.name for s in database] == ["db register_thread"]
    assert {a.key: attribute_value(a.value) for a in database[0].attributes} == {"db.system": "sqlite"}

    # The access log names the trace: the caller's, or a new one the server began.
    traced_line, untraced_line = (
        entry for entry in service.access_lines() if entry["method"].startswith("/feedback.v1.ThreadRegistry")
    )
    assert traced_line["trace_id"] == trace_id.hex()
    new_trace = next(s for _, s in collector.spans() if s.name.endswith("/RegisterRun")).trace_id
    assert untraced_line["trace_id"] == new_trace.hex() != trace_id.hex()


def test_without_otel_settings_nothing_is_traced_and_log_lines_have_no_trace_id(tmp_path):
    service = ServiceProcess(tmp_path / "data", log_format="json")
    try:
        caller = TracerProvider().get_tracer("caller")
        with FeedbackClient(service.address, service_token(SERVICE_TOKEN)) as client:
            with caller.start_as_current_span("register"):
                client.registry.RegisterThread(registry_pb2.RegisterThreadRequest(thread_id="t1"))
    finally:
        assert service.terminate() == 0
    (line,) = service.access_lines()
    assert line["code"] == "OK"
    assert "trace_id" not in line
    assert not any("tracing on" in log for log in service.log)


def test_an_exporter_that_is_not_installed_is_refused_in_one_line(tmp_path):
    with pytest.raises(AssertionError, match="did not start") as raised:
        ServiceProcess(Path(tmp_path / "data"), env={"OTEL_TRACES_EXPORTER": "nonesuch"})
    assert "OTEL_TRACES_EXPORTER names 'nonesuch', which is not installed" in str(raised.value)
    assert "Traceback" not in str(raised.value)

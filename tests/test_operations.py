"""Operating the service: graceful shutdown, deadlines, concurrency limits,
metrics and access logs."""

import json
import re
import signal
import sqlite3
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from feedback.v1 import feedback_pb2 as pb
from tests.harness import (
    JWT_SECRET,
    Client,
    ServiceProcess,
    as_service,
    as_user,
    local_metric,
    metric,
    outcome,
    register,
    running_server,
    scrape,
    server_settings,
    sqlite_write_lock,
    wait_until,
)


def create_future(client: Client, user: str, timeout: float = 20):
    request = pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1, comment=f"by {user}")
    return client.feedback.CreateFeedback.future(request, metadata=as_user(user), timeout=timeout)


def stats_code(client: Client) -> grpc.StatusCode:
    """How a GetFeedbackStats call ends (it reads, so a held write lock does not stop it)."""
    request = pb.GetFeedbackStatsRequest(thread_id="t1", run_id="r1")
    return outcome(client.feedback.GetFeedbackStats.future(request, metadata=as_service(), timeout=5))


def test_sigterm_finishes_in_flight_calls_refuses_new_ones_and_exits_0(tmp_path):
    service = ServiceProcess(
        tmp_path / "data", jwt_secret=JWT_SECRET, shutdown_grace_s="3", metrics_listen="127.0.0.1:0"
    )
    channel = grpc.insecure_channel(service.address)
    client = Client(channel)
    register(client, "t1", "", ["r1"])
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    with sqlite_write_lock(tmp_path / "data" / "feedback.db"):
        in_flight = [create_future(client, f"user{i}") for i in range(3)]
        # The server is handling all three (they wait on the database).
        wait_until(lambda: service.metric("feedback_rpc_in_flight") == 3)
        service.process.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        # Health turns first; then the server stops taking calls.
        late = Client(grpc.insecure_channel(service.address))
        wait_until(lambda: stats_code(late) != grpc.StatusCode.OK)
        assert stats_code(late) == grpc.StatusCode.UNAVAILABLE
    assert [outcome(f) for f in in_flight] == [grpc.StatusCode.OK] * 3
    assert service.process.wait(30) == 0
    rows = (
        sqlite3.connect(tmp_path / "data" / "feedback.db").execute("SELECT COUNT(*) FROM feedback").fetchone()
    )
    assert rows == (3,)


def test_work_whose_deadline_passed_in_the_queue_never_reaches_the_database(tmp_path):
    # No periodic health probe: the database thread in use is the writer's alone.
    with running_server(server_settings(tmp_path, health_interval_s=3600)) as (_, client):
        register(client, "t1", "", ["r1"])
        # The prune that every server runs at start (on the writer thread, queued
        # before anything registered after it) must be over before we count.
        in_use = lambda: local_metric("feedback_db_connections_in_use")  # noqa: E731
        wait_until(lambda: in_use() == 0)
        writing = lambda: in_use() == 1  # noqa: E731
        with sqlite_write_lock(tmp_path / "feedback.db"):
            patient = create_future(client, "patient", timeout=20)
            wait_until(writing)  # patient holds the one writer thread; the next call queues behind it
            hasty = create_future(client, "hasty", timeout=0.5)
            assert outcome(hasty) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert outcome(patient) == grpc.StatusCode.OK
        # The writer takes work in order: once a write queued after hasty's
        # reaches the database, hasty's work has had its turn.
        with sqlite_write_lock(tmp_path / "feedback.db"):
            later = create_future(client, "later", timeout=20)
            wait_until(writing)
        assert outcome(later) == grpc.StatusCode.OK
        listed = client.feedback.ListFeedback(
            pb.ListFeedbackRequest(thread_id="t1", run_id="r1"), metadata=as_service()
        )
        assert sorted(f.user_id for f in listed.feedback) == ["later", "patient"]


def test_calls_past_the_concurrency_limit_are_resource_exhausted(tmp_path):
    with running_server(server_settings(tmp_path, max_concurrent_rpcs=2)) as (_, client):
        register(client, "t1", "", ["r1"])
        with sqlite_write_lock(tmp_path / "feedback.db"):
            calls = [create_future(client, f"user{i}") for i in range(6)]
            # Two hold their places on the database; the other four are answered at once.
            wait_until(lambda: sum(call.done() for call in calls) == 4)
        codes = [outcome(call) for call in calls]
        assert codes.count(grpc.StatusCode.OK) == 2
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4


def test_metrics_and_access_log_show_the_traffic(tmp_path):
    service = ServiceProcess(
        tmp_path / "data", jwt_secret=JWT_SECRET, metrics_listen="127.0.0.1:0", log_format="json"
    )
    try:
        wait_until(lambda: any("metrics on" in line for line in service.log))
        port = int(re.search(r"metrics on .* \(port (\d+)\)", "".join(service.log)).group(1))
        client = Client(grpc.insecure_channel(service.address))
        register(client, "t1", "", ["r1"])
        secret_comment = "a comment that must never reach the logs"
        for user, rating in (("u1", 1), ("u2", 1), ("u3", -1)):
            client.feedback.CreateFeedback(
                pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=rating, comment=secret_comment),
                metadata=as_user(user),
            )
        with pytest.raises(grpc.RpcError):
            client.feedback.CreateFeedback(
                pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1), metadata=as_user("u1")
            )
        with pytest.raises(grpc.RpcError):
            client.feedback.GetFeedbackStats(pb.GetFeedbackStatsRequest(thread_id="t1", run_id="r1"))
        service_name = "feedback.v1.FeedbackService"
        requests = "feedback_rpc_requests_total"
        # An aborted call is counted just after its status is sent, so the
        # client may see the failure first: wait for the two failed calls.
        failed = [("CreateFeedback", "ALREADY_EXISTS"), ("GetFeedbackStats", "UNAUTHENTICATED")]
        wait_until(
            lambda: all(
                (requests, frozenset({("service", service_name), ("method", m), ("code", c)})) in scrape(port)
                for m, c in failed
            )
        )
        samples = scrape(port)
        assert metric(samples, requests, service=service_name, method="CreateFeedback", code="OK") == 3
        assert (
            metric(samples, requests, service=service_name, method="CreateFeedback", code="ALREADY_EXISTS")
            == 1
        )
        assert (
            metric(samples, requests, service=service_name, method="GetFeedbackStats", code="UNAUTHENTICATED")
            == 1
        )
        assert metric(samples, "feedback_written_total", method="CreateFeedback", rating="positive") == 2
        assert metric(samples, "feedback_written_total", method="CreateFeedback", rating="negative") == 1
        count = metric(
            samples, "feedback_rpc_duration_seconds_count", service=service_name, method="CreateFeedback"
        )
        assert count == 4
        assert metric(samples, "feedback_rpc_in_flight") == 0
        assert metric(samples, "feedback_db_connections_max") >= 1

        wait_until(lambda: sum('"logger": "feedback_service.access"' in line for line in service.log) >= 7)
        access = [json.loads(line) for line in service.log if '"feedback_service.access"' in line]
        creates = [entry for entry in access if entry["method"].endswith("/CreateFeedback")]
        assert [(e["code"], e["principal_kind"], e["principal_id"]) for e in creates] == [
            ("OK", "user", "u1"),
            ("OK", "user", "u2"),
            ("OK", "user", "u3"),
            ("ALREADY_EXISTS", "user", "u1"),
        ]
        assert all(e["peer"].startswith("ipv4:127.0.0.1:") and e["duration_ms"] >= 0 for e in creates)
        registry = [e for e in access if "/feedback.v1.ThreadRegistry/" in e["method"]]
        assert {(e["principal_kind"], e["principal_id"]) for e in registry} == {("service", "platform")}
        log_text = "".join(service.log)
        assert secret_comment not in log_text
        assert as_user("u1")[0][1].split()[-1] not in log_text
    finally:
        assert service.terminate() == 0


def test_health_reports_each_service(sqlite_client):
    health = health_pb2_grpc.HealthStub(sqlite_client.channel)
    for service in ("", "feedback.v1.FeedbackService", "feedback.v1.ThreadRegistry"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as unknown:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'no.such.Service'" in unknown.value.details()


def test_health_check_echoes_an_unknown_name_escaped_and_bounded(sqlite_client):
    health = health_pb2_grpc.HealthStub(sqlite_client.channel)
    with pytest.raises(grpc.RpcError) as unknown:
        health.Check(health_pb2.HealthCheckRequest(service="x\n2026-01-01 INFO forged" + "y" * 5000))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "\n" not in unknown.value.details()
    assert len(unknown.value.details()) < 120


def test_health_list_gives_every_service_with_its_status(sqlite_client):
    listed = health_pb2_grpc.HealthStub(sqlite_client.channel).List(health_pb2.HealthListRequest())
    assert {name: s.status for name, s in listed.statuses.items()} == {
        name: health_pb2.HealthCheckResponse.SERVING
        for name in ("", "feedback.v1.FeedbackService", "feedback.v1.ThreadRegistry")
    }


def test_sigterm_ends_watch_reflection_and_stalled_calls_at_once_with_a_clean_log(tmp_path):
    from grpc_reflection.v1alpha import reflection_pb2

    service = ServiceProcess(
        tmp_path / "data", jwt_secret=JWT_SECRET, shutdown_grace_s="30", metrics_listen="127.0.0.1:0"
    )
    channel = grpc.insecure_channel(service.address)
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    released = threading.Event()

    def stalled():  # sends nothing until the test ends
        released.wait()
        yield from ()

    def asks_once_then_stalls():
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        yield from stalled()

    reflection = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
    )(asks_once_then_stalls())
    create = channel.stream_unary("/feedback.v1.FeedbackService/CreateFeedback").future(
        stalled(), metadata=as_service()
    )
    try:
        next(reflection)  # its first answer: the reflection stream is open on the server
        wait_until(lambda: service.metric("feedback_rpc_in_flight") == 1)  # and the stalled call
        service.process.send_signal(signal.SIGTERM)
        assert [m.status for m in watch] == [health_pb2.HealthCheckResponse.NOT_SERVING]
        # Well before the 30 s grace period: nothing held the shutdown.
        assert service.process.wait(10) == 0
        with pytest.raises(grpc.RpcError) as ended:
            next(reflection)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert outcome(create) == grpc.StatusCode.UNAVAILABLE
    finally:
        released.set()
    service.terminate()
    log = "".join(service.log)
    assert "Traceback" not in log and " ERROR " not in log, log


@pytest.mark.parametrize("enabled", [True, False])
def test_reflection_can_be_turned_off(tmp_path, enabled):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with running_server(server_settings(tmp_path, reflection=enabled)) as (_, client):
        stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        if enabled:
            names = {
                s.name
                for s in next(stub.ServerReflectionInfo(iter([request]))).list_services_response.service
            }
            assert "feedback.v1.FeedbackService" in names
        else:
            with pytest.raises(grpc.RpcError) as refused:
                next(stub.ServerReflectionInfo(iter([request])))
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED

"""The `feedback-service` command as operators run it: a real process, driven
with generated stubs and with the real grpcurl binary through reflection."""

import functools
import json
import os
import signal
import socket
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from feedback.v1 import feedback_pb2 as pb
from tests.harness import BIN, SERVICE_TOKEN, Client, ServiceProcess, as_service, register, service_env


@pytest.fixture
def service(tmp_path):
    process = ServiceProcess(tmp_path / "data")
    yield process
    if process.process.poll() is None:
        process.process.kill()
        process.process.wait()


def grpcurl(service: ServiceProcess, *args: str, headers: tuple[str, ...] = ()) -> str:
    command = [str(BIN / "grpcurl"), "-plaintext"]
    for header in headers:
        command += ["-H", header]
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_health_reports_serving(service):
    with grpc.insecure_channel(service.address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_first_run_generates_a_jwt_secret_and_says_where(service, tmp_path):
    secret_file = tmp_path / "data" / "jwt_secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert any(str(secret_file) in line for line in service.log)
    assert not any(secret_file.read_text().strip() in line for line in service.log)


def test_sigterm_exits_cleanly_and_data_survives_a_restart(tmp_path):
    first = ServiceProcess(tmp_path / "data")
    token = first.token("alice")
    with grpc.insecure_channel(first.address) as channel:
        client = Client(channel)

        register(client, "t1", "alice", ["r1"])
        created = client.feedback.CreateFeedback(
            pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1, comment="kept"),
            metadata=[("authorization", f"Bearer {token}")],
        )
    assert first.terminate() == 0
    second = ServiceProcess(tmp_path / "data")
    try:
        with grpc.insecure_channel(second.address) as channel:
            listed = Client(channel).feedback.ListFeedback(
                pb.ListFeedbackRequest(thread_id="t1", run_id="r1"), metadata=as_service()
            )
        assert list(listed.feedback) == [created]
        # The token minted before the restart still verifies: the secret persisted.
        with grpc.insecure_channel(second.address) as channel:
            stats = Client(channel).feedback.GetFeedbackStats(
                pb.GetFeedbackStatsRequest(thread_id="t1", run_id="r1"),
                metadata=[("authorization", f"Bearer {token}")],
            )
        assert stats.total == 1
    finally:
        assert second.terminate() == 0


def test_grpcurl_lists_and_describes_with_comments(service):
    services = grpcurl(service, service.address, "list").split()
    assert {"feedback.v1.FeedbackService", "feedback.v1.ThreadRegistry", "grpc.health.v1.Health"} <= set(
        services
    )
    described = grpcurl(service, service.address, "describe", "feedback.v1.FeedbackService.CreateFeedback")
    assert "Rates a run." in described
    assert "ALREADY_EXISTS" in described
    message = grpcurl(service, service.address, "describe", "feedback.v1.CreateFeedbackRequest")
    assert "+1 or -1; anything else is INVALID_ARGUMENT." in message


def test_grpcurl_walkthrough(service):
    platform = (f"x-service-token: {SERVICE_TOKEN}",)
    user = (f"authorization: Bearer {service.token('alice')}",)
    grpcurl(
        service,
        "-d",
        '{"thread_id": "t1", "owner_user_id": "alice"}',
        service.address,
        "feedback.v1.ThreadRegistry/RegisterThread",
        headers=platform,
    )
    grpcurl(
        service,
        "-d",
        '{"thread_id": "t1", "run_id": "r1"}',
        service.address,
        "feedback.v1.ThreadRegistry/RegisterRun",
        headers=platform,
    )
    created = json.loads(
        grpcurl(
            service,
            "-d",
            '{"thread_id": "t1", "run_id": "r1", "rating": 1, "comment": "helpful"}',
            service.address,
            "feedback.v1.FeedbackService/CreateFeedback",
            headers=user,
        )
    )
    assert (created["userId"], created["rating"], created["comment"]) == ("alice", 1, "helpful")
    upserted = json.loads(
        grpcurl(
            service,
            "-d",
            '{"thread_id": "t1", "run_id": "r1", "rating": -1, "tags": ["incorrect", "not_as_expected"]}',
            service.address,
            "feedback.v1.FeedbackService/UpsertFeedback",
            headers=user,
        )
    )
    assert upserted["feedbackId"] == created["feedbackId"]
    assert upserted["tags"] == ["incorrect", "not_as_expected"]
    call = functools.partial(feedback_call, service, headers=user)
    call("UpsertFeedback", {"thread_id": "t1", "run_id": "r1", "message_id": "m1", "rating": 1})
    stats = call("GetFeedbackStats", {"thread_id": "t1", "run_id": "r1", "include_messages": True})
    assert stats == {
        "runId": "r1",
        "total": 1,
        "negative": 1,
        "tags": [{"tag": "incorrect", "count": 1}, {"tag": "not_as_expected", "count": 1}],
        "messages": [{"messageId": "m1", "total": 1, "positive": 1}],
    }
    filtered = call("ListThreadFeedback", {"thread_id": "t1", "rating": -1, "tag": "incorrect"})
    assert [f["feedbackId"] for f in filtered["feedback"]] == [created["feedbackId"]]
    mine = call("BatchGetCallerFeedback", {"thread_id": "t1", "run_ids": ["r1", "r9"]})
    assert [run["runId"] for run in mine["runs"]] == ["r1", "r9"]
    assert mine["runs"][0]["runFeedback"]["feedbackId"] == created["feedbackId"]
    assert [f["messageId"] for f in mine["runs"][0]["messageFeedback"]] == ["m1"]
    thread = call("GetThreadFeedbackStats", {"thread_id": "t1"})
    assert (thread["total"], thread["negative"], thread["runsWithFeedback"]) == (1, 1, 1)
    today = datetime.now(UTC).date()
    days = {
        "bucket": "TIME_BUCKET_DAY",
        "start_time": f"{today - timedelta(days=1)}T00:00:00Z",
        "end_time": f"{today + timedelta(days=1)}T00:00:00Z",
    }
    series = call("GetFeedbackTimeSeries", {"thread_id": "t1", **days})
    assert series == {
        "buckets": [
            {"startTime": f"{today - timedelta(days=1)}T00:00:00Z"},
            {"startTime": f"{today}T00:00:00Z", "negative": 1},
        ]
    }
    assert feedback_call(service, "GetFeedbackTimeSeries", days, headers=platform) == series


def feedback_call(service: ServiceProcess, method: str, request: dict, *, headers: tuple[str, ...]) -> dict:
    """A FeedbackService call through grpcurl; its JSON answer."""
    answer = grpcurl(
        service,
        "-d",
        json.dumps(request),
        service.address,
        f"feedback.v1.FeedbackService/{method}",
        headers=headers,
    )
    return json.loads(answer)


def serve_expecting_exit(data_dir, listen: str, *args: str) -> subprocess.CompletedProcess:
    """`feedback-service serve` that should exit on its own; if it is still
    running after a while, its whole process group (workers too) is killed."""
    process = subprocess.Popen(
        [BIN / "feedback-service", "serve", "--listen", listen, *args],
        env=service_env(data_dir),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        pytest.fail(f"serve on {listen} kept running: {stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, "", stderr)


def assert_refused_in_one_line(result: subprocess.CompletedProcess, listen: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert listen in lines[0] and "--listen" in lines[0] and "FEEDBACK_LISTEN" in lines[0], lines[0]


@pytest.mark.parametrize("args", [(), ("--workers", "2")], ids=["one process", "workers"])
def test_a_busy_port_is_one_line_naming_it_and_a_failure(tmp_path, args):
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        listen = f"127.0.0.1:{occupant.getsockname()[1]}"
        result = serve_expecting_exit(tmp_path / "data", listen, *args)
    assert_refused_in_one_line(result, listen)


def test_workers_do_not_join_another_servers_port(tmp_path):
    # SO_REUSEPORT would let a second server's workers bind beside the first
    # one's and silently take a share of its connections.
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{free.getsockname()[1]}"
    first = ServiceProcess(tmp_path / "first", "--workers", "2", listen=listen, servers=2)
    try:
        result = serve_expecting_exit(tmp_path / "second", listen, "--workers", "2")
    finally:
        assert first.terminate() == 0
    assert_refused_in_one_line(result, listen)


def test_grpcurl_change_feed_request_ids_and_erasure(service):
    platform = (f"x-service-token: {SERVICE_TOKEN}",)
    user = (f"authorization: Bearer {service.token('alice')}",)
    register_call = functools.partial(grpcurl, service, headers=platform)
    register_call(
        "-d",
        '{"thread_id": "t1", "owner_user_id": "alice"}',
        service.address,
        "feedback.v1.ThreadRegistry/RegisterThread",
    )
    register_call(
        "-d", '{"thread_id": "t1", "run_id": "r1"}', service.address, "feedback.v1.ThreadRegistry/RegisterRun"
    )
    call = functools.partial(feedback_call, service, headers=user)
    created = call("CreateFeedback", {"thread_id": "t1", "run_id": "r1", "rating": 1, "comment": "helpful"})
    upserted = call("UpsertFeedback", {"thread_id": "t1", "run_id": "r1", "rating": -1})
    # A create with a request_id, sent twice, answers the same feedback twice.
    request_id = str(uuid.uuid4())
    retried = [
        json.loads(
            grpcurl(
                service,
                "-d",
                json.dumps(
                    {
                        "thread_id": "t1",
                        "run_id": "r1",
                        "message_id": "m1",
                        "rating": 1,
                        "request_id": request_id,
                    }
                ),
                service.address,
                "feedback.v1.FeedbackService/CreateFeedback",
                headers=user,
            )
        )
        for _ in range(2)
    ]
    assert retried[0] == retried[1] and retried[0]["messageId"] == "m1"
    # The platform reads every change so far, then erases alice and reads on from the last cursor.
    changes = stream(
        grpcurl(
            service,
            "-d",
            "{}",
            service.address,
            "feedback.v1.FeedbackService/StreamFeedbackChanges",
            headers=platform,
        )
    )
    assert [(c["kind"], c["feedback"]["feedbackId"]) for c in changes] == [
        ("CHANGE_KIND_CREATED", created["feedbackId"]),
        ("CHANGE_KIND_UPDATED", created["feedbackId"]),
        ("CHANGE_KIND_CREATED", retried[0]["feedbackId"]),
    ]
    assert changes[0]["feedback"] == upserted  # as it is now
    erased = json.loads(
        grpcurl(
            service,
            "-d",
            '{"user_id": "alice"}',
            service.address,
            "feedback.v1.FeedbackService/DeleteUserFeedback",
            headers=platform,
        )
    )
    assert erased == {"deletedFeedback": 2}
    after = stream(
        grpcurl(
            service,
            "-d",
            json.dumps({"after_cursor": changes[-1]["cursor"]}),
            service.address,
            "feedback.v1.FeedbackService/StreamFeedbackChanges",
            headers=platform,
        )
    )
    assert sorted((c["kind"], c["feedback"]["feedbackId"]) for c in after) == sorted(
        [("CHANGE_KIND_DELETED", created["feedbackId"]), ("CHANGE_KIND_DELETED", retried[0]["feedbackId"])]
    )


def stream(output: str) -> list[dict]:
    """The JSON objects grpcurl prints for a server stream, one after another."""
    decoder, objects, position = json.JSONDecoder(), [], 0
    while output[position:].strip():
        position += len(output[position:]) - len(output[position:].lstrip())
        value, position = decoder.raw_decode(output, position)
        objects.append(value)
    return objects


def test_a_malformed_setting_is_one_line_that_never_quotes_a_token(tmp_path):
    secret = "a-token-that-must-not-be-printed"
    env = service_env(tmp_path / "data", service_tokens=secret)  # no name=
    finished = subprocess.run(
        [BIN / "feedback-service", "serve", "--listen", "127.0.0.1:0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert finished.returncode == 2
    assert "FEEDBACK_SERVICE_TOKENS" in finished.stderr
    assert secret not in finished.stderr + finished.stdout
    assert "Traceback" not in finished.stderr

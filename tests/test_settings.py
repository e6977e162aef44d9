"""Settings refuse mistakes: a bad FEEDBACK_* value stops `serve` and
`migrate` with one line that names the variable and never a secret; a typo
in a name is warned about; `config` shows and checks the settings."""

import socket
import subprocess
from pathlib import Path

import grpc
import pytest

from feedback.v1 import feedback_pb2 as pb
from feedback_service.config import SettingError, Settings
from tests.harness import (
    BIN,
    SERVICE_TOKEN,
    as_user,
    register,
    running_server,
    server_settings,
    service_env,
)

SECRET = "s3cret-value-that-must-never-be-printed"
MISSING = "/nonexistent/feedback-h/key.pem"

# (variable without FEEDBACK_, bad value): each is refused on its own.
BAD_VALUES = [
    ("DB_WORKERS", "0"),
    ("DB_WORKERS", "eight"),
    ("LOG_LEVEL", "verbose"),
    ("LOG_FORMAT", "jsn"),
    ("REFLECTION", "ture"),
    ("LISTEN", "localhost"),
    ("LISTEN", "127.0.0.1:70000"),
    ("METRICS_LISTEN", "::1:9090"),
    ("SHUTDOWN_GRACE_S", "-1"),
    ("REQUEST_TIMEOUT_S", "nan"),
    ("KEEPALIVE_TIME_S", "inf"),
    ("HEALTH_INTERVAL_S", "0"),
    ("MAX_MESSAGE_BYTES", "1e9"),
    ("MAX_CONCURRENT_RPCS", "-5"),
    ("WORKERS", "1.5"),
    ("DATABASE_URL", f"oracle://scott:{SECRET}@db.example:1521/feedback"),
    ("DATABASE_URL", "feedback.db"),
    ("JWT_PUBLIC_KEY_FILE", MISSING),
    ("TLS_CERT_FILE", MISSING),
    ("CHANGES_RETENTION", "forever"),
    ("TAGS", "Slow,slow"),
    ("JWT_DEFAULT_SCOPE", "threads:read admin"),
    ("SERVICE_TOKENS", SECRET),
    ("JWT_LEEWAY_S", "\x1b[31m" + "9" * 200),
    ("DATA_DIR", "/dev/null/data"),
    ("JWT_JWKS_FILE", "{garbage}"),
    ("JWT_PUBLIC_KEY_FILE", "{garbage}"),
    ("TLS_CLIENT_CA_FILE", "{garbage}"),
]


def serve(env: dict[str, str], command: str = "serve") -> subprocess.CompletedProcess[str]:
    args = [BIN / "feedback-service", command, *(["--listen", "127.0.0.1:0"] if command == "serve" else [])]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=[f"{n}={v[:12]!r}" for n, v in BAD_VALUES])
def test_a_bad_value_stops_serve_with_one_line_naming_the_variable(tmp_path, name, value):
    garbage = tmp_path / "garbage.pem"  # a file, but not what the setting needs
    garbage.write_text(f"{SECRET}\n")
    value = value.replace("{garbage}", str(garbage))
    finished = serve(service_env(tmp_path / "data") | {f"FEEDBACK_{name}": value})
    assert finished.returncode == 2
    lines = finished.stderr.splitlines()
    assert len(lines) == 1, finished.stderr
    assert f"FEEDBACK_{name}=" in lines[0]
    assert "expected " in lines[0]
    assert "Traceback" not in finished.stderr
    assert SECRET not in finished.stderr + finished.stdout
    assert len(lines[0]) < 400  # the value is cut
    assert "\x1b" not in lines[0]  # and escaped
    assert not (tmp_path / "data").exists()  # nothing was started, not even the database


@pytest.mark.parametrize("option", [["--listen", "localhost"], ["--workers", "0"]])
def test_a_bad_option_is_refused_before_serving(tmp_path, option):
    finished = subprocess.run(
        [BIN / "feedback-service", "serve", *option],
        env=service_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert f"argument {option[0]}: '{option[1]}' is not accepted" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_a_bad_value_stops_migrate_too(tmp_path):
    finished = serve(service_env(tmp_path / "data", db_workers="many"), command="migrate")
    assert finished.returncode == 2
    assert finished.stderr.startswith("feedback-service: bad setting: FEEDBACK_DB_WORKERS='many'")


def test_a_secret_is_never_quoted_and_a_url_password_is_masked():
    with pytest.raises(SettingError) as refused:
        Settings.from_env({"FEEDBACK_DATABASE_URL": f"oracle://scott:{SECRET}@db.example/feedback"})
    assert SECRET not in str(refused.value)
    assert "oracle://scott:****@db.example/feedback" in str(refused.value)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_an_unreachable_database_is_one_line_naming_host_and_port(tmp_path, scheme):
    port = closed_port()
    url = f"{scheme}://feedback:{SECRET}@127.0.0.1:{port}/feedback"
    for command in ("serve", "migrate"):
        finished = serve(service_env(tmp_path / "data", database_url=url, db_connect_timeout_s="1"), command)
        assert finished.returncode == 1
        errors = [line for line in finished.stderr.splitlines() if "ERROR" in line]
        assert len(errors) == 1, finished.stderr
        assert f"127.0.0.1:{port}" in errors[0]
        assert "Traceback" not in finished.stderr
        assert SECRET not in finished.stderr + finished.stdout


def test_an_unknown_variable_is_named_in_a_warning(tmp_path):
    env = service_env(tmp_path / "data", reflecton="true", db_workers="x")
    finished = serve(env | {"FEEDBACK_DB_WORKERS": "4"}, command="config")
    assert finished.returncode == 0
    assert "FEEDBACK_REFLECTON (did you mean FEEDBACK_REFLECTION?)" in finished.stderr


def test_config_prints_the_effective_settings_with_secrets_masked(tmp_path):
    env = service_env(tmp_path / "data", jwt_secret=SECRET, log_format="JSON", changes_retention="12h")
    finished = serve(env, command="config")
    assert finished.returncode == 0
    shown = dict(line.split("=", 1) for line in finished.stdout.splitlines())
    assert shown["FEEDBACK_LOG_FORMAT"] == "json"
    assert shown["FEEDBACK_CHANGES_RETENTION"] == "12h"
    assert shown["FEEDBACK_JWT_SECRET"] == shown["FEEDBACK_SERVICE_TOKENS"] == "********"
    assert shown["FEEDBACK_REFLECTION"] == "true"
    assert SECRET not in finished.stdout and SERVICE_TOKEN not in finished.stdout
    assert set(shown) == {f"FEEDBACK_{n.upper()}" for n in Settings.model_fields} - {
        "FEEDBACK_CHANGES_RETENTION_S"
    } | {"FEEDBACK_CHANGES_RETENTION"}
    assert not (tmp_path / "data").exists()  # checking serves nothing and creates nothing


def test_config_checks_without_serving(tmp_path):
    finished = serve(service_env(tmp_path / "data", reflection="maybe"), command="config")
    assert finished.returncode == 2
    assert "FEEDBACK_REFLECTION='maybe'" in finished.stderr


@pytest.mark.parametrize(("word", "value"), [("TRUE", True), ("on", True), ("0", False), ("No", False)])
def test_booleans_accept_a_closed_set_of_words(word, value):
    assert Settings.from_env({"FEEDBACK_REFLECTION": word}).reflection is value


def test_a_blank_value_is_unset():
    assert Settings.from_env({"FEEDBACK_DB_WORKERS": " ", "FEEDBACK_LISTEN": ""}) == Settings()


def test_half_a_tls_configuration_names_both_variables(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(SettingError, match="FEEDBACK_TLS_CERT_FILE and FEEDBACK_TLS_KEY_FILE"):
        Settings.from_env({"FEEDBACK_TLS_CERT_FILE": str(cert)})


def outcome(call, request, metadata) -> grpc.StatusCode:
    try:
        call(request, metadata=metadata)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def delete_own_feedback(client, run_id: str, metadata) -> grpc.StatusCode:
    created = client.feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t1", run_id=run_id, rating=1),
        metadata=as_user("alice", scope="threads:write"),
    )
    request = pb.DeleteFeedbackRequest(thread_id="t1", run_id=run_id, feedback_id=created.feedback_id)
    return outcome(client.feedback.DeleteFeedback, request, metadata)


@pytest.mark.parametrize(
    ("default_scope", "read", "delete"),
    [
        (None, grpc.StatusCode.OK, grpc.StatusCode.OK),
        ("threads:read threads:write", grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED),
        ("", grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_the_default_scope_sets_what_a_token_without_scope_may_do(
    tmp_path: Path, default_scope, read, delete
):
    settings = server_settings(tmp_path, jwt_default_scope=default_scope)
    with running_server(settings) as (_, client):
        register(client, "t1", "alice", ["r1", "r2"])
        alice = as_user("alice")
        stats = pb.GetFeedbackStatsRequest(thread_id="t1", run_id="r1")
        assert outcome(client.feedback.GetFeedbackStats, stats, alice) == read
        assert delete_own_feedback(client, "r1", alice) == delete
        # A token that states its scope keeps it.
        assert (
            delete_own_feedback(client, "r2", as_user("alice", scope="threads:delete")) == grpc.StatusCode.OK
        )


def test_client_certificate_services_are_looked_up_by_identity(tmp_path):
    pem = {"cert": "-----BEGIN CERTIFICATE-----\n", "key": "-----BEGIN PRIVATE KEY-----\n"}
    for name, text in pem.items():
        (tmp_path / f"{name}.pem").write_text(text)
    env = {
        "FEEDBACK_TLS_CERT_FILE": str(tmp_path / "cert.pem"),
        "FEEDBACK_TLS_KEY_FILE": str(tmp_path / "key.pem"),
        "FEEDBACK_TLS_CLIENT_SERVICES": "platform=client.platform.example",
    }
    settings = Settings.from_env(env)
    assert settings.tls_client_services == {"client.platform.example": "platform"}
    shown = dict(settings.shown())
    assert shown["FEEDBACK_TLS_CLIENT_SERVICES"] == "platform=client.platform.example"

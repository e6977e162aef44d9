"""Log injection: caller values holding control characters must never break,
forge or colour a log line, in either log format.

A real `feedback-service serve` process receives every caller value that could
reach its log (JWT header fields and claims, metadata, request ids), each
carrying a line break followed by a forged access line; then its whole log is
read back. The formatters are also checked directly, for what no call of
today's server logs (a record or an exception message quoting a caller)."""

import io
import json
import logging
import re
import sys
import time
from collections.abc import Iterator

import grpc
import pytest

from feedback.v1 import feedback_pb2 as pb
from feedback_service import observability
from feedback_service.observability import AccessLog, JsonFormatter, TextFormatter
from tests.harness import (
    JWT_SECRET,
    SERVICE_TOKEN,
    Client,
    ServiceProcess,
    as_user,
    bearer,
    hand_signed,
)

# C0, DEL, C1, and the Unicode line and paragraph separators.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
BREAKS = ["\n", "\r", "\r\n", "\x1b[2K\r", "\x85", "\u2028", "\u2029", "\x00", "\x7f", "\x0b", "\x0c"]
FORGED_TEXT = '2026-01-01 00:00:00,000 INFO 1 feedback_service.access: {"method": "FORGED", "code": "OK"}'
FORGED_JSON = (
    '{"time": "2026-01-01T00:00:00+0000", "level": "INFO", "logger": "feedback_service.access", '
    '"method": "FORGED"}'
)
HOSTILE = [f"x{brk}{forged}" for brk in BREAKS for forged in (FORGED_TEXT, FORGED_JSON)]
# The text format's prefix: time, level, pid, logger.
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) \d+ (?P<logger>[\w.]+): ")
ACCESS = "feedback_service.access"
STATS = pb.GetFeedbackStatsRequest(thread_id="t-any", run_id="r-any")


# --- a real server process -------------------------------------------------------------------


def hostile_tokens() -> Iterator[str]:
    """Tokens carrying a hostile value in each header field and claim, signed
    with the server's secret or not (both paths must stay clean)."""
    valid = {"sub": "alice", "exp": int(time.time()) + 600}
    for value in HOSTILE:
        for secret in (JWT_SECRET, "another-secret"):
            for header in (
                {"alg": value},
                {"alg": "HS256", "kid": value},
                {"alg": "HS256", "typ": value},
                {"alg": "HS256", "crit": [value]},
                {"alg": "HS256", "crit": value},
                {"alg": "HS256", value: value},
            ):
                yield hand_signed(header, valid, secret=secret)
            for claim in ("sub", "scope", "iss", "aud", "jti", "exp", "nbf", "iat", value):
                yield hand_signed({"alg": "HS256"}, {**valid, claim: value}, secret=secret)


def hostile_calls(client: Client) -> Iterator[tuple[object, object, list]]:
    """(method, request, metadata) for every caller value that could be logged."""
    stats = client.feedback.GetFeedbackStats
    for token in hostile_tokens():
        yield stats, STATS, bearer(token)
    for value in HOSTILE:  # request ids, as a user and as a service
        request = pb.GetFeedbackStatsRequest(thread_id=value, run_id=value)
        yield stats, request, as_user("alice")
        yield stats, request, [("x-service-token", SERVICE_TOKEN)]
        create = pb.CreateFeedbackRequest(thread_id="t", run_id=value, rating=1, comment=value)
        yield (
            client.feedback.CreateFeedback,
            create,
            [("x-service-token", SERVICE_TOKEN), ("x-on-behalf-of", "a")],
        )
    # gRPC carries no control character in a text metadata value (clients
    # refuse to send one), so these are printable, apart from a binary header.
    for name in ("authorization", "x-service-token", "x-on-behalf-of", "x-request-id"):
        yield stats, STATS, [(name, FORGED_TEXT)]
    yield stats, STATS, [*as_user("alice"), ("x-request-id-bin", b"\n\x1b\x00" + FORGED_TEXT.encode())]


def call(method, request, metadata) -> grpc.StatusCode:
    try:
        method(request, metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture(params=["text", "json"])
def hostile_log(request, tmp_path) -> Iterator[tuple[str, list[str], list[grpc.StatusCode]]]:
    """(log format, the server's log lines, the status of each call)."""
    service = ServiceProcess(tmp_path / "data", jwt_secret=JWT_SECRET, log_format=request.param)
    try:
        with grpc.insecure_channel(service.address) as channel:
            codes = [call(*hostile) for hostile in hostile_calls(Client(channel))]
        assert service.terminate() == 0
        yield request.param, service.log, codes
    finally:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait()


def parsed(log_format: str, line: str) -> tuple[str, str, dict]:
    """The line's level, logger and JSON object (in text, only an access line has one)."""
    if log_format == "json":
        entry = json.loads(line)
        assert isinstance(entry, dict) and {"time", "level", "logger"} <= entry.keys(), line
        return entry["level"], entry["logger"], entry
    prefix = TEXT_LINE.match(line)
    assert prefix, f"not a log line: {line!r}"
    entry = json.loads(line[prefix.end() :]) if prefix["logger"] == ACCESS else {}
    return prefix["level"], prefix["logger"], entry


def test_caller_values_never_break_forge_or_colour_a_log_line(hostile_log):
    log_format, lines, codes = hostile_log
    access_lines = 0
    for raw in lines:
        line = raw.removesuffix("\n")
        assert not CONTROL.search(line), f"a control character in {line!r}"
        assert not line.startswith(("2026-01-01", '{"time": "2026-01-01')), f"a forged line: {line!r}"
        level, logger, entry = parsed(log_format, line)
        assert level in ("INFO", "WARNING") and "Traceback" not in line, line
        assert entry.get("method") != "FORGED", line
        access_lines += logger == ACCESS
    assert access_lines == len(codes), "every call writes one access line"
    assert grpc.StatusCode.INTERNAL not in codes


# --- the formatters themselves --------------------------------------------------------------


def record(message: str, *args: object, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("feedback_service.test", logging.WARNING, __file__, 1, message, args, exc_info)


def raised_chain() -> tuple:
    """A chained exception whose messages and note quote a caller."""
    try:
        try:
            raise ValueError(f"bad kid {HOSTILE[0]}")
        except ValueError as first:
            error = KeyError(f"\u2028{FORGED_JSON}")
            error.add_note(f"note\r\n{FORGED_TEXT}")
            raise error from first
    except KeyError:
        return sys.exc_info()


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
@pytest.mark.parametrize("value", HOSTILE[::2], ids=lambda v: repr(v[:6]))
def test_formatters_keep_a_record_quoting_a_caller_on_one_printable_line(formatter, value):
    line = formatter.format(record("caller said %s", value))
    assert "\n" not in line and not CONTROL.search(line), repr(line)
    if isinstance(formatter, JsonFormatter):  # escaped in the value too, not only in the JSON text
        assert not CONTROL.search(json.loads(line)["message"])


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_exception_messages_are_escaped_but_the_traceback_keeps_its_lines(formatter):
    text = formatter.format(record("unexpected error", exc_info=raised_chain()))
    if isinstance(formatter, JsonFormatter):
        text = json.loads(text)["exception"]
        assert "\n" not in formatter.format(record("unexpected error", exc_info=raised_chain()))
    lines = text.split("\n")
    assert not any(CONTROL.search(line) for line in lines)
    assert not any(line.startswith(("2026-01-01", "{")) for line in lines)
    assert lines.count("Traceback (most recent call last):") == 2
    assert "The above exception was the direct cause of the following exception:" in lines
    assert "ValueError: bad kid x\\x0a" + FORGED_TEXT in lines
    assert any(line.startswith("KeyError: ") and "\\u2028" in line for line in lines)
    assert "note\\x0d\\x0a" + FORGED_TEXT in lines


@pytest.mark.parametrize("json_lines", [False, True], ids=["text", "json"])
def test_access_lines_escape_every_control_character(monkeypatch, json_lines):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    access = AccessLog()
    access.configure(json_lines=json_lines)
    for value in HOSTILE:
        access.write({"method": value, "peer": value})
    access.flush()
    lines = stderr.getvalue().splitlines(keepends=True)
    assert len(lines) == len(HOSTILE)
    for line in lines:
        assert not CONTROL.search(line[:-1]), repr(line)
        assert json.loads(line[line.index("{") :])["method"] in HOSTILE


def test_every_log_line_of_a_process_is_escaped_whatever_the_logger(monkeypatch):
    # configure_logging installs the formatters for every logger, ours or a library's.
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        observability.configure_logging("INFO", "text")
        logging.getLogger("some.library").warning("%s", HOSTILE[0])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert stream.getvalue().count("\n") == 1 and not CONTROL.search(stream.getvalue()[:-1])

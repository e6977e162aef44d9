"""Metrics (Prometheus, on their own HTTP port) and logs (one JSON access
line per RPC; everything else in text or JSON). No log line carries a control
character from a caller: it could end the line and forge the next one, or
rewrite a terminal."""

import asyncio
import functools
import json
import logging
import os
import re
import sys
import textwrap
import time
import traceback
from types import TracebackType

from prometheus_client import Counter, Gauge, Histogram, start_http_server

REQUESTS = Counter(
    "feedback_rpc_requests_total",
    "RPCs handled, by service, method and status code",
    ["service", "method", "code"],
)
LATENCY = Histogram(
    "feedback_rpc_duration_seconds",
    "RPC latency from the first interceptor to the response",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge("feedback_rpc_in_flight", "RPCs being handled now")
FEEDBACK_WRITTEN = Counter(
    "feedback_written_total", "Feedback created or upserted, by RPC and rating", ["method", "rating"]
)
RATING_LABELS = {1: "positive", -1: "negative"}


@functools.lru_cache(maxsize=8)
def _written(method: str, rating: int) -> Counter:
    """The counter's child for an RPC and a rating, looked up once."""
    return FEEDBACK_WRITTEN.labels(method, RATING_LABELS[rating])


def count_written(method: str, rating: int) -> None:
    """Counts a feedback that an RPC created or upserted."""
    _written(method, rating).inc()


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators (which
# JSON leaves alone but some log viewers break lines on).
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def escape_controls(text: str) -> str:
    """The text with each control character written as \\xNN or \\uNNNN."""
    return CONTROL_CHARACTERS.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escaped_traceback(error: BaseException | None) -> str:
    """A traceback laid out as Python prints it, its lines being ours, but with
    each exception's message (which may quote a caller) escaped onto one line."""
    if error is None:
        return "NoneType: None"
    parts = []
    for older, link in reversed(_chain(error)):  # the oldest first, as Python prints
        parts += [_one_traceback(older), link]
    return "".join(parts).rstrip("\n")


def _chain(error: BaseException) -> list[tuple[BaseException, str]]:
    """The exception and its causes, newest first, each with the line that
    links it to the one before it in the list."""
    chain, seen, link = [], set(), ""
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, CONTEXT
        else:
            current = None
    return chain


def _one_traceback(error: BaseException) -> str:
    lines = []
    if error.__traceback__ is not None:
        lines += ["Traceback (most recent call last):\n", *traceback.format_tb(error.__traceback__)]
    lines.append(_exception_line(error) + "\n")
    lines += [escape_controls(str(note)) + "\n" for note in getattr(error, "__notes__", None) or ()]
    if isinstance(error, BaseExceptionGroup):
        for number, member in enumerate(error.exceptions, 1):
            lines.append(textwrap.indent(f"[{number}] {escaped_traceback(member)}\n", "  | "))
    return "".join(lines)


def _exception_line(error: BaseException) -> str:
    kind = type(error)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = f"{kind.__module__}.{name}"
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the traceback
        message = "<exception str() failed>"
    return f"{name}: {escape_controls(message)}" if message else name


class JsonFormatter(logging.Formatter):
    """One JSON object per line; an access line carries its fields at top level.
    ensure_ascii escapes every control character in the JSON text, and the
    message is escaped too, for whoever prints the parsed value."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        else:
            entry["message"] = escape_controls(record.getMessage())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True)

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 - logging's name
        return escaped_traceback(ei[1])


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields:
            record.msg, record.args = json.dumps(fields, ensure_ascii=True), ()
        record.exc_text = None  # another handler may have cached an unescaped traceback
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 - logging's name
        return escaped_traceback(ei[1])


class AccessLog:
    """The access log: one line per RPC, shaped like the other log lines,
    written in batches. The logging module's per-record path costs ~60 µs,
    which every RPC would pay on the event loop; a line formatted here and
    written with others costs a few. Lines are at most FLUSH_DELAY_S late and
    are flushed at shutdown."""

    FLUSH_DELAY_S = 0.2
    MAX_BUFFERED = 512
    LOGGER = "feedback_service.access"

    def __init__(self) -> None:
        self._logger = logging.getLogger(self.LOGGER)  # looked up once, not per RPC
        self._lines: list[str] = []
        self._flush_scheduled = False
        self._json = False
        self._second = -1
        self._second_text = ""

    def configure(self, json_lines: bool) -> None:
        self._json = json_lines

    @property
    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, object]) -> None:
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            pattern = "%Y-%m-%dT%H:%M:%S%z" if self._json else "%Y-%m-%d %H:%M:%S"
            self._second_text = time.strftime(pattern, time.localtime(now))
        if self._json:
            entry = {
                "time": self._second_text,
                "level": "INFO",
                "logger": self.LOGGER,
                "pid": os.getpid(),
                **fields,
            }
            self._lines.append(json.dumps(entry, ensure_ascii=True) + "\n")
        else:
            millis = int(now * 1000) % 1000
            prefix = f"{self._second_text},{millis:03d} INFO {os.getpid()} {self.LOGGER}: "
            self._lines.append(prefix + json.dumps(fields, ensure_ascii=True) + "\n")
        if len(self._lines) >= self.MAX_BUFFERED:
            self.flush()
        elif not self._flush_scheduled:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        try:
            asyncio.get_running_loop().call_later(self.FLUSH_DELAY_S, self.flush)
            self._flush_scheduled = True
        except RuntimeError:  # no event loop: write at once
            self.flush()

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._lines:
            lines, self._lines = self._lines, []
            sys.stderr.write("".join(lines))
            sys.stderr.flush()


access_log = AccessLog()


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    access_log.configure(json_lines=log_format == "json")


def log_access(
    method: str,
    code: str,
    duration_s: float,
    principal_kind: str | None,
    principal_id: str | None,
    peer: str,
    trace_id: str | None = None,
) -> None:
    """The access line: who called what, how it ended, how long it took, and
    the trace it belongs to when it is traced. Never a token, and never the
    text of a comment."""
    if not access_log.enabled:
        return
    fields = {
        "method": method,
        "code": code,
        "duration_ms": round(duration_s * 1000, 3),
        "principal_kind": principal_kind,
        "principal_id": principal_id,
        "peer": peer,
    }
    if trace_id:
        fields["trace_id"] = trace_id
    access_log.write(fields)


def start_metrics_server(listen: str) -> int:
    """Serves /metrics over HTTP; returns the port."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "0.0.0.0")  # noqa: S104 - operator's choice
    return server.server_port

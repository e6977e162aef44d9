"""Metrics (Prometheus, on their own HTTP port) and logs (one JSON access
line per RPC; everything else in text or JSON)."""

import asyncio
import json
import logging
import os
import sys
import time

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


class JsonFormatter(logging.Formatter):
    """One JSON object per line; an access line carries its fields at top level."""

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
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields:
            record.msg, record.args = json.dumps(fields, ensure_ascii=False), ()
        return super().format(record)


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
        self._lines: list[str] = []
        self._flush_scheduled = False
        self._json = False
        self._second = -1
        self._second_text = ""

    def configure(self, json_lines: bool) -> None:
        self._json = json_lines

    @property
    def enabled(self) -> bool:
        return logging.getLogger(self.LOGGER).isEnabledFor(logging.INFO)

    def write(self, fields: dict) -> None:
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
            self._lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
        else:
            millis = int(now * 1000) % 1000
            prefix = f"{self._second_text},{millis:03d} INFO {os.getpid()} {self.LOGGER}: "
            self._lines.append(prefix + json.dumps(fields, ensure_ascii=False) + "\n")
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
    method: str, code: str, duration_s: float, principal_kind: str | None, principal_id: str | None, peer: str
) -> None:
    """The access line: who called what, how it ended, how long it took.
    Never a token, and never the text of a comment."""
    if not access_log.enabled:
        return
    access_log.write(
        {
            "method": method,
            "code": code,
            "duration_ms": round(duration_s * 1000, 3),
            "principal_kind": principal_kind,
            "principal_id": principal_id,
            "peer": peer,
        }
    )


def start_metrics_server(listen: str) -> int:
    """Serves /metrics over HTTP; returns the port."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "0.0.0.0")  # noqa: S104 - operator's choice
    return server.server_port

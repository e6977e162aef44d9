"""`feedback-client export`: the feedback that the filters keep, with its
runs' labels, as JSON Lines, CSV or Parquet, from ExportFeedback.

    FEEDBACK_SERVICE_TOKEN=... feedback-client export --label release=2026.12.1 --since 7d -o week.parquet

Exit codes: 0 on success; 2 on a usage error (a bad flag, no token, Parquet
without pyarrow); 1 when the call fails, with one line naming the status.
A progress line is drawn on standard error when it is a terminal.
"""

import argparse
import csv
import io
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from feedback.v1 import feedback_pb2 as pb
from feedback_client.client import FeedbackClient
from feedback_client.credentials import service_token
from feedback_client.errors import FeedbackError

PROG = "feedback-client"
DEFAULT_ADDRESS = "localhost:50051"
TOKEN_VARIABLE = "FEEDBACK_SERVICE_TOKEN"  # noqa: S105 (the variable's name, not a token)
FORMATS = ("jsonl", "csv", "parquet")
# One row per feedback: these columns, in this order, in every format.
COLUMNS = (
    "feedback_id",
    "thread_id",
    "run_id",
    "user_id",
    "message_id",
    "rating",
    "comment",
    "created_at",
    "updated_at",
    "tags",
    "run_labels",
)
RATINGS = {"1": 1, "up": 1, "+1": 1, "-1": -1, "down": -1}
DURATION = re.compile(r"(\d+)([smhdw])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
PYARROW_MISSING = (
    "--format parquet needs pyarrow, which is not installed: "
    "pip install 'feedback-service[export]' (or pip install pyarrow)"
)

Row = dict[str, Any]


class UsageError(Exception):
    """A mistake in the command line or the environment: exit code 2."""


# --- the rows -----------------------------------------------------------------------


def timestamp_text(value: Timestamp) -> str:
    """RFC 3339 in UTC with microseconds, as the service stores times."""
    moment = datetime.fromtimestamp(value.seconds, UTC).replace(microsecond=value.nanos // 1000)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def row_of(item: pb.ExportedFeedback) -> Row:
    feedback = item.feedback
    return {
        "feedback_id": feedback.feedback_id,
        "thread_id": feedback.thread_id,
        "run_id": feedback.run_id,
        "user_id": feedback.user_id,
        "message_id": feedback.message_id,
        "rating": feedback.rating,
        "comment": feedback.comment,
        "created_at": timestamp_text(feedback.created_at),
        "updated_at": timestamp_text(feedback.updated_at),
        "tags": list(feedback.tags),
        "run_labels": dict(sorted(item.run_labels.items())),
    }


# --- the formats --------------------------------------------------------------------


class Writer(Protocol):
    def write(self, rows: list[Row]) -> None: ...

    def close(self) -> None: ...


class JsonLinesWriter:
    """One JSON object per line, UTF-8."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = io.TextIOWrapper(out, encoding="utf-8", newline="\n", write_through=True)

    def write(self, rows: list[Row]) -> None:
        self._out.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))

    def close(self) -> None:
        self._out.flush()
        self._out.detach()


class CsvWriter:
    """A header row, then one row per feedback: tags joined by commas (a tag
    holds none), run_labels as a JSON object."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        self._csv = csv.writer(self._out)
        self._csv.writerow(COLUMNS)

    def write(self, rows: list[Row]) -> None:
        self._csv.writerows(
            [
                *(row[column] for column in COLUMNS[:-2]),
                ",".join(row["tags"]),
                json.dumps(row["run_labels"], ensure_ascii=False),
            ]
            for row in rows
        )

    def close(self) -> None:
        self._out.flush()
        self._out.detach()


class ParquetWriter:
    """A Parquet file: tags a list of strings, run_labels a map of strings,
    times UTC timestamps in microseconds. Written a page at a time."""

    def __init__(self, out: IO[bytes]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self.schema = parquet_schema()
        self._writer = pq.ParquetWriter(out, self.schema)

    def write(self, rows: list[Row]) -> None:
        columns: dict[str, list[Any]] = {column: [row[column] for row in rows] for column in COLUMNS}
        for column in ("created_at", "updated_at"):
            columns[column] = [datetime.fromisoformat(text) for text in columns[column]]
        columns["run_labels"] = [list(labels.items()) for labels in columns["run_labels"]]
        self._writer.write_table(self._pa.table(columns, schema=self.schema))

    def close(self) -> None:
        self._writer.close()


def parquet_schema() -> Any:
    import pyarrow as pa

    text, when = pa.string(), pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            *((column, text) for column in COLUMNS[:5]),
            ("rating", pa.int32()),
            ("comment", text),
            ("created_at", when),
            ("updated_at", when),
            ("tags", pa.list_(text)),
            ("run_labels", pa.map_(text, text)),
        ]
    )


WRITERS: dict[str, type[JsonLinesWriter] | type[CsvWriter] | type[ParquetWriter]] = {
    "jsonl": JsonLinesWriter,
    "csv": CsvWriter,
    "parquet": ParquetWriter,
}


# --- the command line ---------------------------------------------------------------


def label(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def rating(text: str) -> int:
    if text not in RATINGS:
        raise argparse.ArgumentTypeError(f"{text!r} is not up, down, 1 or -1")
    return RATINGS[text]


def duration_s(text: str) -> int:
    match = DURATION.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30m, 12h, 7d or 2w")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description="Command-line tools of feedback-service.")
    commands = top.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export",
        help="export feedback with its runs' labels",
        description="Exports the feedback the filters keep, oldest first, one row per feedback "
        "with its run's labels. Needs a service token: FEEDBACK_SERVICE_TOKEN or --token-file.",
    )
    export.add_argument("--address", default=DEFAULT_ADDRESS, help="HOST:PORT (default %(default)s)")
    export.add_argument(
        "--label", type=label, action="append", default=[], metavar="KEY=VALUE", help="only runs with it"
    )
    export.add_argument("--thread", default="", metavar="THREAD_ID", help="only this thread")
    export.add_argument("--rating", type=rating, default=0, help="up (1) or down (-1) only")
    export.add_argument("--tag", default="", help="only feedback carrying this tag")
    export.add_argument("--since", type=duration_s, metavar="DURATION", help="created in the last 7d, 12h...")
    export.add_argument("--format", choices=FORMATS, default="jsonl", help="default %(default)s")
    export.add_argument("-o", "--output", type=Path, help="the file to write (default: standard output)")
    export.add_argument("--token-file", type=Path, help=f"read the service token here, not {TOKEN_VARIABLE}")
    tls = export.add_argument_group("TLS (as the client library's channel_credentials)")
    tls.add_argument("--tls", action="store_true", help="connect with TLS, trusting the system's CAs")
    tls.add_argument("--tls-ca-file", type=Path, help="trust this CA (PEM) instead; implies --tls")
    tls.add_argument("--tls-cert-file", type=Path, help="present this client certificate (PEM)")
    tls.add_argument("--tls-key-file", type=Path, help="the client certificate's private key (PEM)")
    return top


def service_token_of(args: argparse.Namespace) -> str:
    token: str
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as error:
            raise UsageError(f"cannot read --token-file: {error.strerror}") from None
    else:
        token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise UsageError(f"no service token: set {TOKEN_VARIABLE} or pass --token-file")
    return token


def channel_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """grpc.ssl_channel_credentials from the TLS flags; None for plaintext."""
    if (args.tls_cert_file is None) != (args.tls_key_file is None):
        raise UsageError("--tls-cert-file and --tls-key-file go together")
    files = (args.tls_ca_file, args.tls_key_file, args.tls_cert_file)
    if not args.tls and all(path is None for path in files):
        return None
    try:
        ca, key, cert = (None if path is None else path.read_bytes() for path in files)
    except OSError as error:
        raise UsageError(f"cannot read {error.filename}: {error.strerror}") from None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def export_request(args: argparse.Namespace, now_s: float) -> pb.ExportFeedbackRequest:
    request = pb.ExportFeedbackRequest(
        run_labels=dict(args.label), thread_id=args.thread, rating=args.rating, tag=args.tag
    )
    if args.since is not None:
        request.created_after.FromMicroseconds(int((now_s - args.since) * 1_000_000))
    return request


class Progress:
    """`exported N feedback` redrawn on standard error, on a terminal only."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._shown = stream.isatty()
        self._last = 0.0
        self.count = 0

    def add(self, count: int) -> None:
        self.count += count
        now = time.monotonic()
        if self._shown and now - self._last >= 0.1:
            self._last = now
            self._stream.write(f"\rexported {self.count} feedback")
            self._stream.flush()

    def done(self) -> None:
        if self._shown:
            self._stream.write(f"\rexported {self.count} feedback\n")
            self._stream.flush()


def open_output(path: Path) -> IO[bytes]:
    try:
        return path.open("wb")
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from None


def pages(client: FeedbackClient, request: pb.ExportFeedbackRequest) -> Iterator[list[Row]]:
    for response in client.feedback.ExportFeedback(request, timeout=None):
        yield [row_of(item) for item in response.feedback]


def run_export(args: argparse.Namespace) -> int:
    if args.format == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise UsageError(PYARROW_MISSING) from None
    token = service_token_of(args)
    tls = channel_credentials(args)
    progress = Progress(sys.stderr)
    with ExitStack() as stack:
        out = sys.stdout.buffer if args.output is None else stack.enter_context(open_output(args.output))
        client = stack.enter_context(
            FeedbackClient(args.address, service_token(token), timeout=None, channel_credentials=tls)
        )
        writer = WRITERS[args.format](out)
        for rows in pages(client, export_request(args, time.time())):
            writer.write(rows)
            progress.add(len(rows))
        writer.close()
    progress.done()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits with 2 on a bad flag
    try:
        return run_export(args)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except FeedbackError as error:
        details = " ".join(error.details.split())
        print(f"{PROG}: {error.code.name}: {details}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader of standard output went away
        return 1
    except KeyboardInterrupt:
        return 130


def console_main() -> None:
    sys.exit(main())

"""`feedback-client export`, run as a user runs it (the installed console
script, in a subprocess) against a real server: 100k feedback rows exported
to JSON Lines, CSV and Parquet read back equal to what the database holds;
flags, token, exit codes and the progress line behave as documented."""

import csv
import io
import json
import os
import pty
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.harness import BIN, SERVICE_TOKEN, inspect_database, running_server, server_settings

CLI = BIN / "feedback-client"
ROWS = 100_000
RUNS = 10_000
THREADS = 100
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START_US = 1_764_000_000_000_000  # late November 2025
COMMENTS = ["", "", "fine", 'a "quoted", comma', "two\nlines", "日本語 👍", "tab\there"]
TAGS = ["", "slow", "incorrect,slow", "other"]


def labels_of(run: int) -> dict[str, str]:
    if run % 3 == 2:
        return {}
    return {"release": f"2026.12.{run % 3}", "model": f"m{run % 5}"}


def time_text(micros: int) -> str:
    return (EPOCH + timedelta(microseconds=micros)).isoformat(timespec="microseconds").replace("+00:00", "Z")


def feedback_rows() -> Iterator[tuple]:
    for n in range(1, ROWS + 1):
        run = n % RUNS
        created = START_US + n * 1_000_000
        yield (
            n,
            f"f-{n:06d}",
            f"t-{run % THREADS}",
            f"r-{run}",
            f"u-{n // RUNS}",
            "" if n % 7 else "m-1",
            1 if n % 4 else -1,
            COMMENTS[n % len(COMMENTS)],
            created,
            created + (n % 3) * 1000,
            TAGS[n % len(TAGS)],
        )


def expected_row(row: tuple) -> dict:
    _, feedback_id, thread, run, user, message, rating, comment, created, updated, tags = row
    return {
        "feedback_id": feedback_id,
        "thread_id": thread,
        "run_id": run,
        "user_id": user,
        "message_id": message,
        "rating": rating,
        "comment": comment,
        "created_at": time_text(created),
        "updated_at": time_text(updated),
        "tags": tags.split(",") if tags else [],
        "run_labels": dict(sorted(labels_of(int(run[2:])).items())),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server on SQLite whose database holds 100k feedback rows, written
    straight into its tables (as a restored database would be)."""
    settings = server_settings(tmp_path_factory.mktemp("export-cli"))
    with running_server(settings) as (server, _):
        db = inspect_database(settings.effective_database_url())
        connection = db.connection()
        with connection:
            connection.executemany(
                "INSERT INTO thread (thread_id, owner_user_id, created_at) VALUES (?, '', ?)",
                [(f"t-{t}", START_US) for t in range(THREADS)],
            )
            connection.executemany(
                "INSERT INTO run (run_id, thread_id, created_at) VALUES (?, ?, ?)",
                [(f"r-{r}", f"t-{r % THREADS}", START_US) for r in range(RUNS)],
            )
            connection.executemany(
                "INSERT INTO run_label (run_id, key, value) VALUES (?, ?, ?)",
                [(f"r-{r}", key, value) for r in range(RUNS) for key, value in labels_of(r).items()],
            )
            connection.executemany(
                "INSERT INTO feedback (id, feedback_id, thread_id, run_id, user_id, message_id, rating,"
                " comment, created_at, updated_at, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                feedback_rows(),
            )
        db.close()
        yield server


def export(server, *flags: str, token: str | None = SERVICE_TOKEN, **kwargs) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "FEEDBACK_SERVICE_TOKEN"}
    if token is not None:
        env["FEEDBACK_SERVICE_TOKEN"] = token
    return subprocess.run(
        [str(CLI), "export", "--address", server.address, *flags],
        env=env,
        capture_output="stderr" not in kwargs,
        timeout=600,
        check=False,
        **kwargs,
    )


EXPECTED = [expected_row(row) for row in feedback_rows()]


def test_jsonl_reads_back_equal(server, tmp_path):
    done = export(server, "-o", str(tmp_path / "out.jsonl"))
    assert (done.returncode, done.stderr) == (0, b"")  # no progress line when not on a terminal
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == EXPECTED


def test_csv_reads_back_equal(server, tmp_path):
    done = export(server, "--format", "csv", "-o", str(tmp_path / "out.csv"))
    assert done.returncode == 0, done.stderr
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        row["rating"] = int(row["rating"])
        row["tags"] = row["tags"].split(",") if row["tags"] else []
        row["run_labels"] = json.loads(row["run_labels"])
    assert rows == EXPECTED


def test_parquet_reads_back_equal(server, tmp_path):
    parquet = pytest.importorskip("pyarrow.parquet")
    done = export(server, "--format", "parquet", "-o", str(tmp_path / "out.parquet"))
    assert done.returncode == 0, done.stderr
    rows = parquet.read_table(tmp_path / "out.parquet").to_pylist()
    for row in rows:
        for column in ("created_at", "updated_at"):
            row[column] = row[column].isoformat(timespec="microseconds").replace("+00:00", "Z")
        row["run_labels"] = dict(row["run_labels"])
    assert rows == EXPECTED


def test_standard_output_and_filters(server):
    done = export(server, "--label", "release=2026.12.1", "--label", "model=m1", "--rating", "down")
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.decode().splitlines()]
    wanted = [
        row
        for row in EXPECTED
        if row["run_labels"] == {"model": "m1", "release": "2026.12.1"} and row["rating"] == -1
    ]
    assert printed == wanted and wanted
    thread = export(server, "--thread", "t-7", "--tag", "incorrect")
    rows = [json.loads(line) for line in thread.stdout.decode().splitlines()]
    assert rows == [row for row in EXPECTED if row["thread_id"] == "t-7" and "incorrect" in row["tags"]]


def test_since_keeps_recent_feedback_only(server):
    # Every row is from late 2025 or early 2026: none is from the last hour.
    done = export(server, "--since", "1h")
    assert (done.returncode, done.stdout) == (0, b"")
    everything = export(server, "--since", "5200w", "--thread", "t-3")
    assert len(everything.stdout.decode().splitlines()) == ROWS // THREADS


def test_the_token_file_is_read(server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(SERVICE_TOKEN + "\n")
    done = export(server, "--thread", "t-1", "--token-file", str(token_file), token=None)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.decode().splitlines()) == ROWS // THREADS


@pytest.mark.parametrize(
    "flags",
    [
        ["--label", "release"],
        ["--since", "7 days"],
        ["--rating", "sideways"],
        ["--format", "xml"],
        ["--tls-cert-file", "/dev/null"],
        ["--no-such-flag"],
    ],
)
def test_a_usage_error_exits_2(server, flags):
    done = export(server, *flags)
    assert done.returncode == 2
    assert b"Traceback" not in done.stderr and done.stderr


def test_no_token_is_a_usage_error(server):
    done = export(server, token=None)
    assert done.returncode == 2
    assert b"FEEDBACK_SERVICE_TOKEN" in done.stderr


def test_a_grpc_error_exits_1_with_one_line_and_no_traceback(server):
    done = export(server, token="wrong-token")
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("feedback-client: UNAUTHENTICATED: "), lines
    refused = export(server, "--label", "Bad=x")
    assert refused.returncode == 1
    assert refused.stderr.decode().startswith("feedback-client: INVALID_ARGUMENT: ")
    assert len(refused.stderr.decode().splitlines()) == 1


def test_a_progress_line_is_drawn_on_a_terminal(server):
    primary, secondary = pty.openpty()
    try:
        done = export(server, "--thread", "t-2", stderr=secondary, stdout=subprocess.DEVNULL)
        os.close(secondary)
        drawn = io.BytesIO()
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            drawn.write(chunk)
    finally:
        os.close(primary)
    assert done.returncode == 0
    assert f"exported {ROWS // THREADS} feedback".encode() in drawn.getvalue()

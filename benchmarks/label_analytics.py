"""Times GetFeedbackBreakdown and CompareFeedback at a small and a large
scale on SQLite, PostgreSQL and MariaDB/MySQL, through a real server.

    .venv/bin/python benchmarks/label_analytics.py --rows 1000 1000000 \\
        --postgres-url postgresql://postgres@127.0.0.1:5432/bench_labels \\
        --mysql-url mysql://root@127.0.0.1:3306/bench_labels

For each backend and scale it empties the database (PostgreSQL and MySQL: the
one named, which must exist; SQLite: a file in a temporary directory), loads
the benchmark's rows with load_rows.py (at 1M rows: 100k runs on 10k
threads), gives every run labels (`release`: one of four, `model`: one of
three; every tenth run none), starts `feedback-service serve`, and times each
call CALLS times in a row after WARMUP calls, through one gRPC channel. It
prints a Markdown table of medians and 90th percentiles, and writes them to
benchmarks/results/label_analytics.json.

The calls count every vote of the database (no thread named, as a service),
which is the heaviest way to ask: a breakdown by release, the same narrowed
to one model, and a comparison of two releases.
"""

# ruff: noqa: S603 - starts the project's own server with fixed arguments

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import load_rows  # noqa: E402

from feedback.v1 import feedback_pb2 as pb  # noqa: E402
from feedback.v1 import feedback_pb2_grpc  # noqa: E402
from feedback_service.config import sqlite_url  # noqa: E402
from feedback_service.store.database import open_database  # noqa: E402
from feedback_service.store.models import MODELS, Run, RunLabel, SchemaVersion  # noqa: E402

SERVICE_BIN = ROOT / ".venv" / "bin" / "feedback-service"
RESULTS = HERE / "results" / "label_analytics.json"
RELEASES = ("2026.09.1", "2026.10.1", "2026.11.1", "2026.12.1")
MODELS_USED = ("m-large", "m-medium", "m-small")
WARMUP = 2
CALLS = 15
LABEL_CHUNK = 5_000

REQUESTS: dict[str, Callable[[], object]] = {
    "GetFeedbackBreakdown by release": lambda: pb.GetFeedbackBreakdownRequest(label_key="release"),
    "GetFeedbackBreakdown by release, one model": lambda: pb.GetFeedbackBreakdownRequest(
        label_key="release", run_labels={"model": MODELS_USED[0]}
    ),
    "CompareFeedback of two releases": lambda: pb.CompareFeedbackRequest(
        baseline_labels={"release": RELEASES[2]}, candidate_labels={"release": RELEASES[3]}
    ),
}


def labels_of(index: int) -> dict[str, str]:
    if index % 10 == 9:
        return {}
    return {"release": RELEASES[index % 4], "model": MODELS_USED[index % 3]}


def empty_and_load(url: str, rows: int) -> dict:
    db = open_database(url)
    with db.connection_context():
        db.drop_tables([*MODELS, SchemaVersion], safe=True, cascade=not url.startswith("sqlite"))
    db.close()
    loaded = load_rows.load(url, rows)
    started = time.monotonic()
    db = open_database(url)
    with db.connection_context():
        run_ids = [run_id for (run_id,) in Run.select(Run.run_id).order_by(Run.run_id).tuples()]
        label_rows = [
            (run_id, key, value) for i, run_id in enumerate(run_ids) for key, value in labels_of(i).items()
        ]
        for start in range(0, len(label_rows), LABEL_CHUNK):
            with db.atomic():
                chunk = label_rows[start : start + LABEL_CHUNK]
                RunLabel.insert_many(chunk, fields=[RunLabel.run, RunLabel.key, RunLabel.value]).execute()
        if url.startswith("postgresql"):
            db.execute_sql("ANALYZE")
        elif url.startswith("mysql"):
            db.execute_sql("ANALYZE TABLE run_label, feedback, feedback_tag")
    db.close()
    loaded["labelled_runs"] = sum(1 for i in range(len(run_ids)) if labels_of(i))
    loaded["label_seconds"] = round(time.monotonic() - started, 1)
    return loaded


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(url: str, data_dir: Path, token: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEEDBACK_")}
    env.update(
        FEEDBACK_DATA_DIR=str(data_dir),
        FEEDBACK_DATABASE_URL=url,
        FEEDBACK_JWT_SECRET=secrets.token_urlsafe(48),
        FEEDBACK_SERVICE_TOKENS=f"bench={token}",
    )
    log = (data_dir / "server.log").open("a")
    process = subprocess.Popen(
        [str(SERVICE_BIN), "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {(data_dir / 'server.log').read_text()[-2000:]}")
        try:
            with grpc.insecure_channel(address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return process, address
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    stop(process)
    raise RuntimeError("the server was not SERVING after 120 s")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def time_calls(address: str, token: str) -> dict[str, dict[str, float]]:
    metadata = [("x-service-token", token)]
    timings = {}
    with grpc.insecure_channel(address) as channel:
        stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
        calls = {
            "GetFeedbackBreakdown": stub.GetFeedbackBreakdown,
            "CompareFeedback": stub.CompareFeedback,
        }
        for name, request in REQUESTS.items():
            call = calls[name.split()[0]]
            message = request()
            for _ in range(WARMUP):
                answer = call(message, metadata=metadata, timeout=600)
            took = []
            for _ in range(CALLS):
                started = time.perf_counter()
                answer = call(message, metadata=metadata, timeout=600)
                took.append((time.perf_counter() - started) * 1000)
            took.sort()
            timings[name] = {
                "median_ms": round(statistics.median(took), 2),
                "p90_ms": round(took[int(0.9 * (len(took) - 1))], 2),
                "votes_counted": votes_in(answer),
            }
    return timings


def votes_in(answer: object) -> int:
    if isinstance(answer, pb.GetFeedbackBreakdownResponse):
        return sum(group.votes for group in answer.groups)
    assert isinstance(answer, pb.CompareFeedbackResponse)
    return answer.baseline.votes + answer.candidate.votes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 1_000_000])
    parser.add_argument("--postgres-url", help="an existing PostgreSQL database, emptied first")
    parser.add_argument("--mysql-url", help="an existing MariaDB/MySQL database, emptied first")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="label-bench-") as work:
        for rows in args.rows:
            backends = {} if args.no_sqlite else {"SQLite": sqlite_url(Path(work) / f"{rows}.db")}
            if args.postgres_url:
                backends["PostgreSQL"] = args.postgres_url
            if args.mysql_url:
                backends["MariaDB"] = args.mysql_url
            for backend, url in backends.items():
                print(f"[{time.strftime('%H:%M:%S')}] {backend}, {rows} rows: loading", file=sys.stderr)
                loaded = empty_and_load(url, rows)
                token = secrets.token_urlsafe(24)
                data_dir = Path(work) / f"{backend}-{rows}"
                data_dir.mkdir()
                process, address = serve(url, data_dir, token)
                try:
                    timings = time_calls(address, token)
                finally:
                    stop(process)
                results.append({"backend": backend, "rows": rows, "load": loaded, "calls": timings})
                print(json.dumps(results[-1]), file=sys.stderr)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print("| Backend | Rows | Runs | Call | Votes counted | Median ms | p90 ms |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for result in results:
        for name, timing in result["calls"].items():
            print(
                f"| {result['backend']} | {result['rows']:,} | {result['load']['runs']:,} | {name} "
                f"| {timing['votes_counted']:,} | {timing['median_ms']} | {timing['p90_ms']} |"
            )


if __name__ == "__main__":
    main()

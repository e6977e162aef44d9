"""The latency-proxy scenario: the service's database one network hop away.

A delay proxy (benchmarks/delay_proxy.py) adds --delay-ms in each direction
between two `serve` processes (`serve --workers 2`, one port) and PostgreSQL
or MariaDB. The load client (benchmarks/loadgen.py) then measures
CreateFeedback with a new key on every call at 8 and at 64 calls in flight,
and GetFeedbackStats at 64: calls/s, p50 and p99 latency, errors.

    .venv/bin/python benchmarks/latency_proxy.py --database-url postgresql://postgres@127.0.0.1:5432/bench_proxy
    .venv/bin/python benchmarks/latency_proxy.py --database-url mysql://root@127.0.0.1:3306/bench_proxy

The database must exist; its tables are dropped and created again. Prints a
Markdown table and writes the figures as JSON (--json).
"""

# ruff: noqa: S603 - starts the project's own programs with fixed arguments

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import grpc

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import feedback_pb2_grpc, thread_registry_pb2, thread_registry_pb2_grpc
from feedback_service.store.database import open_database
from feedback_service.store.migrations import migrate
from feedback_service.store.models import MODELS, SchemaVersion

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workload as w  # noqa: E402

PYTHON = sys.executable
SERVICE_BIN = Path(sys.executable).parent / "feedback-service"
# (label, loadgen profile, processes, connections per process, calls in flight per connection)
LOADS = (
    ("CreateFeedback at 8", "create", 1, 2, 4),
    ("CreateFeedback at 64", "create", 2, 4, 8),
    ("GetFeedbackStats at 64", "stats", 2, 4, 8),
)


def reset(url: str) -> None:
    """Drops the service's tables, then creates them at the newest version."""
    db = open_database(url)
    with db.connection_context():
        db.drop_tables([*MODELS, SchemaVersion], safe=True, cascade=not url.startswith("sqlite"))
    migrate(db)
    db.close()


@contextmanager
def delay_proxy(url: str, delay_ms: float) -> Iterator[str]:
    """The database URL, through a delay proxy."""
    parsed = urlparse(url)
    default_port = 5432 if parsed.scheme.startswith("postgres") else 3306
    target = f"{parsed.hostname}:{parsed.port or default_port}"
    command = [PYTHON, str(HERE / "delay_proxy.py"), "--target", target, "--delay-ms", str(delay_ms)]
    proxy = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = proxy.stdout.readline() if proxy.stdout else ""
        port = int(line.strip().rpartition(":")[2])
        netloc = parsed.netloc.replace(f"{parsed.hostname}:{parsed.port}", f"127.0.0.1:{port}")
        if parsed.port is None:
            netloc = f"{parsed.netloc}:{port}"
        yield parsed._replace(netloc=netloc).geturl()
    finally:
        proxy.terminate()
        proxy.wait(10)


@contextmanager
def service(url: str, port: int, workers: int) -> Iterator[tuple[str, str, str, list[int]]]:
    """`serve --workers N` on the database: (address, service token, user JWT, pids)."""
    secret, token = secrets.token_hex(32), secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="latency-proxy-") as data_dir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")}
        env.update(
            FEEDBACK_DATA_DIR=data_dir,
            FEEDBACK_DATABASE_URL=url,
            FEEDBACK_JWT_SECRET=secret,
            FEEDBACK_SERVICE_TOKENS=f"bench={token}",
        )
        address = f"127.0.0.1:{port}"
        command = [str(SERVICE_BIN), "serve", "--listen", address, "--workers", str(workers)]
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            user_jwt = subprocess.run(
                [str(SERVICE_BIN), "token", w.USER, "--ttl", "3600"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            channel = grpc.insecure_channel(address)
            grpc.channel_ready_future(channel).result(timeout=60)
            channel.close()
            yield address, token, user_jwt, _children(server.pid) or [server.pid]
        finally:
            server.terminate()
            server.wait(30)


def _children(pid: int) -> list[int]:
    """The server processes `serve --workers` started (and the parent)."""
    found = [pid]
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = path.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(path.parent.name))
    return found


def seed(address: str, token: str) -> None:
    """The threads the load writes to (owned by its user) and reads (shared,
    with votes by other users), as named in benchmarks/workload.py."""
    channel = grpc.insecure_channel(address)
    registry = thread_registry_pb2_grpc.ThreadRegistryStub(channel)
    feedback = feedback_pb2_grpc.FeedbackServiceStub(channel)
    metadata = [("x-service-token", token)]
    for thread, owner, runs in ((w.WRITE_THREAD, w.USER, w.WRITE_RUNS), (w.READ_THREAD, "", [w.HOT_RUN])):
        registry.RegisterThread(
            thread_registry_pb2.RegisterThreadRequest(thread_id=thread, owner_user_id=owner),
            metadata=metadata,
        )
        for run in runs:
            registry.RegisterRun(
                thread_registry_pb2.RegisterRunRequest(thread_id=thread, run_id=run), metadata=metadata
            )
    for i in range(50):  # something for the stats to count
        feedback.UpsertFeedback(
            pb.UpsertFeedbackRequest(thread_id=w.READ_THREAD, run_id=w.HOT_RUN, rating=w.rating_for(i)),
            metadata=[*metadata, ("x-on-behalf-of", w.other_user(i))],
        )
    channel.close()


def load(address: str, jwt: str, profile: str, procs: int, conns: int, streams: int, args, pids) -> dict:
    command = [
        PYTHON,
        str(HERE / "loadgen.py"),
        *("--target", "grpc", "--address", address, "--profile", profile, "--token", jwt),
        *("--procs", str(procs), "--conns", str(conns), "--streams", str(streams)),
        *("--duration", str(args.duration), "--warmup", str(args.warmup)),
        *("--cpu-pids", ",".join(map(str, pids))),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url", required=True, help="PostgreSQL or MySQL/MariaDB; its tables are replaced"
    )
    parser.add_argument("--delay-ms", type=float, default=1.0, help="added in each direction")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument("--port", type=int, default=0, help="the service's port (0: any free one)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    reset(args.database_url)
    port = args.port or _free_port()
    rows = {}
    with delay_proxy(args.database_url, args.delay_ms) as url, service(url, port, args.workers) as served:
        address, token, jwt, pids = served
        seed(address, token)
        for label, profile, procs, conns, streams in LOADS:
            rows[label] = load(address, jwt, profile, procs, conns, streams, args, pids)
    creates_8, creates_64, stats_64 = (rows[label]["rps"] for label, *_ in LOADS)
    summary = {
        "database": urlparse(args.database_url).scheme,
        "delay_ms_each_way": args.delay_ms,
        "workers": args.workers,
        "loads": rows,
        "creates_64_over_creates_8": creates_64 / creates_8,
        "creates_64_over_stats_64": creates_64 / stats_64,
    }
    print(f"\n{summary['database']}, {args.delay_ms:g} ms each way, {args.workers} server processes\n")
    print("| load | calls/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---|")
    for label, figures in rows.items():
        errors = ", ".join(f"{k} {v}" for k, v in figures["errors"].items()) or "none"
        rps, p50, p99 = figures["rps"], figures["p50_ms"], figures["p99_ms"]
        print(f"| {label} | {rps:.0f} | {p50:.1f} | {p99:.1f} | {errors} |")
    print(f"\ncreates/s at 64 ÷ at 8: {summary['creates_64_over_creates_8']:.2f}")
    print(f"creates/s at 64 ÷ GetFeedbackStats/s at 64: {summary['creates_64_over_stats_64']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()

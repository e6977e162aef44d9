"""The stall scenario: how fast health and a point read answer while
every-thread analytics run back to back on a large SQLite database.

    .venv/bin/python benchmarks/load_rows.py --db /tmp/rows-1m.db --rows 1000000   # once
    .venv/bin/python benchmarks/stall.py --db /tmp/rows-1m.db

It starts `feedback-service serve` on a copy of the database (the file given
is never changed), then measures two phases of `--duration` seconds each:

- quiet: nothing else runs;
- analytics: `--analytics` callers (a service acting as itself) each ask,
  one call after another, for the daily vote counts of every thread over a
  year (GetFeedbackTimeSeries with no thread_id), which counts every vote.

In both phases, one prober sends Health/Check every `--interval-ms` and
another GetFeedbackStats on the benchmark's hot run (as its owner), each
waiting for its answer before the next; latencies are measured in the
client from send to answer. It prints p50, p99 and the worst of each, the
analytics calls' own durations, and whether the targets hold (health p99 at
most 50 ms and worst at most 150 ms while the analytics run). `--json FILE`
writes the figures too. `--service PATH` measures another build of
`feedback-service` (another checkout's venv) on the same data.
"""

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import jwt
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload as w

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import feedback_pb2_grpc

HERE = Path(__file__).resolve().parent
SERVICE_BIN = HERE.parent / ".venv" / "bin" / "feedback-service"
DAY_US = 86_400 * 1_000_000
YEAR_DAYS = 365
# Targets while the analytics run.
HEALTH_P99_MS = 50.0
HEALTH_WORST_MS = 150.0
CALL_TIMEOUT_S = 120.0
Metadata = tuple[tuple[str, str], ...]


@dataclass
class Latencies:
    """Milliseconds of each answered call, and the calls that failed."""

    ms: list[float] = field(default_factory=list)
    errors: int = 0

    def summary(self) -> dict[str, float | int]:
        ordered = sorted(self.ms)
        if not ordered:
            return {"calls": 0, "errors": self.errors}
        return {
            "calls": len(ordered),
            "errors": self.errors,
            "p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
            "worst_ms": round(ordered[-1], 2),
        }


@dataclass(frozen=True)
class Credentials:
    jwt_secret: str
    service_token: str

    def user(self, user_id: str) -> Metadata:
        claims = {"sub": user_id, "exp": int(time.time()) + 3600}
        return (("authorization", f"Bearer {jwt.encode(claims, self.jwt_secret, algorithm='HS256')}"),)

    def service(self) -> Metadata:
        return (("x-service-token", self.service_token),)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_service(
    service: Path, data_dir: Path, keys: Credentials, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")}
    env.update(
        FEEDBACK_DATA_DIR=str(data_dir),
        FEEDBACK_JWT_SECRET=keys.jwt_secret,
        FEEDBACK_SERVICE_TOKENS=f"bench={keys.service_token}",
    )
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - our own command line
            [str(service), "serve", "--listen", f"127.0.0.1:{port}"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_serving(channel: grpc.aio.Channel, process: subprocess.Popen[bytes], log: Path) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited: {log.read_text()[-2000:]}")
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the service is not SERVING after 120 s: {log.read_text()[-2000:]}")


def year_of_days() -> pb.GetFeedbackTimeSeriesRequest:
    """Daily buckets over the year that ends at the next midnight UTC: every
    row load_rows.py wrote (timestamps ending at the load) falls in it."""
    end = (time.time_ns() // 1000 // DAY_US + 1) * DAY_US
    start, finish = Timestamp(), Timestamp()
    start.FromMicroseconds(end - YEAR_DAYS * DAY_US)
    finish.FromMicroseconds(end)
    return pb.GetFeedbackTimeSeriesRequest(bucket=pb.TIME_BUCKET_DAY, start_time=start, end_time=finish)


async def probe(
    call: Callable[..., Awaitable[object]],
    request: object,
    metadata: Metadata,
    interval_s: float,
    until: float,
    into: Latencies,
) -> None:
    """Sends one call every interval (or, when the last one took longer, as
    soon as it answered), until `until`."""
    next_at = time.monotonic()
    while next_at < until:
        began = time.perf_counter()
        try:
            await call(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
            into.ms.append((time.perf_counter() - began) * 1000)
        except grpc.aio.AioRpcError:
            into.errors += 1
        # A late answer delays the next call; missed ticks are not made up.
        next_at = max(next_at + interval_s, time.monotonic())
        await asyncio.sleep(next_at - time.monotonic())


async def analytics(
    stub: "feedback_pb2_grpc.FeedbackServiceAsyncStub", keys: Credentials, until: float, into: Latencies
) -> None:
    """Every-thread time series, one after another, until `until`."""
    request = year_of_days()
    while time.monotonic() < until:
        began = time.perf_counter()
        try:
            await stub.GetFeedbackTimeSeries(request, metadata=keys.service(), timeout=CALL_TIMEOUT_S)
            into.ms.append((time.perf_counter() - began) * 1000)
        except grpc.aio.AioRpcError:
            into.errors += 1


async def phase(
    address: str, keys: Credentials, duration_s: float, interval_s: float, callers: int
) -> dict[str, dict[str, float | int]]:
    """One phase: the probers, and `callers` analytics callers beside them.
    Each of them has its own connection, as separate clients would."""
    channels = [grpc.aio.insecure_channel(address) for _ in range(2 + callers)]
    try:
        health_stub = health_pb2_grpc.HealthStub(channels[0])
        stats_stub = feedback_pb2_grpc.FeedbackServiceStub(channels[1])
        health, stats, series = Latencies(), Latencies(), Latencies()
        until = time.monotonic() + duration_s
        stats_request = pb.GetFeedbackStatsRequest(thread_id=w.READ_THREAD, run_id=w.HOT_RUN)
        tasks = [
            probe(health_stub.Check, health_pb2.HealthCheckRequest(), (), interval_s, until, health),
            probe(stats_stub.GetFeedbackStats, stats_request, keys.user(w.USER), interval_s, until, stats),
            *(
                analytics(feedback_pb2_grpc.FeedbackServiceStub(channel), keys, until, series)
                for channel in channels[2:]
            ),
        ]
        await asyncio.gather(*tasks)
        result = {"health": health.summary(), "stats": stats.summary()}
        if callers:
            result["analytics"] = series.summary()
        return result
    finally:
        for channel in channels:
            await channel.close()


async def measure(
    args: argparse.Namespace, address: str, keys: Credentials, process: subprocess.Popen[bytes], log: Path
) -> dict[str, object]:
    async with grpc.aio.insecure_channel(address) as channel:
        await wait_serving(channel, process, log)
        stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
        # Warm the caches (the first series reads the whole index from disk).
        await stub.GetFeedbackTimeSeries(year_of_days(), metadata=keys.service(), timeout=CALL_TIMEOUT_S)
    interval_s = args.interval_ms / 1000
    quiet = await phase(address, keys, args.duration, interval_s, 0)
    loaded = await phase(address, keys, args.duration, interval_s, args.analytics)
    return {"quiet": quiet, "analytics": loaded}


def table(result: dict[str, dict[str, dict[str, float | int]]]) -> str:
    lines = [
        "| Phase | Call | calls | errors | p50 ms | p99 ms | worst ms |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for phase_name, calls in result.items():
        for call, figures in calls.items():
            cells = [figures.get(k, "—") for k in ("calls", "errors", "p50_ms", "p99_ms", "worst_ms")]
            lines.append(f"| {phase_name} | {call} | " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", type=Path, required=True, help="a database load_rows.py built (not changed)")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds per phase (default %(default)s)"
    )
    parser.add_argument(
        "--interval-ms", type=float, default=20.0, help="between probes (default %(default)s)"
    )
    parser.add_argument("--analytics", type=int, default=1, help="analytics callers (default %(default)s)")
    parser.add_argument("--service", type=Path, default=SERVICE_BIN, help="the feedback-service to run")
    parser.add_argument("--port", type=int, default=0, help="the service's port (default: a free one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--log", type=Path, help="keep the service's log here")
    args = parser.parse_args()
    keys = Credentials(secrets.token_urlsafe(48), secrets.token_urlsafe(24))
    port = args.port or free_port()
    with tempfile.TemporaryDirectory(prefix="stall-", dir=args.db.parent) as work:
        data_dir = Path(work)
        shutil.copyfile(args.db, data_dir / "feedback.db")
        log = data_dir / "service.log"
        process = start_service(args.service, data_dir, keys, port, log)
        try:
            result = asyncio.run(measure(args, f"127.0.0.1:{port}", keys, process, log))
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            if args.log:
                shutil.copyfile(log, args.log)
    figures = result["analytics"]["health"]  # type: ignore[index]
    held = figures.get("p99_ms", 1e9) <= HEALTH_P99_MS and figures.get("worst_ms", 1e9) <= HEALTH_WORST_MS
    print(table(result))  # type: ignore[arg-type]
    print(
        f"\nwhile the analytics run, health p99 {figures.get('p99_ms')} ms (target ≤ {HEALTH_P99_MS:g}), "
        f"worst {figures.get('worst_ms')} ms (target ≤ {HEALTH_WORST_MS:g}): {'met' if held else 'NOT met'}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **result}, indent=2)
        )


if __name__ == "__main__":
    main()

"""A multi-process load client for what h2load cannot do: a different request
body on every call (CreateFeedback with a new key each time) and a mix of
calls (the read-heavy profile).

    .venv/bin/python benchmarks/loadgen.py --target grpc --address 127.0.0.1:PORT \
        --profile create --token JWT --procs 2 --conns 2 --streams 8 --duration 10

--target grpc drives feedback.v1.FeedbackService (the service or the noop
server) with grpc.aio: each process opens --conns HTTP/2 connections with
--streams calls in flight on each, like `h2load -c CONNS -m STREAMS`.
--target http drives the peer's REST routes over HTTP/1.1 keep-alive
connections, one call in flight per connection (procs x conns x streams
connections), like `h2load --h1`. Requests are serialised once where they do
not change and responses are not decoded: only the status is checked.

Every process connects, then all start together, run --warmup seconds
unmeasured, and count the calls that complete during the next --duration
seconds. Prints one JSON object: rps, p50/p99 latency (ms), errors by status,
and the CPU seconds the --cpu-pids processes (and the --db-cpu database
server) used during that window.
"""

import argparse
import asyncio
import json
import multiprocessing
import random
import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procstat
import workload as w

SERVICE = "/feedback.v1.FeedbackService/"
PROFILES = ("create", "mixed", "upsert", "stats", "list", "batch")


def profile_weights(profile: str, target: str) -> tuple[tuple[str, int], ...]:
    single = {
        "create": "CreateFeedback",
        "upsert": "UpsertFeedback",
        "stats": "GetFeedbackStats",
        "list": "ListFeedback",
        "batch": "BatchGetFeedbackStats",
    }
    if profile == "mixed":
        return w.PEER_MIX if target == "http" else w.MIX
    return ((single[profile], 1),)


class Recorder:
    """Latencies (µs) and statuses of the calls that end inside the window."""

    def __init__(self, start: float, stop: float) -> None:
        self.start = start
        self.stop = stop
        self.latencies = array("l")
        self.errors: dict[str, int] = {}

    def record(self, began: float, ended: float, status: str) -> None:
        if self.start <= ended < self.stop:
            if status == "OK":
                self.latencies.append(int((ended - began) * 1e6))
            else:
                self.errors[status] = self.errors.get(status, 0) + 1


class Requests:
    """What to send for each call name; new keys come from a per-process counter."""

    def __init__(self, nonce: str, proc: int) -> None:
        self.prefix = f"{nonce}-{proc}-"
        self.counter = 0

    def new_key(self) -> tuple[str, str]:
        """(run_id, message_id) never used before by this benchmark run."""
        self.counter += 1
        run = w.WRITE_RUNS[self.counter % len(w.WRITE_RUNS)]
        return run, f"{self.prefix}{self.counter}"


def seeded(proc: int) -> Iterator[random.Random]:
    """Reproducible random streams (for picking calls of a mix), one per worker."""
    root = random.Random(proc)  # noqa: S311 - not for security
    while True:
        yield random.Random(root.random())  # noqa: S311


async def synchronised_start(args, ready, go, start_at) -> Recorder:
    """Reports this process connected, waits for the common start time, then
    returns a recorder for the window after the warm-up."""
    ready.release()
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    start = start_at.value
    await asyncio.sleep(max(0.0, start - time.time()))
    measure_from = start + args.warmup
    return Recorder(measure_from, measure_from + args.duration)


# --- gRPC ----------------------------------------------------------------------


def grpc_bodies() -> dict[str, bytes]:
    from feedback.v1 import feedback_pb2 as pb

    return {
        "UpsertFeedback": pb.UpsertFeedbackRequest(
            thread_id=w.WRITE_THREAD, run_id=w.UPSERT_RUN, rating=1, comment="hot key"
        ).SerializeToString(),
        "GetFeedbackStats": pb.GetFeedbackStatsRequest(
            thread_id=w.READ_THREAD, run_id=w.HOT_RUN
        ).SerializeToString(),
        "ListFeedback": pb.ListFeedbackRequest(
            thread_id=w.READ_THREAD, run_id=w.HOT_RUN, page_size=w.LIST_PAGE_SIZE
        ).SerializeToString(),
        "BatchGetFeedbackStats": pb.BatchGetFeedbackStatsRequest(
            thread_id=w.READ_THREAD, run_ids=w.BATCH_RUNS
        ).SerializeToString(),
    }


async def grpc_process(args, proc: int, ready, go, start_at, queue) -> None:
    import grpc

    from feedback.v1 import feedback_pb2 as pb

    bodies = grpc_bodies()
    requests = Requests(args.nonce, proc)
    names, weights = zip(*profile_weights(args.profile, "grpc"), strict=True)
    metadata = (("authorization", f"Bearer {args.token}"),)
    # One connection per channel: a local subchannel pool stops channels to the
    # same address from sharing one.
    channels = [
        grpc.aio.insecure_channel(args.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.conns)
    ]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 10)
    recorder = await synchronised_start(args, ready, go, start_at)
    end = recorder.stop
    calls = [
        {name: channel.unary_unary(SERVICE + name) for name in (*bodies, "CreateFeedback")}
        for channel in channels
    ]

    def body(name: str) -> bytes:
        if name == "CreateFeedback":
            run, message = requests.new_key()
            return pb.CreateFeedbackRequest(
                thread_id=w.WRITE_THREAD, run_id=run, rating=1, message_id=message
            ).SerializeToString()
        return bodies[name]

    async def worker(stubs: dict, rng: random.Random) -> None:
        while time.time() < end:
            name = rng.choices(names, weights)[0] if len(names) > 1 else names[0]
            request = body(name)
            began = time.time()
            try:
                await stubs[name](request, metadata=metadata, timeout=30)
                status = "OK"
            except grpc.aio.AioRpcError as error:
                status = error.code().name
            recorder.record(began, time.time(), status)

    seeds = seeded(proc)
    await asyncio.gather(*(worker(stubs, next(seeds)) for stubs in calls for _ in range(args.streams)))
    for channel in channels:
        await channel.close()
    queue.put((recorder.latencies.tobytes(), recorder.errors))


# --- HTTP/1.1 (the peer) -------------------------------------------------------------


async def http_process(args, proc: int, ready, go, start_at, queue) -> None:
    host, port = args.address.rsplit(":", 1)
    paths = w.peer_paths()
    requests = Requests(args.nonce, proc)
    names, weights = zip(*profile_weights(args.profile, "http"), strict=True)
    common = f"Host: {args.address}\r\nAuthorization: Bearer {args.token}\r\n"
    stats_request = f"GET {paths['stats']} HTTP/1.1\r\n{common}\r\n".encode()

    def request(name: str) -> bytes:
        if name == "GetFeedbackStats":
            return stats_request
        if name != "CreateFeedback":
            raise SystemExit(f"the peer has no route for {name}")
        run, message = requests.new_key()
        payload = json.dumps({"rating": 1, "message_id": message}).encode()
        head = (
            f"POST {paths['create_base']}/{run}/feedback HTTP/1.1\r\n{common}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        return head.encode() + payload

    connections = [await asyncio.open_connection(host, int(port)) for _ in range(args.conns * args.streams)]
    recorder = await synchronised_start(args, ready, go, start_at)
    end = recorder.stop

    async def worker(connection, rng: random.Random) -> None:
        reader, writer = connection
        while time.time() < end:
            name = rng.choices(names, weights)[0] if len(names) > 1 else names[0]
            data = request(name)
            began = time.time()
            writer.write(data)
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, _, header_block = head.partition(b"\r\n")
            code = int(status_line.split()[1])
            length = 0
            for line in header_block.split(b"\r\n"):
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            recorder.record(began, time.time(), "OK" if code == 200 else f"HTTP_{code}")
        writer.close()

    seeds = seeded(proc)
    await asyncio.gather(*(worker(connection, next(seeds)) for connection in connections))
    queue.put((recorder.latencies.tobytes(), recorder.errors))


def run_process(args, proc: int, ready, go, start_at, queue) -> None:
    driver = grpc_process if args.target == "grpc" else http_process
    asyncio.run(driver(args, proc, ready, go, start_at, queue))


def percentile(sorted_values: list[int], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index] / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", choices=("grpc", "http"), required=True)
    parser.add_argument("--address", required=True, help="HOST:PORT")
    parser.add_argument("--profile", choices=PROFILES, required=True)
    parser.add_argument("--token", required=True, help="the benchmark user's JWT")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--conns", type=int, default=2, help="connections per process")
    parser.add_argument("--streams", type=int, default=8, help="calls in flight per connection")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--cpu-pids",
        type=lambda v: [int(p) for p in v.split(",") if p],
        default=[],
        help="comma-separated server pids whose CPU time over the window to report",
    )
    parser.add_argument(
        "--db-cpu",
        type=procstat.DatabaseServer.parse,
        help="a database server (procstat.DatabaseServer spec) whose CPU time over the window to report",
    )
    parser.add_argument("--nonce", default=str(int(time.time() * 1000)), help="makes new keys unique per run")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    queue, ready, go = context.Queue(), context.Semaphore(0), context.Event()
    start_at = context.Value("d", 0.0)
    procs = [
        context.Process(target=run_process, args=(args, i, ready, go, start_at, queue), daemon=True)
        for i in range(args.procs)
    ]
    for process in procs:
        process.start()
    for _ in procs:  # every process imported its client and connected
        if not ready.acquire(timeout=60):
            raise SystemExit("a load process did not connect within 60s")
    start = time.time() + 0.05
    start_at.value = start
    go.set()
    # The server's CPU time and the machine's over exactly the measured window.
    measure_from, measure_to = start + args.warmup, start + args.warmup + args.duration
    time.sleep(max(0.0, measure_from - time.time()))
    clients = [process.pid for process in procs]
    cpu_before, busy_before = procstat.cpu_seconds(args.cpu_pids), procstat.machine_busy_seconds()
    client_before = procstat.cpu_seconds(clients)
    db_before = args.db_cpu.sample() if args.db_cpu else {}
    time.sleep(max(0.0, measure_to - time.time()))
    cpu_after, busy_after = procstat.cpu_seconds(args.cpu_pids), procstat.machine_busy_seconds()
    client_after = procstat.cpu_seconds(clients)
    db_after = args.db_cpu.sample() if args.db_cpu else {}
    latencies = array("l")
    errors: dict[str, int] = {}
    for _ in procs:
        raw, proc_errors = queue.get(timeout=120)
        chunk = array("l")
        chunk.frombytes(raw)
        latencies.extend(chunk)
        for status, count in proc_errors.items():
            errors[status] = errors.get(status, 0) + count
    for process in procs:
        process.join(30)
    ordered = sorted(latencies)
    failed = sum(errors.values())
    print(
        json.dumps(
            {
                "tool": "loadgen",
                "succeeded": len(ordered),
                "failed": failed,
                "errors": errors,
                "duration_s": args.duration,
                "rps": len(ordered) / args.duration,
                "p50_ms": percentile(ordered, 0.50),
                "p99_ms": percentile(ordered, 0.99),
                "in_flight": args.procs * args.conns * args.streams,
                "server_cpu_s": cpu_after - cpu_before,
                "machine_busy_s": busy_after - busy_before,
                "client_cpu_s": client_after - client_before,
                "db_cpu_s": procstat.DatabaseServer.seconds_between(db_before, db_after)
                if args.db_cpu
                else None,
            }
        )
    )


if __name__ == "__main__":
    main()

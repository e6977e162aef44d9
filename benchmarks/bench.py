"""Runs the feedback-service benchmark and writes benchmarks/results/latest.{json,md}.

Started by benchmarks/run.sh (which prepares h2load and the venvs); runs in the
project's venv. See benchmarks/README.md for what is measured and how.
"""

# ruff: noqa: S603, S607 - starts the project's own programs, h2load and git, with fixed arguments

import argparse
import atexit
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import feedback_pb2_grpc, thread_registry_pb2, thread_registry_pb2_grpc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import databases as dbs  # noqa: E402
import procstat  # noqa: E402
import workload as w  # noqa: E402

PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
SERVICE_BIN = ROOT / ".venv" / "bin" / "feedback-service"
PEER_PYTHON = HERE / ".venv" / "bin" / "python"
RESULTS_DIR = HERE / "results"
CACHE_DIR = HERE / ".cache"
WORK_DIR = HERE / ".work"

SMALL, LARGE = 1_000, 1_000_000

# The service's targets: (database backend, server processes).
SERVICE_TARGETS = {
    "service": ("sqlite", 1),
    "service-w2": ("sqlite", 2),
    "service-pg": ("postgresql", 1),
    "service-pg-w2": ("postgresql", 2),
    "service-mysql": ("mysql", 1),
}
TARGETS = (*SERVICE_TARGETS, "noop", "peer")
BACKENDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB"}
DEFAULT_SERVER_URLS = {
    "postgresql": "postgresql://postgres@127.0.0.1:5432",
    "mysql": "mysql://root@127.0.0.1:3306",
}


@dataclass(frozen=True)
class Mode:
    name: str
    runs: int  # measured runs per scenario and target; the median is reported
    duration_s: float  # length of one measured run
    warmup_s: float  # unmeasured load before a scenario's first run
    noop_every_scale: bool  # re-measure the ceiling at every scale (it reads no data)


MODES = {
    "quick": Mode("quick", runs=3, duration_s=1.0, warmup_s=0.5, noop_every_scale=False),
    "full": Mode("full", runs=5, duration_s=5.0, warmup_s=2.0, noop_every_scale=True),
}


@dataclass(frozen=True)
class Load:
    """The same concurrency for every tool: 4 connections x 8 calls in flight
    over HTTP/2, or 32 HTTP/1.1 connections with one call each."""

    conns: int = 4
    streams: int = 8
    loadgen_procs: int = 2

    @property
    def in_flight(self) -> int:
        return self.conns * self.streams


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    method: str  # the RPC h2load posts, or the loadgen profile's main call
    tool: str  # "h2load" or "loadgen"
    kind: str  # "read", "write" or "mixed"
    peer: str | None  # what the peer runs for it: "stats", "create", "mixed" or None
    profile: str = ""  # loadgen profile
    variant: str = ""  # another request of the same RPC (grpc_request's key: "Method:variant")

    @property
    def request(self) -> str:
        return f"{self.method}:{self.variant}" if self.variant else self.method


SCENARIOS = (
    Scenario("list", "ListFeedback (page of 100)", "ListFeedback", "h2load", "read", None),
    Scenario(
        "list-filtered",
        "ListFeedback filtered (rating -1, a tag)",
        "ListFeedback",
        "h2load",
        "read",
        None,
        variant="filtered",
    ),
    Scenario("stats", "GetFeedbackStats", "GetFeedbackStats", "h2load", "read", "stats"),
    Scenario("batch", "BatchGetFeedbackStats (50 runs)", "BatchGetFeedbackStats", "h2load", "read", None),
    Scenario("caller", "BatchGetCallerFeedback (50 runs)", "BatchGetCallerFeedback", "h2load", "read", None),
    Scenario("thread-stats", "GetThreadFeedbackStats", "GetThreadFeedbackStats", "h2load", "read", None),
    Scenario("upsert", "UpsertFeedback (one hot key)", "UpsertFeedback", "h2load", "write", None),
    Scenario(
        "create",
        "CreateFeedback (new key each call)",
        "CreateFeedback",
        "loadgen",
        "write",
        "create",
        "create",
    ),
    Scenario("mixed", "Mixed: 90% reads, 10% creates", "mixed", "loadgen", "mixed", "mixed", "mixed"),
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scale_name(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows >= 1_000_000 else f"{rows // 1_000}k"


# --- requests -------------------------------------------------------------------------


def grpc_request(method: str, nonce: str = "") -> object:
    """The request a scenario sends (h2load sends its bytes on every call);
    `method` is the RPC's name, or "Name:variant" for another request of it."""
    if method == "ListFeedback":
        return pb.ListFeedbackRequest(thread_id=w.READ_THREAD, run_id=w.HOT_RUN, page_size=w.LIST_PAGE_SIZE)
    if method == "ListFeedback:filtered":
        return pb.ListFeedbackRequest(
            thread_id=w.READ_THREAD,
            run_id=w.HOT_RUN,
            page_size=w.LIST_PAGE_SIZE,
            rating=w.FILTER_RATING,
            tag=w.FILTER_TAG,
        )
    if method == "GetFeedbackStats":
        return pb.GetFeedbackStatsRequest(thread_id=w.READ_THREAD, run_id=w.HOT_RUN)
    if method == "BatchGetFeedbackStats":
        return pb.BatchGetFeedbackStatsRequest(thread_id=w.READ_THREAD, run_ids=w.BATCH_RUNS)
    if method == "BatchGetCallerFeedback":
        return pb.BatchGetCallerFeedbackRequest(thread_id=w.READ_THREAD, run_ids=w.BATCH_RUNS)
    if method == "GetThreadFeedbackStats":
        return pb.GetThreadFeedbackStatsRequest(thread_id=w.READ_THREAD)
    if method == "UpsertFeedback":
        return pb.UpsertFeedbackRequest(
            thread_id=w.WRITE_THREAD, run_id=w.UPSERT_RUN, rating=1, comment="hot key"
        )
    if method == "CreateFeedback":
        return pb.CreateFeedbackRequest(
            thread_id=w.WRITE_THREAD, run_id=w.WRITE_RUNS[1], rating=1, message_id=f"check-{nonce}"
        )
    raise ValueError(method)


def grpc_frame(message) -> bytes:
    """A gRPC length-prefixed message: no compression, 4-byte big-endian length."""
    payload = message.SerializeToString()
    return b"\0" + struct.pack(">I", len(payload)) + payload


# --- servers ----------------------------------------------------------------------------


@dataclass
class Server:
    name: str  # one of TARGETS
    protocol: str  # "grpc" or "http"
    process: subprocess.Popen
    port: int
    log_path: Path
    pids: list[int] = field(default_factory=list)
    # The database server process whose CPU time is sampled beside ours (PostgreSQL, MariaDB).
    db: procstat.DatabaseServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


class Secrets:
    """A JWT secret and a service token for this run only, and the benchmark
    user's JWT, minted by `feedback-service token` as an operator would."""

    def __init__(self) -> None:
        self.jwt_secret = secrets.token_urlsafe(48)
        self.service_token = secrets.token_urlsafe(24)
        minted = subprocess.run(
            [str(SERVICE_BIN), "token", w.USER, "--ttl", str(6 * 3600)],
            env=service_env(WORK_DIR, self),
            capture_output=True,
            text=True,
            check=True,
        )
        self.user_token = minted.stdout.strip()


def service_env(data_dir: Path, keys: Secrets, database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")}
    env.update(
        FEEDBACK_DATA_DIR=str(data_dir),
        FEEDBACK_JWT_SECRET=keys.jwt_secret,
        FEEDBACK_SERVICE_TOKENS=f"bench={keys.service_token}",
    )
    if database_url:
        env["FEEDBACK_DATABASE_URL"] = database_url
    return env


LAUNCHED: list[Server] = []  # every server started, so that all are stopped whatever happens


def launch(name: str, protocol: str, command: list, env: dict, port: int, log_dir: Path) -> Server:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "a") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
        )
    server = Server(name, protocol, process, port, log_path)
    LAUNCHED.append(server)
    # Remembered on disk too: a run killed outright (SIGKILL) cannot stop its
    # servers, so the next run does (stop_left_over_servers).
    with open(WORK_DIR / SERVER_PIDS, "a") as pids:
        pids.write(f"{process.pid}\t{' '.join(map(str, command))}\n")
    return server


SERVER_PIDS = "servers.pids"


def stop_left_over_servers() -> None:
    """Stops the servers of an earlier run that was killed before it could,
    each by its pid and only while that pid still runs the same command."""
    try:
        entries = (WORK_DIR / SERVER_PIDS).read_text().splitlines()
    except OSError:
        return
    for entry in entries:
        pid_text, _, command = entry.partition("\t")
        try:
            running = Path(f"/proc/{pid_text}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if running.endswith(command.strip()):
            log(f"stopping server {pid_text} left by an earlier, killed run: {command[:80]}")
            try:
                os.killpg(int(pid_text), signal.SIGTERM)
            except ProcessLookupError:
                pass


def stop_all() -> None:
    for server in LAUNCHED:
        server.stop()


def wait_grpc_ready(server: Server, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited: {server.log_path.read_text()[-2000:]}")
        try:
            with grpc.insecure_channel(server.address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not SERVING after {timeout_s}s: {server.log_path.read_text()[-2000:]}")


def wait_http_ready(server: Server, keys: Secrets, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited: {server.log_path.read_text()[-2000:]}")
        try:
            http_call(server, "GET", w.peer_paths()["stats"], keys)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{server.name} not answering after {timeout_s}s")


def start_service(
    name: str,
    data_dir: Path,
    keys: Secrets,
    workers: int,
    log_dir: Path,
    database_url: str | None = None,
    db: procstat.DatabaseServer | None = None,
) -> Server:
    """`feedback-service serve` on the SQLite database in data_dir, or on database_url."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [str(SERVICE_BIN), "serve", "--listen", f"127.0.0.1:{port}"]
    if workers > 1:
        command += ["--workers", str(workers)]
    server = launch(name, "grpc", command, service_env(data_dir, keys, database_url), port, log_dir)
    server.db = db
    try:
        wait_grpc_ready(server)
        if workers > 1:
            # Every worker binds the port on its own; give the last one time to.
            deadline = time.monotonic() + 30
            while len(procstat.descendants(server.process.pid)) < workers + 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)
        server.pids = procstat.descendants(server.process.pid)
        register_bench_threads(server, keys)
    except BaseException:
        server.stop()
        raise
    return server


def start_noop(keys: Secrets, log_dir: Path) -> Server:
    port = free_port()
    command = [str(PROJECT_PYTHON), str(HERE / "noop_server.py"), "--listen", f"127.0.0.1:{port}"]
    server = launch("noop", "grpc", command, dict(os.environ), port, log_dir)
    wait_grpc_ready(server)
    server.pids = procstat.descendants(server.process.pid)
    return server


def start_peer(db_path: Path, keys: Secrets, log_dir: Path) -> Server:
    port = free_port()
    command = [
        str(PEER_PYTHON), "-m", "uvicorn", "--app-dir", str(HERE), "peer_app:app",
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "asyncio", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    env = dict(os.environ, PEER_DB=str(db_path), PEER_JWT_SECRET=keys.jwt_secret)
    server = launch("peer", "http", command, env, port, log_dir)
    wait_http_ready(server, keys)
    server.pids = procstat.descendants(server.process.pid)
    return server


def register_bench_threads(server: Server, keys: Secrets) -> None:
    """Registers the benchmark's threads and runs through ThreadRegistry, as the
    platform would. The loader already wrote them, so this is idempotent and
    checks that the service sees them with the expected owner."""
    metadata = (("x-service-token", keys.service_token),)
    with grpc.insecure_channel(server.address) as channel:
        registry = thread_registry_pb2_grpc.ThreadRegistryStub(channel)
        for thread, runs in ((w.READ_THREAD, w.READ_RUNS), (w.WRITE_THREAD, w.WRITE_RUNS)):
            reply = registry.RegisterThread(
                thread_registry_pb2.RegisterThreadRequest(thread_id=thread, owner_user_id=w.USER),
                metadata=metadata,
                timeout=10,
            )
            assert reply.owner_user_id == w.USER, reply
            for run in (runs[0], runs[-1]):
                registry.RegisterRun(
                    thread_registry_pb2.RegisterRunRequest(thread_id=thread, run_id=run),
                    metadata=metadata,
                    timeout=10,
                )


def workers_flag_available() -> tuple[bool, str]:
    result = subprocess.run(
        [str(SERVICE_BIN), "serve", "--help"], capture_output=True, text=True, check=False
    )
    if "--workers" in result.stdout:
        return True, "feedback-service serve --workers 2 measured as target service-w2"
    return False, "skipped: `feedback-service serve --help` shows no --workers option"


# --- checks -------------------------------------------------------------------------


def http_call(
    server: Server, method: str, path: str, keys: Secrets, body: dict | None = None
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://{server.address}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {keys.user_token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - loopback only
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class CheckFailed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def precheck(server: Server, scenario: Scenario, keys: Secrets, nonce: str) -> dict:
    """One call with an ordinary client before the load, checking the status
    (and, on the real service, the content). Returns the expected size of one
    response body, which the h2load runs are checked against: a gRPC error has
    no body, so errors hidden behind HTTP 200 show up as missing bytes."""
    if server.protocol == "http":
        return precheck_peer(server, scenario, keys, nonce)
    metadata = (("authorization", f"Bearer {keys.user_token}"),)
    real = server.name.startswith("service")
    with grpc.insecure_channel(server.address) as channel:
        stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
        methods = [scenario.request] if scenario.method != "mixed" else [name for name, _ in w.MIX]
        expected = 0
        for method in methods:
            request = grpc_request(method, f"{nonce}-{method}")
            try:
                reply = getattr(stub, method.split(":")[0])(request, metadata=metadata, timeout=10)
            except grpc.RpcError as error:
                raise CheckFailed(
                    f"{method} on {server.name}: {error.code().name} {error.details()}"
                ) from None
            expected = len(grpc_frame(reply))
            if not real:
                continue
            # Stats count votes: the hot run's are the other users' (USER's rows there are per message).
            hot_total = w.HOT_RUN_OTHER_ROWS
            if method == "ListFeedback":
                expect(
                    len(reply.feedback) == w.LIST_PAGE_SIZE, f"ListFeedback gave {len(reply.feedback)} rows"
                )
                expect(bool(reply.next_page_token), "ListFeedback gave no next_page_token")
                expect(
                    all(f.user_id == w.USER for f in reply.feedback), "ListFeedback showed other users' rows"
                )
            elif method == "ListFeedback:filtered":
                expect(
                    len(reply.feedback) == w.FILTERED_ROWS and not reply.next_page_token,
                    f"filtered ListFeedback gave {len(reply.feedback)} rows, expected {w.FILTERED_ROWS}",
                )
                expect(
                    all(
                        f.user_id == w.USER and f.rating == w.FILTER_RATING and w.FILTER_TAG in f.tags
                        for f in reply.feedback
                    ),
                    "filtered ListFeedback showed a row the filter excludes",
                )
            elif method == "GetFeedbackStats":
                expect(
                    reply.total == hot_total, f"GetFeedbackStats total {reply.total}, expected {hot_total}"
                )
                expect(bool(reply.tags), "GetFeedbackStats counted no tags")
            elif method == "BatchGetFeedbackStats":
                totals = [s.total for s in reply.stats]
                expect(len(totals) == len(w.BATCH_RUNS), f"BatchGetFeedbackStats gave {len(totals)} results")
                expected_totals = [hot_total] + [
                    w.OTHER_READ_RUN_ROWS + (run in w.USER_VOTED_RUNS) for run in w.BATCH_RUNS[1:]
                ]
                expect(totals == expected_totals, f"totals {totals}")
            elif method == "BatchGetCallerFeedback":
                runs = list(reply.runs)
                expect([r.run_id for r in runs] == w.BATCH_RUNS, "BatchGetCallerFeedback answered other runs")
                messages = len(runs[0].message_feedback)
                expect(messages == w.HOT_RUN_USER_ROWS, f"{messages} messages on the hot run")
                voted = [r.run_id for r in runs if r.HasField("run_feedback")]
                expect(voted == w.USER_VOTED_RUNS, f"run feedback on {voted}")
            elif method == "GetThreadFeedbackStats":
                votes = w.HOT_RUN_OTHER_ROWS + (len(w.READ_RUNS) - 1) * w.OTHER_READ_RUN_ROWS
                votes += len(w.USER_VOTED_RUNS)
                expect(reply.total == votes, f"GetThreadFeedbackStats total {reply.total}, expected {votes}")
                expect(reply.runs_with_feedback == len(w.READ_RUNS), f"runs {reply.runs_with_feedback}")
            elif method == "UpsertFeedback":
                again = stub.UpsertFeedback(request, metadata=metadata, timeout=10)
                expect(again.feedback_id == reply.feedback_id, "UpsertFeedback changed the feedback_id")
            elif method == "CreateFeedback":
                try:
                    stub.CreateFeedback(request, metadata=metadata, timeout=10)
                    raise CheckFailed("a second CreateFeedback with the same key succeeded")
                except grpc.RpcError as error:
                    expect(error.code() == grpc.StatusCode.ALREADY_EXISTS, f"repeat gave {error.code().name}")
    return {"response_bytes": expected}


def precheck_peer(server: Server, scenario: Scenario, keys: Secrets, nonce: str) -> dict:
    paths = w.peer_paths()
    expected = 0
    if scenario.peer in ("stats", "mixed"):
        status, body = http_call(server, "GET", paths["stats"], keys)
        expect(status == 200, f"peer stats gave HTTP {status}: {body[:200]!r}")
        total = json.loads(body)["total"]
        expect(total == w.HOT_RUN_USER_ROWS + w.HOT_RUN_OTHER_ROWS, f"peer stats total {total}")
        expected = len(body)
    if scenario.peer in ("create", "mixed"):
        path = f"{paths['create_base']}/{w.WRITE_RUNS[1]}/feedback"
        status, body = http_call(server, "POST", path, keys, {"rating": 1, "message_id": f"check-{nonce}"})
        expect(status == 200, f"peer create gave HTTP {status}: {body[:200]!r}")
        missing = http_call(
            server, "POST", f"{paths['create_base']}/no-such-run/feedback", keys, {"rating": 1}
        )
        expect(missing[0] == 404, f"peer create on an unknown run gave HTTP {missing[0]}")
    return {"response_bytes": expected}


def persisted_writes(server: Server, keys: Secrets) -> int:
    """Feedback rows on the write thread, counted by the service itself: the
    votes, and the message-level feedback (what creates write) per message."""
    metadata = (("authorization", f"Bearer {keys.user_token}"),)
    with grpc.insecure_channel(server.address) as channel:
        stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
        reply = stub.BatchGetFeedbackStats(
            pb.BatchGetFeedbackStatsRequest(
                thread_id=w.WRITE_THREAD, run_ids=w.WRITE_RUNS, include_messages=True
            ),
            metadata=metadata,
            timeout=30,
        )
    return sum(s.total + sum(m.total for m in s.messages) for s in reply.stats)


# --- load tools --------------------------------------------------------------------------

H2LOAD_PATTERNS = {
    "requests": re.compile(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored"
    ),
    "codes": re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx"),
    "traffic": re.compile(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers.*?, .*?\((\d+)\) data"),
}


def percentile(sorted_values: list[int], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))] / 1000.0


@dataclass
class Bench:
    mode: Mode
    load: Load
    keys: Secrets
    work: Path
    bodies: dict[str, Path] = field(default_factory=dict)

    def body_file(self, method: str) -> Path:
        if method not in self.bodies:
            path = self.work / f"{method.replace(':', '-')}.grpc"
            path.write_bytes(grpc_frame(grpc_request(method)))
            self.bodies[method] = path
        return self.bodies[method]

    def h2load_command(
        self, server: Server, scenario: Scenario, duration_s: float, log_file: Path
    ) -> list[str]:
        duration = ["-D", f"{round(duration_s * 1000)}ms"]
        if server.protocol == "http":  # the peer: HTTP/1.1, one call in flight per connection
            url = f"http://{server.address}{w.peer_paths()['stats']}"
            auth = ["-H", f"authorization: Bearer {self.keys.user_token}"]
            return ["h2load", "--h1", "-c", str(self.load.in_flight), "-m", "1", "-t", "1", *duration, *auth,
                    "--log-file", str(log_file), url]  # fmt: skip
        url = f"http://{server.address}/feedback.v1.FeedbackService/{scenario.method}"
        headers = [
            "-H", "content-type: application/grpc",
            "-H", "te: trailers",
            "-H", f"authorization: Bearer {self.keys.user_token}",
        ]  # fmt: skip
        body = str(self.body_file(scenario.request))
        return ["h2load", "-c", str(self.load.conns), "-m", str(self.load.streams), "-t", "1", *duration,
                "-d", body, *headers, "--log-file", str(log_file), url]  # fmt: skip

    def run_h2load(self, server: Server, scenario: Scenario, duration_s: float, expected_bytes: int) -> dict:
        log_file = self.work / "h2load.log"
        log_file.unlink(missing_ok=True)  # h2load appends to it
        command = self.h2load_command(server, scenario, duration_s, log_file)
        result = self._measured(server, command)
        out = result.pop("stdout")
        found = {name: pattern.search(out) for name, pattern in H2LOAD_PATTERNS.items()}
        if not all(found.values()):
            raise RuntimeError(f"unexpected h2load output:\n{out}")
        _total, _started, done, succeeded, failed, errored = map(int, found["requests"].groups())
        ok_2xx = int(found["codes"].group(1))
        data_bytes = int(found["traffic"].group(3))
        latencies = sorted(int(line.split("\t")[2]) for line in log_file.read_text().splitlines() if line)
        problems = [] if succeeded else ["no call completed during the window (a stall)"]
        if failed or errored or ok_2xx != succeeded or done != succeeded:
            problems.append(f"h2load: {done} done, {succeeded} succeeded, {failed} failed, {errored} errored")
        per_response = data_bytes / succeeded if succeeded else 0
        if not (0.9 * expected_bytes - 8 <= per_response <= 1.1 * expected_bytes + 8):
            problems.append(
                f"{per_response:.0f} body bytes per response, expected ~{expected_bytes}: "
                "calls failed behind HTTP 200 (gRPC status in trailers)"
            )
        return {
            **result,
            "succeeded": succeeded,
            "failed": failed + errored + (done - succeeded),
            "rps": succeeded / duration_s,
            "p50_ms": percentile(latencies, 0.50),
            "p99_ms": percentile(latencies, 0.99),
            "bytes_per_response": round(per_response, 1),
            "problems": problems,
        }

    def run_loadgen(self, server: Server, scenario: Scenario, duration_s: float, warmup_s: float) -> dict:
        command = [
            str(PROJECT_PYTHON), str(HERE / "loadgen.py"),
            "--target", server.protocol, "--address", server.address, "--profile", scenario.profile,
            "--token", self.keys.user_token, "--procs", str(self.load.loadgen_procs),
            "--conns", str(self.load.conns // self.load.loadgen_procs), "--streams", str(self.load.streams),
            "--duration", str(duration_s), "--warmup", str(warmup_s),
            "--nonce", secrets.token_hex(6), "--cpu-pids", ",".join(map(str, server.pids)),
            *(["--db-cpu", server.db.spec()] if server.db else []),
        ]  # fmt: skip
        result = self._measured(server, command)
        report = json.loads(result.pop("stdout").strip().splitlines()[-1])
        problems = [f"errors: {report['errors']}"] if report["failed"] else []
        if not report["succeeded"]:
            problems.append("no call completed during the window (a stall)")
        return {
            **result,
            # loadgen measured these over exactly the window after its warm-up
            "server_cpu_s": report["server_cpu_s"],
            "machine_busy_s": report["machine_busy_s"],
            "client_cpu_s": report["client_cpu_s"],
            "db_cpu_s": report["db_cpu_s"],
            "succeeded": report["succeeded"],
            "failed": report["failed"],
            "rps": report["rps"],
            "p50_ms": report["p50_ms"],
            "p99_ms": report["p99_ms"],
            "problems": problems,
        }

    def _measured(self, server: Server, command: list[str]) -> dict:
        """Runs a load tool, with the server's, the database server's and the
        machine's CPU time around it."""
        cpu_before = procstat.cpu_seconds(server.pids)
        db_before = server.db.sample() if server.db else {}
        busy_before = procstat.machine_busy_seconds()
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
        wall = time.monotonic() - started
        usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        db_after = server.db.sample() if server.db else {}
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
        if not server.alive():
            raise RuntimeError(f"{server.name} died: {server.log_path.read_text()[-2000:]}")
        return {
            "stdout": done.stdout,
            "wall_s": wall,
            "server_cpu_s": procstat.cpu_seconds(server.pids) - cpu_before,
            "db_cpu_s": procstat.DatabaseServer.seconds_between(db_before, db_after) if server.db else None,
            "machine_busy_s": procstat.machine_busy_seconds() - busy_before,
            "client_cpu_s": (usage_after.ru_utime + usage_after.ru_stime)
            - (usage_before.ru_utime + usage_before.ru_stime),
        }

    def run_once(self, server: Server, scenario: Scenario, duration_s: float, expected_bytes: int) -> dict:
        if scenario.tool == "h2load":
            return self.run_h2load(server, scenario, duration_s, expected_bytes)
        return self.run_loadgen(server, scenario, duration_s, self.mode.warmup_s)


def tool_for(scenario: Scenario, server: Server) -> str:
    if scenario.tool == "h2load":
        return "h2load --h1" if server.protocol == "http" else "h2load (h2c)"
    return "loadgen (HTTP/1.1)" if server.protocol == "http" else "loadgen (grpc.aio)"


def summarise(runs: list[dict], duration_s: float) -> dict:
    rps = [r["rps"] for r in runs]
    cpu_per_request = [r["server_cpu_s"] * 1000 / r["succeeded"] for r in runs if r["succeeded"]]
    measured_db = [r for r in runs if r.get("db_cpu_s") is not None]
    db_per_request = [r["db_cpu_s"] * 1000 / r["succeeded"] for r in measured_db if r["succeeded"]]
    total_per_request = [
        (r["server_cpu_s"] + r["db_cpu_s"]) * 1000 / r["succeeded"] for r in measured_db if r["succeeded"]
    ]
    other = [
        max(0.0, r["machine_busy_s"] - r["server_cpu_s"] - (r.get("db_cpu_s") or 0) - r["client_cpu_s"])
        / ((os.cpu_count() or 1) * duration_s)
        * 100
        for r in runs
    ]
    return {
        "rps": statistics.median(rps),
        "rps_min": min(rps),
        "rps_max": max(rps),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "server_cpu_s": statistics.median(r["server_cpu_s"] for r in runs),
        "cpu_ms_per_request": statistics.median(cpu_per_request) if cpu_per_request else None,
        # The database server's CPU (PostgreSQL, MariaDB; None where the database is in our process).
        "db_cpu_s": statistics.median(r["db_cpu_s"] for r in measured_db) if measured_db else None,
        "db_cpu_ms_per_request": statistics.median(db_per_request) if db_per_request else None,
        # Ours + the database server's, per call (median over the runs of the per-run sums).
        "total_cpu_ms_per_request": statistics.median(total_per_request) if total_per_request else None,
        "client_cpu_s": statistics.median(r["client_cpu_s"] for r in runs),
        "other_cpu_pct": statistics.median(other),
        "failed": sum(r["failed"] for r in runs),
        "valid": all(not r["problems"] for r in runs),
    }


# --- data ------------------------------------------------------------------------------


def layout_version() -> str:
    """Changes when the loader, the layout or the service's schema may have."""
    digest = sha256()
    for name in ("workload.py", "load_rows.py"):
        digest.update((HERE / name).read_bytes())
    for module in ("feedback_service.store.models", "feedback_service.store.migrations"):
        digest.update(Path(importlib.util.find_spec(module).origin).read_bytes())
    return digest.hexdigest()[:12]


def cached_database(rows: int) -> Path:
    """A database loaded with `rows` feedback rows, built once and reused while
    the loader, the layout and the schema version stay the same."""
    CACHE_DIR.mkdir(exist_ok=True)
    path = CACHE_DIR / f"feedback-{rows}-{layout_version()}.db"
    if path.exists():
        return path
    for stale in CACHE_DIR.glob(f"feedback-{rows}-*.db"):
        stale.unlink()
    log(f"loading {rows:,} rows into {path.name} (once; reused by later runs)")
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as scratch:
        target = Path(scratch) / "feedback.db"
        subprocess.run(
            [str(PROJECT_PYTHON), str(HERE / "load_rows.py"), "--db", str(target), "--rows", str(rows)],
            check=True,
            cwd=ROOT,
        )
        for suffix in ("-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        target.rename(path)
    return path


def fresh_copy(source: Path, directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    shutil.copyfile(source, target)
    return target


# --- the run -------------------------------------------------------------------------------


def measure_scenario(
    bench: Bench, scale: int, scenario: Scenario, servers: list[Server], results: list[dict]
) -> None:
    mode = bench.mode
    nonce = secrets.token_hex(4)
    checked: dict[str, dict] = {}
    for server in servers:
        try:
            checked[server.name] = precheck(server, scenario, bench.keys, nonce)
        except CheckFailed as failure:
            log(f"  CHECK FAILED {server.name}: {failure}")
            entry = {"scale": scale, "scenario": scenario.key, "label": scenario.label, "target": server.name}
            entry.update(tool=tool_for(scenario, server), check_failed=str(failure), runs=[], summary=None)
            results.append(entry)
    active = [s for s in servers if s.name in checked]
    peaks_reset = {s.name: procstat.reset_peak_rss(s.pids) for s in active}
    count_writes = scenario.method == "CreateFeedback"
    writes_before = {
        s.name: persisted_writes(s, bench.keys)
        for s in active
        if count_writes and s.name.startswith("service")
    }
    if scenario.tool == "h2load":  # loadgen warms up inside every run
        for server in active:
            bench.run_once(server, scenario, mode.warmup_s, checked[server.name]["response_bytes"])
    runs: dict[str, list[dict]] = {s.name: [] for s in active}
    for index in range(mode.runs):
        # Rotate the order so no target always runs right after another.
        order = active[index % len(active) :] + active[: index % len(active)] if active else []
        for server in order:
            run = bench.run_once(server, scenario, mode.duration_s, checked[server.name]["response_bytes"])
            runs[server.name].append(run)
            flag = f"  PROBLEM: {'; '.join(run['problems'])}" if run["problems"] else ""
            db_cpu = f"  DB CPU {run['db_cpu_s']:5.2f}s" if run.get("db_cpu_s") is not None else ""
            log(
                f"  {scale_name(scale)} {scenario.key:<6} {server.name:<13} run {index + 1}/{mode.runs}: "
                f"{run['rps']:8.0f} req/s  p50 {run['p50_ms']:7.2f} ms  p99 {run['p99_ms']:7.2f} ms  "
                f"server CPU {run['server_cpu_s']:5.2f}s{db_cpu}{flag}"
            )
    for server in active:
        summary = summarise(runs[server.name], mode.duration_s)
        summary["peak_rss_mib"] = procstat.peak_rss_bytes(server.pids) / 2**20
        summary["peak_rss_scope"] = "this scenario" if peaks_reset[server.name] else "since server start"
        entry = {
            "scale": scale,
            "scenario": scenario.key,
            "label": scenario.label,
            "target": server.name,
            "tool": tool_for(scenario, server),
            "runs": runs[server.name],
            "summary": summary,
        }
        if server.name in writes_before:
            # Every create that succeeded must have left a row (warm-up calls add more).
            persisted = persisted_writes(server, bench.keys) - writes_before[server.name]
            measured = sum(r["succeeded"] for r in runs[server.name])
            entry["persisted_new_rows"] = persisted
            if persisted < measured:
                summary["valid"] = False
                log(f"  PROBLEM {server.name}: {measured} creates succeeded, {persisted} rows persisted")
        results.append(entry)


def server_database_load(url: str, rows: int) -> tuple[float, str]:
    """Loads `rows` rows into the empty database at url with load_rows.py;
    returns the seconds it took and its summary line."""
    started = time.monotonic()
    done = subprocess.run(
        [str(PROJECT_PYTHON), str(HERE / "load_rows.py"), "--url", url, "--rows", str(rows)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load_rows.py failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return time.monotonic() - started, done.stdout.strip()


class TargetFailed(Exception):
    """A target that could not be prepared or started; the run goes on without it."""


@dataclass
class Run:
    """One benchmark run: what was asked for, and what has to be cleaned up."""

    args: argparse.Namespace
    mode: Mode
    keys: Secrets
    selected: list[str]
    workers_ok: bool
    doc: dict
    databases: dbs.Databases | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # backend -> why it cannot be used

    def failed(self, target: str, scale: int | None, reason: str) -> None:
        where = f" at {scale_name(scale)}" if scale else ""
        log(f"!!! TARGET {target} NOT MEASURED{where}: {reason}")
        self.doc["target_failures"].append({"target": target, "scale": scale, "reason": reason[:2000]})

    def prepare_database_servers(self) -> None:
        """Connects to each database server a selected target needs, describes
        it, and drops the databases of benchmark runs that were killed."""
        kinds = {SERVICE_TARGETS[t][0] for t in self.selected if t in SERVICE_TARGETS} - {"sqlite"}
        self.databases = dbs.Databases(
            {kind: dbs.ServerURL(kind, getattr(self.args, f"{kind}_url")) for kind in ("postgresql", "mysql")}
        )
        atexit.register(self.databases.drop_all)
        for kind in {"postgresql", "mysql"} - kinds:
            # Not used by this run: only tidied, if it is there at all.
            try:
                stale = self.databases.drop_stale(kind)
            except dbs.DatabaseError:
                continue
            if stale:
                log(f"dropped databases left by earlier, killed runs: {', '.join(stale)}")
        for kind in sorted(kinds):
            try:
                self.doc["databases"][kind] = self.databases.describe(kind)
                stale = self.databases.drop_stale(kind)
                if stale:
                    log(f"dropped databases left by earlier, killed runs: {', '.join(stale)}")
                process = self.databases.server_process(kind, "")
                if process is None:
                    url = self.databases.servers[kind].url
                    note = f"the {BACKENDS[kind]} server at {url} is not on this machine: DB CPU not measured"
                    log(f"!!! {note}")
                    self.doc["databases"][kind]["cpu_note"] = note
                else:
                    self.doc["databases"][kind]["server_pid"] = process.pid
            except Exception as error:  # noqa: BLE001 - reported; its targets are skipped
                self.unavailable[kind] = f"{type(error).__name__}: {error}"
                for target in self.selected:
                    if SERVICE_TARGETS.get(target, ("",))[0] == kind:
                        self.failed(target, None, self.unavailable[kind])

    def start_scale(self, scale: int, sqlite_db: Path | None) -> list[Server]:
        """Every selected target at this scale, each on its own fresh database."""
        scale_dir = WORK_DIR / scale_name(scale)
        servers: list[Server] = []
        for target in self.selected:
            if target not in SERVICE_TARGETS or SERVICE_TARGETS[target][0] != "sqlite":
                continue
            if SERVICE_TARGETS[target][1] > 1 and not self.workers_ok:
                continue
            try:
                fresh_copy(sqlite_db, scale_dir / target, "feedback.db")
                workers = SERVICE_TARGETS[target][1]
                servers.append(start_service(target, scale_dir / target, self.keys, workers, WORK_DIR))
            except Exception as error:  # noqa: BLE001 - reported; the run goes on without it
                self.failed(target, scale, f"{type(error).__name__}: {error}")
        for kind in ("postgresql", "mysql"):
            servers += self.start_on_server(kind, scale, scale_dir)
        if "peer" in self.selected:
            try:
                peer_db = fresh_copy(sqlite_db, scale_dir / "peer", "peer.db")
                servers.append(start_peer(peer_db, self.keys, WORK_DIR))
            except Exception as error:  # noqa: BLE001 - reported; the run goes on without it
                self.failed("peer", scale, f"{type(error).__name__}: {error}")
        return servers

    def start_on_server(self, kind: str, scale: int, scale_dir: Path) -> list[Server]:
        """The selected targets on a database server: the rows are loaded once
        into the first target's database; on PostgreSQL the next target gets a
        copy of it (CREATE DATABASE ... TEMPLATE)."""
        targets = [
            t
            for t in self.selected
            if SERVICE_TARGETS.get(t, ("",))[0] == kind and (SERVICE_TARGETS[t][1] == 1 or self.workers_ok)
        ]
        if not targets or kind in self.unavailable:
            return []
        assert self.databases is not None
        servers: list[Server] = []
        names = {t: dbs.database_name(scale_name(scale), t.removeprefix("service-")) for t in targets}
        try:
            first = targets[0]
            url = self.databases.create(kind, names[first])
            log(f"loading {scale:,} rows into {BACKENDS[kind]} database {names[first]}")
            seconds, summary = server_database_load(url, scale)
            log(f"  {summary}")
            self.doc["loads"].append(
                {"scale": scale, "backend": kind, "database": names[first], "seconds": round(seconds, 1)}
            )
            for target in targets[1:]:
                started = time.monotonic()
                self.databases.create(kind, names[target], template=names[first])
                log(f"  copied it to {names[target]} in {time.monotonic() - started:.1f}s")
                self.doc["loads"].append(
                    {"scale": scale, "backend": kind, "database": names[target],
                     "seconds": round(time.monotonic() - started, 1), "copy_of": names[first]}
                )  # fmt: skip
        except Exception as error:  # noqa: BLE001 - reported; these targets are skipped at this scale
            for target in targets:
                self.failed(target, scale, f"preparing its database: {type(error).__name__}: {error}")
            return []
        for target in targets:
            try:
                servers.append(
                    start_service(
                        target,
                        scale_dir / target,
                        self.keys,
                        SERVICE_TARGETS[target][1],
                        WORK_DIR,
                        database_url=self.databases.servers[kind].database_url(names[target]),
                        db=self.databases.server_process(kind, names[target]),
                    )
                )
            except Exception as error:  # noqa: BLE001 - reported; the run goes on without it
                self.failed(target, scale, f"{type(error).__name__}: {error}")
        return servers

    def end_scale(self, scale: int, servers: list[Server]) -> None:
        for server in servers:
            server.stop()
        shutil.rmtree(WORK_DIR / scale_name(scale), ignore_errors=True)
        if self.databases:
            for kind, name in list(self.databases.created):
                if name.startswith(dbs.database_name(scale_name(scale), "")):
                    self.databases.drop(kind, name)

    def cleanup(self) -> None:
        """Stops every server and drops every database of the run, whatever
        happened; signals are ignored meanwhile so the cleanup finishes."""
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in CLEANUP_SIGNALS}
        try:
            stop_all()
            if self.databases and self.databases.created:
                names = ", ".join(name for _, name in self.databases.created)
                log(f"dropping the run's databases: {names}")
            left = self.databases.drop_all() if self.databases else []
            for failure in left:
                log(f"!!! COULD NOT DROP {failure}: drop it by hand")
            if left:
                self.doc["cleanup_failures"] = left
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


CLEANUP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def interrupted(signum: int, _frame: object) -> None:
    """SIGTERM and SIGHUP stop the run as Ctrl-C does, through the same cleanup."""
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def run_benchmark(args: argparse.Namespace) -> dict:
    mode = MODES["quick" if args.quick else "full"]
    if args.runs:
        mode = Mode(mode.name, args.runs, mode.duration_s, mode.warmup_s, mode.noop_every_scale)
    if args.duration:
        mode = Mode(mode.name, mode.runs, args.duration, mode.warmup_s, mode.noop_every_scale)
    load = Load()
    started = time.time()
    stop_left_over_servers()
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    WORK_DIR.mkdir(parents=True)
    keys = Secrets()
    selected = [t for t in TARGETS if t in (args.targets or TARGETS)]
    workers_ok, workers_note = workers_flag_available()
    if args.no_workers and workers_ok:
        workers_ok, workers_note = False, "skipped: --no-workers given"
    two = [t for t in selected if SERVICE_TARGETS.get(t, ("", 1))[1] > 1]
    if workers_ok and two:
        workers_note = f"feedback-service serve --workers 2 measured as {', '.join(two)}"
    elif workers_ok:
        workers_note = "no --workers 2 target selected"
    elif two:
        log(f"!!! {', '.join(two)} not measured: {workers_note}")
    log(f"mode {mode.name}: {mode.runs} runs x {mode.duration_s}s per scenario and target; {workers_note}")
    log(f"targets: {', '.join(selected)}")
    scales = [SMALL, LARGE] if not args.small_only else [SMALL]
    doc: dict = {
        "mode": mode.name,
        "settings": {**asdict(mode), **asdict(load), "in_flight": load.in_flight},
        "machine": machine_description(),
        "workers_variant": {"measured": workers_ok, "note": workers_note},
        "targets": selected,
        "scales": scales,
        "databases": {},
        "loads": [],
        "target_failures": [],
        "results": [],
    }
    run = Run(args, mode, keys, selected, workers_ok, doc)
    atexit.register(run.cleanup)  # should anything escape the finally below
    bench = Bench(mode, load, keys, WORK_DIR)
    try:
        run.prepare_database_servers()
        on_sqlite = {"service", "service-w2", "peer"} & set(selected)
        sqlite_dbs = {rows: cached_database(rows) if on_sqlite else None for rows in scales}
        noop = None
        if "noop" in selected:
            try:
                noop = start_noop(keys, WORK_DIR)
            except Exception as error:  # noqa: BLE001 - reported; the ratios to it are left empty
                run.failed("noop", None, f"{type(error).__name__}: {error}")
        for scale in scales:
            log(f"scale {scale:,} rows: starting servers, each on its own fresh database")
            servers = run.start_scale(scale, sqlite_dbs[scale])
            peer = next((s for s in servers if s.name == "peer"), None)
            for scenario in SCENARIOS:
                if scale != SMALL and scenario.kind == "write":
                    continue  # writes are measured on the small database only
                if args.scenarios and scenario.key not in args.scenarios:
                    continue
                targets = [s for s in servers if s.protocol == "grpc"]
                if noop and (scale == SMALL or mode.noop_every_scale):
                    targets.append(noop)
                if scenario.peer and peer:
                    targets.append(peer)
                log(f"{scale_name(scale)} {scenario.label}: {', '.join(t.name for t in targets)}")
                measure_scenario(bench, scale, scenario, targets, doc["results"])
            run.end_scale(scale, servers)
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - recorded with the results
        # Keep what was measured; the error is written with it.
        doc["error"] = f"{type(error).__name__}: {error}"[:4000]
        log(f"stopped early: {doc['error']}")
    finally:
        run.cleanup()
    doc["elapsed_s"] = round(time.time() - started, 1)
    doc["machine"]["loadavg_end"] = os.getloadavg()
    doc["comparisons"] = comparisons(doc)
    return doc


def comparisons(doc: dict) -> list[dict]:
    """Per scale, scenario and service target: the service against the noop
    ceiling measured in the same run (throughput and CPU per call), against the
    peer, and, for a two-process target, against its one-process twin."""
    by_key = {(r["scale"], r["scenario"], r["target"]): r for r in doc["results"] if r.get("summary")}
    rows = []
    for scale in doc["scales"]:
        for scenario in SCENARIOS:
            noop = by_key.get((scale, scenario.key, "noop")) or by_key.get((SMALL, scenario.key, "noop"))
            peer = by_key.get((scale, scenario.key, "peer"))
            for target, (backend, workers) in SERVICE_TARGETS.items():
                result = by_key.get((scale, scenario.key, target))
                if not result:
                    continue
                s = result["summary"]
                n = noop["summary"] if noop else {}
                single = next((t for t, (b, k) in SERVICE_TARGETS.items() if b == backend and k == 1), target)
                one = by_key.get((scale, scenario.key, single)) if workers > 1 else None
                rows.append(
                    {
                        "scale": scale,
                        "scenario": scenario.key,
                        "label": scenario.label,
                        "kind": scenario.kind,
                        "target": target,
                        "backend": backend,
                        "workers": workers,
                        "tool": result["tool"],
                        "service": s,
                        "noop_rps": n.get("rps"),
                        "noop_p99_ms": n.get("p99_ms"),
                        "noop_cpu_ms_per_request": n.get("cpu_ms_per_request"),
                        "noop_measured_at": noop["scale"] if noop else None,
                        # req/s ÷ the noop's: the share of the framework's ceiling reached
                        "vs_noop": ratio(s["rps"], n.get("rps")),
                        # CPU ms/req ÷ the noop's: bare gRPC calls' worth of CPU per call (the headline)
                        "cpu_vs_noop": ratio(s.get("cpu_ms_per_request"), n.get("cpu_ms_per_request")),
                        # the same with the database server's CPU added to ours
                        "total_cpu_vs_noop": ratio(
                            s.get("total_cpu_ms_per_request")
                            if s.get("total_cpu_ms_per_request") is not None
                            else (s.get("cpu_ms_per_request") if backend == "sqlite" else None),
                            n.get("cpu_ms_per_request"),
                        ),
                        "peer_rps": peer["summary"]["rps"] if peer and target == "service" else None,
                        "peer_tool": peer["tool"] if peer and target == "service" else None,
                        "vs_peer": ratio(s["rps"], peer["summary"]["rps"])
                        if peer and target == "service"
                        else None,
                        "peer_p99_ms": peer["summary"]["p99_ms"] if peer and target == "service" else None,
                        "peer_cpu_ms_per_request": peer["summary"]["cpu_ms_per_request"]
                        if peer and target == "service"
                        else None,
                        "one_process_target": single if workers > 1 else None,
                        "one_process_rps": one["summary"]["rps"] if one else None,
                        "vs_one_process": ratio(s["rps"], one["summary"]["rps"]) if one else None,
                    }
                )
    return rows


def ratio(value, reference):
    if value is None or not reference or value != value or reference != reference:
        return None
    return value / reference


# --- machine ---------------------------------------------------------------------------------


def package_versions(names: list[str]) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def peer_versions() -> dict:
    script = (
        "import importlib.metadata as m, json, sys, sqlite3; "
        "print(json.dumps({'python': sys.version.split()[0], 'sqlite': sqlite3.sqlite_version, 'packages': "
        "{p: m.version(p) for p in ['fastapi', 'starlette', 'pydantic', 'uvicorn', 'httptools', "
        "'SQLAlchemy', 'aiosqlite', 'PyJWT']}}))"
    )
    done = subprocess.run([str(PEER_PYTHON), "-c", script], capture_output=True, text=True, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-500:]}


def machine_description() -> dict:
    import sqlite3

    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = Path("/proc/meminfo").read_text()
    total_kib = int(re.search(r"^MemTotal:\s*(\d+)", meminfo, re.M).group(1))
    h2load = subprocess.run(
        ["h2load", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", ".", ":(exclude)benchmarks"],
        capture_output=True,
        text=True,
    )
    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(total_kib / 2**20, 1),
        "kernel": platform.release(),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "h2load": h2load,
        "service_packages": package_versions(
            [
                "feedback-service",
                "grpcio",
                "protobuf",
                "peewee",
                "PyJWT",
                "grpcio-health-checking",
                "psycopg2-binary",
                "PyMySQL",
            ]
        ),
        "peer": peer_versions(),
        "commit": git.stdout.strip(),
        "work_tree_changed": bool(dirty.stdout.strip()),
    }


# --- output ------------------------------------------------------------------------------------


def fmt(value, digits: int = 0, suffix: str = "") -> str:
    if value is None or value != value:  # None or NaN
        return "—"
    return f"{value:,.{digits}f}{suffix}"


def backend_label(doc: dict, backend: str) -> str:
    """SQLite, PostgreSQL, or the product the MySQL-protocol server said it is."""
    described = doc.get("databases", {}).get(backend, {})
    return described.get("product") or BACKENDS.get(backend, backend)


def describe_databases(doc: dict) -> list[str]:
    described = doc.get("databases", {})
    if not described:
        return []
    servers = []
    for d in (described[kind] for kind in ("postgresql", "mysql") if kind in described):
        settings = dict(d.get("settings", {}))
        if "innodb_buffer_pool_size" in settings:
            settings["innodb_buffer_pool_size"] = (
                f"{int(settings['innodb_buffer_pool_size']) / 2**20:.0f} MiB"
            )
        servers.append(
            f"{d['product']} {d['version'].split()[0]} ({', '.join(f'{k} {v}' for k, v in settings.items())})"
            + (f" [{d['cpu_note']}]" if d.get("cpu_note") else "")
        )
    loads = [
        f"{scale_name(x['scale'])} {BACKENDS[x['backend']]} "
        + (f"copy {x['seconds']:.1f} s" if x.get("copy_of") else f"load {x['seconds']:.1f} s")
        for x in doc.get("loads", [])
    ]
    return [
        f"- Databases: {'; '.join(servers)}. Each target "
        "has its own database, created and loaded by the run (COPY on PostgreSQL, LOAD DATA on MariaDB), "
        "dropped at its end" + (f"; {', '.join(loads)}." if loads else "."),
    ]


def not_measured(failure: dict) -> str:
    where = f" at {scale_name(failure['scale'])}" if failure["scale"] else ""
    return f"{failure['target']}{where}: {failure['reason'].splitlines()[0][:300]}"


def render_markdown(doc: dict) -> str:
    m = doc["machine"]
    s = doc["settings"]
    rows_by_scale = {scale: [c for c in comparisons(doc) if c["scale"] == scale] for scale in doc["scales"]}
    failures = doc.get("target_failures", [])
    lines = [
        f"# feedback-service benchmark ({doc['mode']} mode)",
        "",
        f"{m['date_utc']}, commit {m['commit']}{' (work tree changed)' if m['work_tree_changed'] else ''}; "
        f"took {doc['elapsed_s'] / 60:.1f} min.",
        "",
        f"- Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"load average {m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end.",
        f"- Service: Python {m['python']}, SQLite {m['sqlite']}, "
        + ", ".join(f"{k} {v}" for k, v in m["service_packages"].items()),
        *describe_databases(doc),
        "- Peer: Python {}, {}".format(
            m["peer"].get("python", "?"),
            ", ".join(f"{k} {v}" for k, v in m["peer"].get("packages", {}).items()),
        ),
        f"- Load: {m['h2load']}; {s['in_flight']} calls in flight for every target "
        f"({s['conns']} HTTP/2 connections x {s['streams']} streams, "
        f"or {s['in_flight']} HTTP/1.1 connections); "
        f"{s['runs']} runs of {s['duration_s']}s per scenario and target, medians reported.",
        *([f"- Targets: {', '.join(doc['targets'])}."] if doc.get("targets") else []),
        f"- Workers: {doc['workers_variant']['note']}.",
        "",
        *([f"**Incomplete: the run stopped early ({doc['error']}).**", ""] if doc.get("error") else []),
        *(["**Not measured:**", "", *(f"- {not_measured(f)}" for f in failures), ""] if failures else []),
        "## CPU per call against the ceiling, by database",
        "",
        "**CPU ÷ noop** (the headline): the service process's CPU ms per call divided by the no-op gRPC "
        "server's, same scenario, same run: how many bare gRPC calls' worth of CPU one call costs the "
        "service. **DB CPU ms/req**: what the database server spent per call (PostgreSQL: the backends "
        "of the target's database and the server's background processes; MariaDB: the whole server "
        "process); SQLite runs inside the service, so its share is already in the service's CPU. "
        "**Ours + DB**: both, per call, and that ÷ the noop's CPU per call. "
        "÷ noop after req/s: the service's req/s over the noop's (the share of the ceiling reached). "
        "Other CPU: share of the machine used by anything else during the runs (noise).",
        "",
    ]
    single = [t for t, (_, workers) in SERVICE_TARGETS.items() if workers == 1]
    failed_checks = {
        (r["scale"], r["scenario"], r["target"]): r["check_failed"]
        for r in doc["results"]
        if not r.get("summary")
    }
    noop_results = {(r["scale"], r["scenario"]): r for r in doc["results"] if r["target"] == "noop"}
    for scale in doc["scales"]:
        rows = [c for c in rows_by_scale[scale] if c["target"] in single]
        scenarios = [sc for sc in SCENARIOS if any(c["scenario"] == sc.key for c in rows)]
        if not scenarios:
            continue
        lines += [
            f"### {scale:,} feedback rows",
            "",
            "| Scenario | Backend | req/s | ÷ noop | p50 ms | p99 ms | CPU ms/req | **CPU ÷ noop** "
            "| DB CPU ms/req | Ours + DB ms/req | Ours + DB ÷ noop | Other CPU |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for scenario in scenarios:
            group = [c for c in rows if c["scenario"] == scenario.key]
            tool = group[0]["tool"].split(" (")[0].split(" --")[0]
            label = f"**{scenario.label}** ({tool})"
            noop = noop_results.get((scale, scenario.key)) or noop_results.get((SMALL, scenario.key))
            if noop and noop.get("summary"):
                n = noop["summary"]
                note = "" if noop["scale"] == scale else " ¹"
                lines.append(
                    f"| {label} | noop (ceiling){note} | {fmt(n['rps'])} | 1.00 | {fmt(n['p50_ms'], 1)} "
                    f"| {fmt(n['p99_ms'], 1)} | {fmt(n['cpu_ms_per_request'], 2)} | 1.00 | — | — | — "
                    f"| {fmt(n['other_cpu_pct'], 0, '%')} |"
                )
                label = ""
            for target in single:
                c = next((c for c in group if c["target"] == target), None)
                backend = backend_label(doc, SERVICE_TARGETS[target][0])
                if c is None:
                    if (scale, scenario.key, target) in failed_checks:
                        lines.append(f"| {label} | {backend} ⚠ | check failed | " + "| " * 9 + "|")
                        label = ""
                    continue
                sv = c["service"]
                in_ours = c["backend"] == "sqlite"
                total = sv["cpu_ms_per_request"] if in_ours else sv.get("total_cpu_ms_per_request")
                lines.append(
                    f"| {label} | {backend}{'' if sv['valid'] else ' ⚠'} | {fmt(sv['rps'])} "
                    f"| {fmt(c['vs_noop'], 2)} | {fmt(sv['p50_ms'], 1)} | {fmt(sv['p99_ms'], 1)} "
                    f"| {fmt(sv['cpu_ms_per_request'], 2)} | **{fmt(c['cpu_vs_noop'], 2)}** "
                    f"| {'in ours' if in_ours else fmt(sv.get('db_cpu_ms_per_request'), 2)} "
                    f"| {fmt(total, 2)} "
                    f"| {fmt(c['total_cpu_vs_noop'], 2)} | {fmt(sv['other_cpu_pct'], 0, '%')} |"
                )
                label = ""
        lines.append("")
    if any(c["noop_measured_at"] not in (None, c["scale"]) for c in comparisons(doc)):
        lines += [
            "¹ the ceiling measured at the small scale (it reads no data); full mode re-measures it.",
            "",
        ]
    lines += ["⚠ marks a scenario whose checks failed (see the JSON and the last table).", ""]
    lines += render_workers(doc, rows_by_scale)
    lines += render_peer(rows_by_scale)
    lines += [
        "## Every target",
        "",
        "| Rows | Scenario | Target | Tool | req/s (min to max) | p50 ms | p99 ms | CPU s/run | CPU ms/req "
        "| DB CPU ms/req | Ours + DB ms/req | Peak RSS MiB | Other CPU | Failed calls | Checks |",
        "|--:|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in doc["results"]:
        if not r.get("summary"):
            lines.append(
                f"| {scale_name(r['scale'])} | {r['label']} | {r['target']} | {r['tool']} "
                f"| — | — | — | — | — | — | — | — | — | — | failed: {r['check_failed']} |"
            )
            continue
        x = r["summary"]
        problems = sorted({p for run in r["runs"] for p in run["problems"]})
        lines.append(
            f"| {scale_name(r['scale'])} | {r['label']} | {r['target']} | {r['tool']} "
            f"| {fmt(x['rps'])} ({fmt(x['rps_min'])} to {fmt(x['rps_max'])}) | {fmt(x['p50_ms'], 1)} "
            f"| {fmt(x['p99_ms'], 1)} | {fmt(x['server_cpu_s'], 2)} | {fmt(x['cpu_ms_per_request'], 2)} "
            f"| {fmt(x.get('db_cpu_ms_per_request'), 2)} | {fmt(x.get('total_cpu_ms_per_request'), 2)} "
            f"| {fmt(x['peak_rss_mib'])} | {fmt(x['other_cpu_pct'], 0, '%')} | {x['failed']} "
            f"| {'ok' if x['valid'] else '; '.join(problems)} |"
        )
    return "\n".join(lines) + "\n"


def render_workers(doc: dict, rows_by_scale: dict) -> list[str]:
    """Two server processes against one, per backend, reads and writes apart."""
    pairs = {
        backend: target
        for target, (backend, workers) in SERVICE_TARGETS.items()
        if workers > 1 and any(c["target"] == target for rows in rows_by_scale.values() for c in rows)
    }
    if not pairs:
        return []
    labels = {backend: backend_label(doc, backend) for backend in pairs}
    head = " | ".join(f"{labels[b]} req/s, 1 → 2 | ratio" for b in pairs)
    cpu_head = " | ".join(
        f"{labels[b]} {'CPU' if b == 'sqlite' else 'ours + DB'} ms/req, 1 → 2" for b in pairs
    )
    lines = [
        "## Two server processes (`serve --workers 2`) against one",
        "",
        "ratio = req/s of two processes ÷ one process's, same database, same run. SQLite lets one writer "
        "at a time, across processes too; PostgreSQL's processes share no file lock. On 2 cores "
        "shared with the load tool (and, on PostgreSQL, its server), about 1 means the extra "
        "process buys nothing.",
        "",
        f"| Rows | Scenario | Kind | {head} | {cpu_head} |",
        "|--:|---|---|" + "--:|--:|" * len(pairs) + "--:|" * len(pairs),
    ]
    by_kind: dict[tuple[str, str], list[float]] = {}
    for scale, rows in rows_by_scale.items():
        for scenario in SCENARIOS:
            cells, cpu_cells, any_pair = [], [], False
            for backend, target in pairs.items():
                two = next((c for c in rows if c["scenario"] == scenario.key and c["target"] == target), None)
                one_target = two["one_process_target"] if two else None
                one = next(
                    (c for c in rows if c["scenario"] == scenario.key and c["target"] == one_target), None
                )
                if two and one:
                    any_pair = True
                    if two["vs_one_process"] is not None:
                        by_kind.setdefault((scenario.kind, backend), []).append(two["vs_one_process"])
                    key = "cpu_ms_per_request" if backend == "sqlite" else "total_cpu_ms_per_request"
                    cells.append(f"{fmt(one['service']['rps'])} → {fmt(two['service']['rps'])} "
                                 f"| {fmt(two['vs_one_process'], 2)}")  # fmt: skip
                    cpu_cells.append(f"{fmt(one['service'].get(key), 2)} → {fmt(two['service'].get(key), 2)}")
                else:
                    cells.append("— | —")
                    cpu_cells.append("—")
            if any_pair:
                lines.append(
                    f"| {scale_name(scale)} | {scenario.label} | {scenario.kind} | {' | '.join(cells)} "
                    f"| {' | '.join(cpu_cells)} |"
                )
    lines.append("")
    summary = []
    for kind in ("read", "write", "mixed"):
        parts = [
            f"{labels[b]} {statistics.median(by_kind[(kind, b)]):.2f}" for b in pairs if (kind, b) in by_kind
        ]
        if parts:
            summary.append(f"{kind if kind == 'mixed' else kind + 's'}: {', '.join(parts)}")
    if summary:
        lines += [f"Median ratio by kind of scenario: {'; '.join(summary)}.", ""]
    return lines


def render_peer(rows_by_scale: dict) -> list[str]:
    rows = [c for rows in rows_by_scale.values() for c in rows if c["target"] == "service" and c["peer_rps"]]
    if not rows:
        return []
    lines = [
        "## The SQLite service against the peer",
        "",
        "÷ peer: the service's req/s over the FastAPI peer's at the same concurrency (above 1 = faster). "
        "GetFeedbackStats and CreateFeedback are the same operations over REST; the peer's mixed profile "
        "is 90% stats reads and 10% creates (it has no list or batch route), so that ratio is indicative.",
        "",
        "| Rows | Scenario | Tool | req/s | p50 ms | p99 ms | CPU ms/req | Peak RSS MiB "
        "| peer tool | peer req/s | ÷ peer | peer p99 ms | peer CPU ms/req |",
        "|--:|---|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    for c in rows:
        sv = c["service"]
        lines.append(
            f"| {scale_name(c['scale'])} | {c['label']}{'' if sv['valid'] else ' ⚠'} | {c['tool']} "
            f"| {fmt(sv['rps'])} | {fmt(sv['p50_ms'], 1)} | {fmt(sv['p99_ms'], 1)} "
            f"| {fmt(sv['cpu_ms_per_request'], 2)} | {fmt(sv['peak_rss_mib'])} | {c['peer_tool']} "
            f"| {fmt(c['peer_rps'])} | {fmt(c['vs_peer'], 2)} | {fmt(c['peer_p99_ms'], 1)} "
            f"| {fmt(c['peer_cpu_ms_per_request'], 2)} |"
        )
    return [*lines, ""]


def without_nan(value):
    """NaN (a run where no call completed) as null, so the file is strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_nan(v) for v in value]
    return value


def write_results(doc: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("latest.json", json.dumps(without_nan(doc), indent=1, allow_nan=False) + "\n"),
        ("latest.md", render_markdown(doc)),
    ):
        temporary = out_dir / f"{name}.tmp"
        temporary.write_text(text)
        temporary.replace(out_dir / name)
    log(f"wrote {out_dir / 'latest.json'} and {out_dir / 'latest.md'}")


def target_list(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown target {', '.join(unknown)}: choose from {','.join(TARGETS)}"
        )
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, to try it (~6-7 minutes)")
    parser.add_argument("--runs", type=int, help="override the runs per scenario and target")
    parser.add_argument("--duration", type=float, help="override the seconds per run")
    parser.add_argument("--small-only", action="store_true", help="skip the 1,000,000-row scale")
    parser.add_argument("--no-workers", action="store_true", help="skip the --workers 2 variant")
    parser.add_argument(
        "--scenarios",
        type=lambda v: v.split(","),
        help=f"only these, of {','.join(s.key for s in SCENARIOS)}",
    )
    parser.add_argument("--targets", type=target_list, help=f"only these, of {','.join(TARGETS)}")
    parser.add_argument(
        "--postgresql-url",
        default=DEFAULT_SERVER_URLS["postgresql"],
        help="the PostgreSQL server for service-pg and service-pg-w2 (default: %(default)s); "
        "the run creates and drops its own bench_* databases there",
    )
    parser.add_argument(
        "--mysql-url",
        default=DEFAULT_SERVER_URLS["mysql"],
        help="the MariaDB/MySQL server for service-mysql (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where latest.json/.md go")
    parser.add_argument("--render", type=Path, help="only re-render the Markdown of a results JSON")
    args = parser.parse_args()
    if args.render:
        doc = json.loads(args.render.read_text())
        (args.render.with_suffix(".md")).write_text(render_markdown(doc))
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    doc = run_benchmark(args)
    write_results(doc, args.out)
    print(render_markdown(doc))
    for failure in doc["target_failures"]:
        where = f" at {scale_name(failure['scale'])}" if failure["scale"] else ""
        log(f"!!! {failure['target']} was not measured{where}: {failure['reason']}")
    if doc.get("error") or doc["target_failures"] or doc.get("cleanup_failures"):
        sys.exit(1)


if __name__ == "__main__":
    main()

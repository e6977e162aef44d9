"""Runs the feedback-service benchmark and writes benchmarks/results/latest.{json,md}.

Started by benchmarks/run.sh (which prepares h2load and the venvs); runs in the
project's venv. See benchmarks/README.md for what is measured and how.
"""

# ruff: noqa: S603, S607 - starts the project's own programs, h2load and git, with fixed arguments

import argparse
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

import procstat  # noqa: E402
import workload as w  # noqa: E402

PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
SERVICE_BIN = ROOT / ".venv" / "bin" / "feedback-service"
PEER_PYTHON = HERE / ".venv" / "bin" / "python"
RESULTS_DIR = HERE / "results"
CACHE_DIR = HERE / ".cache"
WORK_DIR = HERE / ".work"

SMALL, LARGE = 1_000, 1_000_000


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


SCENARIOS = (
    Scenario("list", "ListFeedback (page of 100)", "ListFeedback", "h2load", "read", None),
    Scenario("stats", "GetFeedbackStats", "GetFeedbackStats", "h2load", "read", "stats"),
    Scenario("batch", "BatchGetFeedbackStats (50 runs)", "BatchGetFeedbackStats", "h2load", "read", None),
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
    """The request a scenario sends (h2load sends its bytes on every call)."""
    if method == "ListFeedback":
        return pb.ListFeedbackRequest(thread_id=w.READ_THREAD, run_id=w.HOT_RUN, page_size=w.LIST_PAGE_SIZE)
    if method == "GetFeedbackStats":
        return pb.GetFeedbackStatsRequest(thread_id=w.READ_THREAD, run_id=w.HOT_RUN)
    if method == "BatchGetFeedbackStats":
        return pb.BatchGetFeedbackStatsRequest(thread_id=w.READ_THREAD, run_ids=w.BATCH_RUNS)
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
    name: str  # "service", "service-w2", "noop" or "peer"
    protocol: str  # "grpc" or "http"
    process: subprocess.Popen
    port: int
    log_path: Path
    pids: list[int] = field(default_factory=list)

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


def service_env(data_dir: Path, keys: Secrets) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")}
    env.update(
        FEEDBACK_DATA_DIR=str(data_dir),
        FEEDBACK_JWT_SECRET=keys.jwt_secret,
        FEEDBACK_SERVICE_TOKENS=f"bench={keys.service_token}",
    )
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
    return server


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


def start_service(name: str, data_dir: Path, keys: Secrets, workers: int, log_dir: Path) -> Server:
    port = free_port()
    command = [str(SERVICE_BIN), "serve", "--listen", f"127.0.0.1:{port}"]
    if workers > 1:
        command += ["--workers", str(workers)]
    server = launch(name, "grpc", command, service_env(data_dir, keys), port, log_dir)
    wait_grpc_ready(server)
    if workers > 1:
        # Every worker binds the port on its own; give the last one time to.
        deadline = time.monotonic() + 30
        while len(procstat.descendants(server.process.pid)) < workers + 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
    server.pids = procstat.descendants(server.process.pid)
    register_bench_threads(server, keys)
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
        methods = [scenario.method] if scenario.method != "mixed" else [name for name, _ in w.MIX]
        expected = 0
        for method in methods:
            request = grpc_request(method, f"{nonce}-{method}")
            try:
                reply = getattr(stub, method)(request, metadata=metadata, timeout=10)
            except grpc.RpcError as error:
                raise CheckFailed(
                    f"{method} on {server.name}: {error.code().name} {error.details()}"
                ) from None
            expected = len(grpc_frame(reply))
            if not real:
                continue
            hot_total = w.HOT_RUN_USER_ROWS + w.HOT_RUN_OTHER_ROWS
            if method == "ListFeedback":
                expect(
                    len(reply.feedback) == w.LIST_PAGE_SIZE, f"ListFeedback gave {len(reply.feedback)} rows"
                )
                expect(bool(reply.next_page_token), "ListFeedback gave no next_page_token")
                expect(
                    all(f.user_id == w.USER for f in reply.feedback), "ListFeedback showed other users' rows"
                )
            elif method == "GetFeedbackStats":
                expect(
                    reply.total == hot_total, f"GetFeedbackStats total {reply.total}, expected {hot_total}"
                )
            elif method == "BatchGetFeedbackStats":
                totals = [s.total for s in reply.stats]
                expect(len(totals) == len(w.BATCH_RUNS), f"BatchGetFeedbackStats gave {len(totals)} results")
                expect(
                    totals[0] == hot_total and set(totals[1:]) == {w.OTHER_READ_RUN_ROWS}, f"totals {totals}"
                )
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
    """Feedback rows on the write thread, counted by the service itself."""
    metadata = (("authorization", f"Bearer {keys.user_token}"),)
    with grpc.insecure_channel(server.address) as channel:
        stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
        reply = stub.BatchGetFeedbackStats(
            pb.BatchGetFeedbackStatsRequest(thread_id=w.WRITE_THREAD, run_ids=w.WRITE_RUNS),
            metadata=metadata,
            timeout=30,
        )
    return sum(s.total for s in reply.stats)


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
            path = self.work / f"{method}.grpc"
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
        body = str(self.body_file(scenario.method))
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
            "succeeded": report["succeeded"],
            "failed": report["failed"],
            "rps": report["rps"],
            "p50_ms": report["p50_ms"],
            "p99_ms": report["p99_ms"],
            "problems": problems,
        }

    def _measured(self, server: Server, command: list[str]) -> dict:
        """Runs a load tool, with the server's and the machine's CPU time around it."""
        cpu_before = procstat.cpu_seconds(server.pids)
        busy_before = procstat.machine_busy_seconds()
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
        wall = time.monotonic() - started
        usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
        if not server.alive():
            raise RuntimeError(f"{server.name} died: {server.log_path.read_text()[-2000:]}")
        return {
            "stdout": done.stdout,
            "wall_s": wall,
            "server_cpu_s": procstat.cpu_seconds(server.pids) - cpu_before,
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
    other = [
        max(0.0, r["machine_busy_s"] - r["server_cpu_s"] - r["client_cpu_s"])
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
            log(
                f"  {scale_name(scale)} {scenario.key:<6} {server.name:<10} run {index + 1}/{mode.runs}: "
                f"{run['rps']:8.0f} req/s  p50 {run['p50_ms']:7.2f} ms  p99 {run['p99_ms']:7.2f} ms  "
                f"server CPU {run['server_cpu_s']:5.2f}s{flag}"
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


def run_benchmark(args: argparse.Namespace) -> dict:
    mode = MODES["quick" if args.quick else "full"]
    if args.runs:
        mode = Mode(mode.name, args.runs, mode.duration_s, mode.warmup_s, mode.noop_every_scale)
    if args.duration:
        mode = Mode(mode.name, mode.runs, args.duration, mode.warmup_s, mode.noop_every_scale)
    load = Load()
    started = time.time()
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    WORK_DIR.mkdir(parents=True)
    keys = Secrets()
    workers_ok, workers_note = workers_flag_available()
    if args.no_workers and workers_ok:
        workers_ok, workers_note = False, "skipped: --no-workers given"
    log(f"mode {mode.name}: {mode.runs} runs x {mode.duration_s}s per scenario and target; {workers_note}")
    scales = [SMALL, LARGE] if not args.small_only else [SMALL]
    databases = {rows: cached_database(rows) for rows in scales}
    doc: dict = {
        "mode": mode.name,
        "settings": {**asdict(mode), **asdict(load), "in_flight": load.in_flight},
        "machine": machine_description(),
        "workers_variant": {"measured": workers_ok, "note": workers_note},
        "scales": scales,
        "results": [],
    }
    bench = Bench(mode, load, keys, WORK_DIR)
    try:
        noop = start_noop(keys, WORK_DIR)
        for scale in scales:
            scale_dir = WORK_DIR / scale_name(scale)
            log(f"scale {scale:,} rows: starting servers on fresh copies of {databases[scale].name}")
            fresh_copy(databases[scale], scale_dir / "service", "feedback.db")
            servers = [start_service("service", scale_dir / "service", keys, 1, WORK_DIR)]
            if workers_ok:
                fresh_copy(databases[scale], scale_dir / "service-w2", "feedback.db")
                servers.append(start_service("service-w2", scale_dir / "service-w2", keys, 2, WORK_DIR))
            peer = start_peer(fresh_copy(databases[scale], scale_dir / "peer", "peer.db"), keys, WORK_DIR)
            servers.append(peer)
            for scenario in SCENARIOS:
                if scale != SMALL and scenario.kind == "write":
                    continue  # writes are measured on the small database only
                if args.scenarios and scenario.key not in args.scenarios:
                    continue
                targets = [s for s in servers if s.protocol == "grpc"]
                if scale == SMALL or mode.noop_every_scale:
                    targets.append(noop)
                if scenario.peer:
                    targets.append(peer)
                if args.targets:
                    targets = [t for t in targets if t.name in args.targets]
                log(f"{scale_name(scale)} {scenario.label}: {', '.join(t.name for t in targets)}")
                measure_scenario(bench, scale, scenario, targets, doc["results"])
            for server in servers:
                server.stop()
            shutil.rmtree(scale_dir, ignore_errors=True)
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - recorded with the results
        # Keep what was measured; the error is written with it.
        doc["error"] = f"{type(error).__name__}: {error}"[:4000]
        log(f"stopped early: {doc['error']}")
    finally:
        stop_all()
    doc["elapsed_s"] = round(time.time() - started, 1)
    doc["machine"]["loadavg_end"] = os.getloadavg()
    doc["comparisons"] = comparisons(doc)
    return doc


def comparisons(doc: dict) -> list[dict]:
    """Per scale and scenario: the service against the noop ceiling and the peer."""
    by_key = {(r["scale"], r["scenario"], r["target"]): r for r in doc["results"] if r.get("summary")}
    rows = []
    for scale in doc["scales"]:
        for scenario in SCENARIOS:
            service = by_key.get((scale, scenario.key, "service"))
            if not service:
                continue
            noop = by_key.get((scale, scenario.key, "noop")) or by_key.get((SMALL, scenario.key, "noop"))
            peer = by_key.get((scale, scenario.key, "peer"))
            w2 = by_key.get((scale, scenario.key, "service-w2"))
            s = service["summary"]
            row = {
                "scale": scale,
                "scenario": scenario.key,
                "label": scenario.label,
                "tool": service["tool"],
                "service": s,
                "noop_rps": noop["summary"]["rps"] if noop else None,
                "noop_measured_at": noop["scale"] if noop else None,
                "peer_rps": peer["summary"]["rps"] if peer else None,
                "peer_tool": peer["tool"] if peer else None,
                "vs_noop": s["rps"] / noop["summary"]["rps"] if noop else None,
                "vs_peer": s["rps"] / peer["summary"]["rps"] if peer else None,
                "peer_p99_ms": peer["summary"]["p99_ms"] if peer else None,
                "peer_cpu_ms_per_request": peer["summary"]["cpu_ms_per_request"] if peer else None,
                "w2_rps": w2["summary"]["rps"] if w2 else None,
                "w2_vs_1": w2["summary"]["rps"] / s["rps"] if w2 else None,
            }
            rows.append(row)
    return rows


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
            ["feedback-service", "grpcio", "protobuf", "peewee", "PyJWT", "grpcio-health-checking"]
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


def render_markdown(doc: dict) -> str:
    m = doc["machine"]
    s = doc["settings"]
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
        "- Peer: Python {}, {}".format(
            m["peer"].get("python", "?"),
            ", ".join(f"{k} {v}" for k, v in m["peer"].get("packages", {}).items()),
        ),
        f"- Load: {m['h2load']}; {s['in_flight']} calls in flight for every target "
        f"({s['conns']} HTTP/2 connections x {s['streams']} streams, "
        f"or {s['in_flight']} HTTP/1.1 connections); "
        f"{s['runs']} runs of {s['duration_s']}s per scenario and target, medians reported.",
        f"- Workers: {doc['workers_variant']['note']}.",
        "",
        *([f"**Incomplete: the run stopped early ({doc['error']}).**", ""] if doc.get("error") else []),
        "## The service against its ceiling and the peer",
        "",
        "÷ noop: the service's req/s divided by the no-op gRPC server's (share of the ceiling, at most ~1). "
        "÷ peer: divided by the FastAPI peer's (above 1 = faster than the peer). "
        "Other CPU: share of the machine used by processes other than the server and the load tool "
        "during the runs (noise).",
        "",
    ]
    for scale in doc["scales"]:
        rows = [c for c in doc["comparisons"] if c["scale"] == scale]
        if not rows:
            continue
        lines += [
            f"### {scale:,} feedback rows",
            "",
            "| Scenario | Tool | req/s | p50 ms | p99 ms | CPU s/run | CPU ms/req | Peak RSS MiB "
            "| noop req/s | ÷ noop | peer req/s | ÷ peer | Other CPU |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for c in rows:
            sv = c["service"]
            noop_note = "" if c["noop_measured_at"] in (None, scale) else " ¹"
            lines.append(
                f"| {c['label']}{'' if sv['valid'] else ' ⚠'} | {c['tool']} | {fmt(sv['rps'])} "
                f"| {fmt(sv['p50_ms'], 1)} | {fmt(sv['p99_ms'], 1)} | {fmt(sv['server_cpu_s'], 2)} "
                f"| {fmt(sv['cpu_ms_per_request'], 2)} | {fmt(sv['peak_rss_mib'])} "
                f"| {fmt(c['noop_rps'])}{noop_note} | {fmt(c['vs_noop'], 2)} "
                f"| {fmt(c['peer_rps'])} | {fmt(c['vs_peer'], 2)} | {fmt(sv['other_cpu_pct'], 0, '%')} |"
            )
        lines.append("")
    if any(c["noop_measured_at"] not in (None, c["scale"]) for c in doc["comparisons"]):
        lines += [
            "¹ the ceiling measured at the small scale (it reads no data); full mode re-measures it.",
            "",
        ]
    lines += [
        "Peer rows: GetFeedbackStats and CreateFeedback are the same operations over REST; the peer's mixed "
        "profile is 90% stats reads and 10% creates (it has no list or batch route). "
        "⚠ marks a scenario whose checks failed (see the JSON).",
        "",
        "## Every target",
        "",
        "| Rows | Scenario | Target | Tool | req/s (min to max) | p50 ms | p99 ms | CPU s/run | CPU ms/req "
        "| Peak RSS MiB | Failed calls | Checks |",
        "|--:|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in doc["results"]:
        if not r.get("summary"):
            lines.append(
                f"| {scale_name(r['scale'])} | {r['label']} | {r['target']} | {r['tool']} "
                f"| — | — | — | — | — | — | — | failed: {r['check_failed']} |"
            )
            continue
        x = r["summary"]
        problems = sorted({p for run in r["runs"] for p in run["problems"]})
        lines.append(
            f"| {scale_name(r['scale'])} | {r['label']} | {r['target']} | {r['tool']} "
            f"| {fmt(x['rps'])} ({fmt(x['rps_min'])} to {fmt(x['rps_max'])}) | {fmt(x['p50_ms'], 1)} "
            f"| {fmt(x['p99_ms'], 1)} | {fmt(x['server_cpu_s'], 2)} | {fmt(x['cpu_ms_per_request'], 2)} "
            f"| {fmt(x['peak_rss_mib'])} | {x['failed']} | {'ok' if x['valid'] else '; '.join(problems)} |"
        )
    workers = [c for c in doc["comparisons"] if c["w2_rps"]]
    if workers:
        lines += [
            "",
            "## Two worker processes (`serve --workers 2`) against one",
            "",
            "| Rows | Scenario | 1 worker req/s | 2 workers req/s | ratio |",
            "|--:|---|--:|--:|--:|",
        ]
        for c in workers:
            lines.append(
                f"| {scale_name(c['scale'])} | {c['label']} | {fmt(c['service']['rps'])} "
                f"| {fmt(c['w2_rps'])} | {fmt(c['w2_vs_1'], 2)} |"
            )
    return "\n".join(lines) + "\n"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, to try it (~3 minutes)")
    parser.add_argument("--runs", type=int, help="override the runs per scenario and target")
    parser.add_argument("--duration", type=float, help="override the seconds per run")
    parser.add_argument("--small-only", action="store_true", help="skip the 1,000,000-row scale")
    parser.add_argument("--no-workers", action="store_true", help="skip the --workers 2 variant")
    parser.add_argument(
        "--scenarios",
        type=lambda v: v.split(","),
        help=f"only these, of {','.join(s.key for s in SCENARIOS)}",
    )
    parser.add_argument(
        "--targets", type=lambda v: v.split(","), help="only these, of service,service-w2,noop,peer"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where latest.json/.md go")
    parser.add_argument("--render", type=Path, help="only re-render the Markdown of a results JSON")
    args = parser.parse_args()
    if args.render:
        doc = json.loads(args.render.read_text())
        (args.render.with_suffix(".md")).write_text(render_markdown(doc))
        return
    doc = run_benchmark(args)
    write_results(doc, args.out)
    print(render_markdown(doc))
    if doc.get("error"):
        sys.exit(1)


if __name__ == "__main__":
    main()

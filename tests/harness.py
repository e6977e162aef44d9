"""A real feedback-service server for tests: built by the production
build_server(), served on a free port in a background thread, reached through
a real gRPC channel with the generated stubs."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.trace import TracerProvider
from peewee import Database
from playhouse import db_url
from prometheus_client import REGISTRY

from feedback.v1 import access_pb2, feedback_pb2_grpc, thread_registry_pb2_grpc
from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import thread_registry_pb2 as registry_pb2
from feedback_service.auth.access import declared_rules
from feedback_service.config import Settings, sqlite_url
from feedback_service.server import SERVICES, Service, create_service
from feedback_service.store.database import open_database
from feedback_service.store.migrations import migrate
from feedback_service.store.models import (
    MODELS,
    Feedback,
    FeedbackChange,
    IdempotentRequest,
    Run,
    SchemaVersion,
    Thread,
)

JWT_SECRET = "test-secret-" + "0123456789abcdef" * 4
SERVICE_NAME = "platform"
SERVICE_TOKEN = "platform-token-0123456789"

BACKEND_URLS = {
    "postgres": os.environ.get("FEEDBACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("FEEDBACK_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
}


def server_settings(data_dir: Path, **overrides) -> Settings:
    values = {
        "listen": "127.0.0.1:0",
        "data_dir": data_dir,
        "jwt_secret": JWT_SECRET,
        "service_tokens": {SERVICE_NAME: SERVICE_TOKEN},
        "db_workers": 4,
        **overrides,
    }
    return Settings(**values)


def reset_database(url: str) -> None:
    """Drops every table so the next migrate starts from nothing."""
    db = open_database(url)
    with db.connection_context():
        db.drop_tables([*MODELS, SchemaVersion], safe=True, cascade=not url.startswith("sqlite"))
    db.close()


class ServerThread:
    """Runs one server on its own event loop in a daemon thread (traced to
    tracer_provider, if given)."""

    def __init__(self, settings: Settings, tracer_provider: TracerProvider | None = None) -> None:
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.port = 0
        self.service: Service | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "ServerThread":
        self._thread.start()
        self._ready.wait(30)
        if self._error:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        try:
            self.service = create_service(self.settings, tracer_provider=self.tracer_provider)
            await self.service.start()
            self.port = self.service.port
            self._loop = asyncio.get_running_loop()
            self._stopped = asyncio.Event()
        except BaseException as exc:  # surfaced to the test by start()
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        await self._stopped.wait()
        await self.service.stop(self.settings.shutdown_grace_s)

    def run_on_loop(self, coroutine) -> object:
        """Runs a coroutine on the server's loop (e.g. to read health state)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def stop(self) -> None:
        if self._loop and self._stopped:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(30)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Client:
    """Stubs over one channel to the server under test."""

    channel: grpc.Channel

    @property
    def feedback(self) -> feedback_pb2_grpc.FeedbackServiceStub:
        return feedback_pb2_grpc.FeedbackServiceStub(self.channel)

    @property
    def registry(self) -> thread_registry_pb2_grpc.ThreadRegistryStub:
        return thread_registry_pb2_grpc.ThreadRegistryStub(self.channel)


@contextmanager
def running_server(
    settings: Settings, tracer_provider: TracerProvider | None = None
) -> Iterator[tuple[ServerThread, Client]]:
    server = ServerThread(settings, tracer_provider).start()
    channel = grpc.insecure_channel(server.address)
    try:
        yield server, Client(channel)
    finally:
        channel.close()
        server.stop()


def separate_channel(address: str) -> grpc.Channel:
    """A channel on a connection of its own. Channels to one address with the
    same options share a single connection (gRPC's global subchannel pool), so
    a test that needs a second client connection must ask for it."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


BIN = Path(sys.executable).parent
SERVICE_TOKENS = f"platform={SERVICE_TOKEN}"


def service_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a service process: ours without FEEDBACK_*, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")}
    env.update(FEEDBACK_DATA_DIR=str(data_dir), FEEDBACK_SERVICE_TOKENS=SERVICE_TOKENS)
    env.update({f"FEEDBACK_{name.upper()}": value for name, value in settings.items()})
    return env


class ServiceProcess:
    """`feedback-service serve` in a child process; waits until every server
    process it starts (one, or N with --workers N) listens. Its log is read
    continuously, so a chatty server never blocks on a full pipe."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        listen: str = "127.0.0.1:0",
        servers: int = 1,
        env: dict[str, str] | None = None,
        **settings: str,
    ) -> None:
        self.env = service_env(data_dir, **settings) | (env or {})
        self.process = subprocess.Popen(
            [BIN / "feedback-service", "serve", "--listen", listen, *args],
            env=self.env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self.server_pids: set[int] = set()
        self.port = 0
        self._listening = threading.Event()
        self._servers = servers
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._listening.wait(30) or len(self.server_pids) < servers:
            self.process.kill()
            raise AssertionError(f"the service did not start: {''.join(self.log)}")
        self.address = f"127.0.0.1:{self.port}"

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.log.append(line)
            found = re.search(r"serving on \S+ \(port (\d+)", line)
            if found:  # the pid is in the text prefix or in the JSON object
                pid = re.search(r'"pid": (\d+)|^\S+ \S+ \S+ (\d+) ', line)
                self.server_pids.add(int(pid.group(1) or pid.group(2)))
                self.port = int(found.group(1))
                if len(self.server_pids) >= self._servers:
                    self._listening.set()
        self._listening.set()

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the service's /metrics page, 0 if absent (needs
        metrics_listen, e.g. "127.0.0.1:0")."""
        wait_until(lambda: any("metrics on" in line for line in self.log))
        port = int(re.search(r"metrics on .* \(port (\d+)\)", "".join(self.log)).group(1))
        return scrape(port).get((name, frozenset(labels.items())), 0.0)

    def access_lines(self, since: int = 0) -> list[dict]:
        """The access-log entries among log lines since..end (needs log_format json)."""
        entries = []
        for line in self.log[since:]:
            if '"feedback_service.access"' in line:
                entries.append(json.loads(line))
        return entries

    def token(self, user_id: str) -> str:
        return subprocess.run(
            [BIN / "feedback-service", "token", user_id],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self._reader.join(10)
        return code


# --- credentials as metadata -----------------------------------------------------


def user_token(user_id: str | None, *, secret: str = JWT_SECRET, ttl_s: int = 3600, **claims) -> str:
    """An HS256 token; user_id None leaves out `sub`. Tokens minted when a
    module is imported must outlive the whole suite's run: an hour."""
    payload: dict[str, object] = {"exp": int(time.time()) + ttl_s, **claims}
    if user_id is not None:
        payload["sub"] = user_id
    return jwt.encode(payload, secret, algorithm="HS256")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: object, claims: object, *, secret: str | bytes = JWT_SECRET) -> str:
    """A JWT whose header and claims are exactly these JSON values (PyJWT
    would add or check fields), signed with HMAC-SHA256 whatever alg says."""
    key = secret.encode() if isinstance(secret, str) else secret
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def as_user(user_id: str, scope: str | None = None) -> list[tuple[str, str]]:
    claims = {} if scope is None else {"scope": scope}
    return bearer(user_token(user_id, **claims))


def as_service() -> list[tuple[str, str]]:
    return [("x-service-token", SERVICE_TOKEN)]


def as_service_for(user_id: str) -> list[tuple[str, str]]:
    return [("x-service-token", SERVICE_TOKEN), ("x-on-behalf-of", user_id)]


# --- the RPCs, and what they may answer --------------------------------------------

# Every RPC of both services, by path, from the descriptors.
METHODS: dict[str, MethodDescriptor] = {
    f"/{service.full_name}/{method.name}": method for service in SERVICES for method in service.methods
}
RULES = declared_rules(SERVICES)
READ_ONLY = {
    path for path, rule in RULES.items() if rule and rule.permission == access_pb2.PERMISSION_THREADS_READ
}
# The documented client errors: with OK, all a request may ever be answered with.
CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}


def caller_for(path: str) -> list[tuple[str, str]]:
    """Credentials that pass the RPC's caller check (a service's for any other path)."""
    rule = RULES.get(path)
    if rule is None or rule.caller == access_pb2.CALLER_SERVICE:
        return as_service()
    return as_service_for("alice")


# How long a following change stream (StreamFeedbackChanges with `follow`),
# which ends only when cancelled, is read before the test cancels it: a
# refusal arrives well before.
FOLLOW_SETTLE_S = 0.5


def finish_stream(responses, follow: bool) -> grpc.StatusCode:
    """Reads a server stream to its end; returns OK or raises its error. A
    following stream still open after FOLLOW_SETTLE_S is cancelled and counts
    as OK."""
    cancelled_here = threading.Event()

    def cancel() -> None:
        cancelled_here.set()
        responses.cancel()

    timer = threading.Timer(FOLLOW_SETTLE_S, cancel) if follow else None
    if timer:
        timer.start()
    try:
        for _ in responses:
            pass
    except grpc.RpcError as error:
        if not (cancelled_here.is_set() and error.code() == grpc.StatusCode.CANCELLED):
            raise
    finally:
        if timer:
            timer.cancel()
    return grpc.StatusCode.OK


def outcome(future: grpc.Future) -> grpc.StatusCode:
    try:
        future.result()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10) -> None:
    """Returns once predicate() holds; fails the test if it does not within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        # The poll interval of the one polling helper: time between two looks
        # at the condition is what this line is about, not a wait for a task.
        time.sleep(0.02)


# --- metrics -------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """{(metric name, its labels): value} from a service process's /metrics page."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name, _, labels = series.partition("{")
            pairs = frozenset(re.findall(r'(\w+)="([^"]*)"', labels))
            samples[(name, pairs)] = float(value)
    return samples


def metric(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def local_metric(name: str, **labels: str) -> float:
    """A metric of the servers this test process runs (running_server), 0 if absent.
    The registry is the process's: read it only while one server runs."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@contextmanager
def sqlite_write_lock(path: Path) -> Iterator[None]:
    """Holds the database's write lock, so writes queue behind it."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        connection.execute("COMMIT")
        connection.close()


# --- a seeded world, read straight from the database ---------------------------------

# thread -> (owner, runs)
SEED_THREADS = {
    "t-alice": ("alice", ["r-a1", "r-a2"]),
    "t-bob": ("bob", ["r-b1"]),
    "t-shared": ("", ["r-s1", "r-s2"]),
    "t-carol": ("carol", []),
}
# (user, thread, run, message_id, rating, comment)
SEED_FEEDBACK = [
    ("alice", "t-alice", "r-a1", "", 1, "fine"),
    ("alice", "t-alice", "r-a1", "m-1", -1, "this message was wrong"),
    ("alice", "t-shared", "r-s1", "", -1, ""),
    ("bob", "t-bob", "r-b1", "", 1, "👍"),
    ("bob", "t-shared", "r-s1", "", 1, "agree"),
    ("carol", "t-shared", "r-s2", "m-2", 1, "é" * 50),
]
SEED_RUNS = {run: thread for thread, (_, runs) in SEED_THREADS.items() for run in runs}
USERS = ["alice", "bob", "carol"]
SEED_PAIRS = sorted((thread, run) for run, thread in SEED_RUNS.items())

Snapshot = dict[str, list[tuple]]


def inspect_database(url: str) -> Database:
    """A connection of the test's own to a server's database, on any backend,
    for reading rows directly. Unlike open_database it leaves the models bound
    to the server's database."""
    return db_url.connect(url)


@dataclass
class SeededWorld:
    """A server's client and its database, seeded with SEED_THREADS and SEED_FEEDBACK."""

    client: Client
    db: Database

    def _rows(self, sql: str) -> list[tuple]:
        return self.db.execute_sql(sql).fetchall()

    def _quoted(self, name: str) -> str:
        return f"{self.db.quote[0]}{name}{self.db.quote[1]}"

    def snapshot(self) -> Snapshot:
        """Every row of every table."""
        tables = {}
        for model in MODELS:
            table = model._meta.table_name
            keys = ", ".join(self._quoted(field.column_name) for field in model._meta.get_primary_keys())
            query = f"SELECT * FROM {self._quoted(table)} ORDER BY {keys}"  # noqa: S608
            tables[table] = self._rows(query)
        return tables

    def feedback_rows(self) -> list[tuple[str, str, str, str, str]]:
        """(feedback_id, thread_id, run_id, user_id, message_id) of the oldest feedback."""
        return self._rows(
            "SELECT feedback_id, thread_id, run_id, user_id, message_id FROM feedback ORDER BY id LIMIT 50"
        )

    def seed_intact(self) -> bool:
        threads = dict(self._rows("SELECT thread_id, owner_user_id FROM thread"))
        runs = dict(self._rows("SELECT run_id, thread_id FROM run"))
        keys = set(self._rows("SELECT user_id, thread_id, run_id, message_id FROM feedback"))
        return (
            all(threads.get(thread) == owner for thread, (owner, _) in SEED_THREADS.items())
            and all(runs.get(run) == thread for run, thread in SEED_RUNS.items())
            and all(tuple(seed[:4]) in keys for seed in SEED_FEEDBACK)
        )

    def reseed(self) -> None:
        """Puts the seeded threads, runs and feedback back after a call that
        succeeded changed them (say, DeleteThread on a seeded thread)."""
        registry, feedback = self.client.registry, self.client.feedback
        threads = dict(self._rows("SELECT thread_id, owner_user_id FROM thread"))
        runs = dict(self._rows("SELECT run_id, thread_id FROM run"))
        in_the_way = {t for t, (owner, _) in SEED_THREADS.items() if threads.get(t, owner) != owner}
        in_the_way |= {runs[r] for r, t in SEED_RUNS.items() if runs.get(r, t) != t}
        for thread in in_the_way:
            registry.DeleteThread(registry_pb2.DeleteThreadRequest(thread_id=thread), metadata=as_service())
        for thread, (owner, run_ids) in SEED_THREADS.items():
            request = registry_pb2.RegisterThreadRequest(thread_id=thread, owner_user_id=owner)
            registry.RegisterThread(request, metadata=as_service())
            for run in run_ids:
                registry.RegisterRun(
                    registry_pb2.RegisterRunRequest(thread_id=thread, run_id=run), metadata=as_service()
                )
        for user, thread, run, message, rating, comment in SEED_FEEDBACK:
            request = pb.UpsertFeedbackRequest(
                thread_id=thread, run_id=run, message_id=message, rating=rating, comment=comment
            )
            feedback.UpsertFeedback(request, metadata=as_service_for(user))
        assert self.seed_intact()


# --- backends ----------------------------------------------------------------------

BACKENDS = ["sqlite", "postgres", "mysql"]
# CI sets this so that a missing database server fails the run instead of skipping.
REQUIRE_BACKENDS = os.environ.get("FEEDBACK_REQUIRE_BACKENDS") == "1"
_prepared: dict[str, str | None] = {}


def _prepare(backend: str) -> str | None:
    """Resets the backend's schema once per session; returns why it is unusable."""
    if backend not in _prepared:
        url = BACKEND_URLS[backend]
        try:
            reset_database(url)
            db = open_database(url)
            migrate(db)
            db.close()
            _prepared[backend] = None
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            _prepared[backend] = f"{exc.__class__.__name__}: {exc}".splitlines()[0]
    return _prepared[backend]


def _clean(url: str) -> None:
    """Empties the tables; the change log's head (its id, its last and pruned
    positions) stays, so positions keep growing from test to test."""
    db = open_database(url)
    with db.connection_context(), db.atomic():
        for model in (Feedback, Run, Thread, FeedbackChange, IdempotentRequest):
            model.delete().execute()
    db.close()


def backend_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return sqlite_url(tmp_path / "feedback.db")
    problem = _prepare(backend)
    if problem:
        message = (
            f"{backend} at {BACKEND_URLS[backend]} is not usable ({problem}); start it or set "
            f"FEEDBACK_TEST_{backend.upper()}_URL"
        )
        if REQUIRE_BACKENDS:
            pytest.fail(message)
        pytest.skip(message)
    _clean(BACKEND_URLS[backend])
    return BACKEND_URLS[backend]


# --- calls ---------------------------------------------------------------------------


def register(client: Client, thread_id: str, owner: str, run_ids: list[str]) -> None:
    client.registry.RegisterThread(
        registry_pb2.RegisterThreadRequest(thread_id=thread_id, owner_user_id=owner), metadata=as_service()
    )
    for run_id in run_ids:
        client.registry.RegisterRun(
            registry_pb2.RegisterRunRequest(thread_id=thread_id, run_id=run_id), metadata=as_service()
        )


def rpc_error(call, request, **kwargs) -> grpc.RpcError:
    """The error a call fails with (the test fails if it succeeds)."""
    with pytest.raises(grpc.RpcError) as raised:
        call(request, **kwargs)
    return raised.value


def bad_fields(error: grpc.RpcError) -> list[str]:
    """The fields named by an INVALID_ARGUMENT's google.rpc.BadRequest details."""
    status = rpc_status.from_call(error)
    assert status is not None, "INVALID_ARGUMENT without google.rpc.Status details"
    fields = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [violation.field for violation in bad_request.field_violations]
    return fields

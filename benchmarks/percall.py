"""What the service's own per-call steps cost, in microseconds of CPU.

    .venv/bin/python benchmarks/percall.py [--db SQLITE_FILE]

Each step runs in a loop in this process and is timed with the thread's CPU
clock (time.thread_time), so other load on the machine changes the figures
little; the best of five rounds is printed. These are the steps every RPC pays
besides the gRPC framework and the database: the access-log line, credentials
(a cached JWT, a service token), the context variables, the metrics, the
method-name parse, and building responses. With --db (a copy of a database
benchmarks/load_rows.py built, which this changes), also the store's units of
work on SQLite, as a user calls them: the SQL, the rows, the records. The load
tests (run.sh) measure the whole call.
"""

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from feedback.v1 import feedback_pb2 as pb
from feedback_service.auth.credentials import Authenticator, JwtVerifier, ServiceTokens
from feedback_service.auth.keys import KeySet
from feedback_service.core.records import FeedbackRow
from feedback_service.interceptors.base import parse_method_name
from feedback_service.interceptors.observability import _latency, _requests
from feedback_service.observability import access_log, configure_logging, log_access
from feedback_service.servicers.convert import feedback_message, feedback_page

ROUNDS = 5
METHOD = "/feedback.v1.FeedbackService/GetFeedbackStats"
DAY_US = 86_400 * 1_000_000


def cpu_us(step: Callable[[], object], calls: int) -> float:
    """The best of ROUNDS rounds, in µs of this thread's CPU per call."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.thread_time()
        for _ in range(calls):
            step()
        best = min(best, (time.thread_time() - started) / calls * 1e6)
    return best


def rows(count: int) -> list[FeedbackRow]:
    now = time.time_ns() // 1000
    return [
        FeedbackRow(
            i, str(uuid.uuid4()), "thread", "run", "bench-user", f"m-{i}", 1, "fine", now, now, ("slow",)
        )
        for i in range(count)
    ]


def steps() -> dict[str, tuple[Callable[[], object], int]]:
    import jwt

    secret = "x" * 64
    token = jwt.encode({"sub": "bench-user", "exp": int(time.time()) + 3600}, secret, algorithm="HS256")
    authenticator = Authenticator(JwtVerifier(KeySet(secret)), ServiceTokens({"bench": "bench-token"}))
    bearer = [("authorization", f"Bearer {token}")]
    service = [("x-service-token", "bench-token"), ("x-on-behalf-of", "bench-user")]
    authenticator.authenticate(bearer)  # the token is cached from here on
    variable: ContextVar[object] = ContextVar("bench")
    method = parse_method_name(METHOD)
    page, one = rows(100), rows(1)[0]
    import grpc

    return {
        "access-log line (formatted and buffered)": (
            lambda: log_access(METHOD, "OK", 0.001234, "user", "bench-user", "ipv4:127.0.0.1:50000"),
            20_000,
        ),
        "JWT credentials, cached": (lambda: authenticator.authenticate(bearer), 20_000),
        "service token + x-on-behalf-of": (lambda: authenticator.authenticate(service), 20_000),
        "context variable set + get": (lambda: (variable.set(method), variable.get()), 100_000),
        "metrics: latency + request count": (
            lambda: (_latency(method).observe(0.001), _requests(method, grpc.StatusCode.OK).inc()),
            50_000,
        ),
        "method name parse (cached)": (lambda: parse_method_name(METHOD), 100_000),
        "Feedback message from a row": (lambda: feedback_message(one), 20_000),
        "ListFeedbackResponse of 100 rows": (
            lambda: feedback_page(pb.ListFeedbackResponse(), page),
            500,
        ),
        "FeedbackStats message": (
            lambda: pb.FeedbackStats(run_id="r", total=3, positive=2, negative=1),
            50_000,
        ),
    }


def store_steps(path: str) -> dict[str, tuple[Callable[[], object], int]]:
    """The units of work behind the benchmark's scenarios, as a user calls them."""
    import dataclasses
    import itertools

    import workload as w

    from feedback_service.config import sqlite_url
    from feedback_service.core.records import FeedbackDraft, ListQuery
    from feedback_service.store import reads, stats, threads, writes
    from feedback_service.store.database import open_database
    from feedback_service.store.migrations import migrate

    migrate(open_database(sqlite_url(Path(path))))
    messages = (f"percall-{i}" for i in itertools.count())

    def create() -> object:
        draft = FeedbackDraft(w.WRITE_THREAD, w.WRITE_RUNS[0], w.USER, next(messages), 1, "", ())
        return writes.create_feedback(draft, True)

    upsert = FeedbackDraft(w.WRITE_THREAD, w.WRITE_RUNS[1], w.USER, "", -1, "hot", ())
    # As a user lists a run of their thread: their own feedback.
    listed = ListQuery(thread_id=w.READ_THREAD, run_id=w.HOT_RUN, user_id=w.USER)
    filtered = dataclasses.replace(listed, rating=w.FILTER_RATING, tag=w.FILTER_TAG)
    year_end = (time.time_ns() // 1000 // DAY_US + 1) * DAY_US
    return {
        "store: GetFeedbackStats (owner + counts)": (
            lambda: stats.stats_for_runs(w.READ_THREAD, [w.HOT_RUN], False, True),
            2_000,
        ),
        "store: BatchGetFeedbackStats, 50 runs": (
            lambda: stats.stats_for_runs(w.READ_THREAD, list(w.BATCH_RUNS), False, True),
            300,
        ),
        "store: ListFeedback, page of 100": (
            lambda: reads.feedback_page(listed, 0, 101, True),
            300,
        ),
        "store: ListFeedback filtered (rating -1, a tag)": (
            lambda: reads.feedback_page(filtered, 0, 101, True),
            300,
        ),
        "store: BatchGetCallerFeedback, 50 runs": (
            lambda: reads.caller_feedback(w.READ_THREAD, w.USER, list(w.BATCH_RUNS), 1001, True),
            300,
        ),
        "store: GetThreadFeedbackStats": (lambda: stats.thread_stats(w.READ_THREAD, True), 300),
        "store: GetFeedbackTimeSeries, every thread, a year by day": (
            lambda: stats.time_series(None, year_end - 365 * DAY_US, year_end, DAY_US, False),
            1,
        ),
        "store: RegisterRun (already registered)": (
            lambda: threads.register_run(w.READ_THREAD, w.HOT_RUN),
            1_000,
        ),
        "store: CreateFeedback (with its change)": (create, 1_000),
        "store: UpsertFeedback (with its change)": (lambda: writes.upsert_feedback(upsert, True), 1_000),
    }


async def measure() -> None:
    """Inside a running event loop, as in the server: access lines are
    buffered and written in batches (here to /dev/null)."""
    configure_logging("INFO", "text")
    table = steps()
    if "--db" in sys.argv:
        table |= store_steps(sys.argv[sys.argv.index("--db") + 1])
    width = max(len(name) for name in table)
    print(f"{'step':<{width}}  µs/call (CPU, best of {ROUNDS})")
    for name, (step, calls) in table.items():
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            figure = cpu_us(step, calls)
            access_log.flush()
        print(f"{name:<{width}}  {figure:8.2f}")


if __name__ == "__main__":
    asyncio.run(measure())

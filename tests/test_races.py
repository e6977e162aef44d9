"""Every write racing DeleteThread of the same thread, on every backend: each
call ends in a documented status (never INTERNAL or UNKNOWN), and no run
outlives its thread and no feedback its run."""

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest
from peewee import JOIN, Database, fn
from playhouse import db_url

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import thread_registry_pb2 as registry_pb2
from feedback_service.store.models import Feedback, Run, Thread
from tests.harness import Client, as_service, as_user, running_server, server_settings

ROUNDS = 30
WRITERS = 4  # racers per round, each on its own channel, plus one DeleteThread
REPEATS = 6  # each racer writes this many times in a row, to span the delete's commit
OK, NOT_FOUND, ALREADY_EXISTS = grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS
Call = Callable[[Client], object]


def users(round_: int) -> list[str]:
    return [f"u{round_}-{i}" for i in range(WRITERS)]


def register_thread(thread_id: str) -> Call:
    request = registry_pb2.RegisterThreadRequest(thread_id=thread_id)  # shared: every user may write
    return lambda c: c.registry.RegisterThread(request, metadata=as_service())


def delete_thread(thread_id: str) -> Call:
    request = registry_pb2.DeleteThreadRequest(thread_id=thread_id)
    return lambda c: c.registry.DeleteThread(request, metadata=as_service())


def register_run(thread_id: str, run_id: str) -> Call:
    request = registry_pb2.RegisterRunRequest(thread_id=thread_id, run_id=run_id)
    return lambda c: c.registry.RegisterRun(request, metadata=as_service())


def upsert(thread_id: str, run_id: str, user: str, message_id: str = "") -> Call:
    request = pb.UpsertFeedbackRequest(thread_id=thread_id, run_id=run_id, rating=1, message_id=message_id)
    return lambda c: c.feedback.UpsertFeedback(request, metadata=as_user(user))


def create(thread_id: str, run_id: str, user: str) -> Call:
    request = pb.CreateFeedbackRequest(thread_id=thread_id, run_id=run_id, rating=-1, comment="racing")
    return lambda c: c.feedback.CreateFeedback(request, metadata=as_user(user))


def delete_feedback(thread_id: str, run_id: str, feedback_id: str, user: str) -> Call:
    request = pb.DeleteFeedbackRequest(thread_id=thread_id, run_id=run_id, feedback_id=feedback_id)
    return lambda c: c.feedback.DeleteFeedback(request, metadata=as_user(user))


def delete_run_feedback(thread_id: str, run_id: str, user: str) -> Call:
    request = pb.DeleteRunFeedbackRequest(thread_id=thread_id, run_id=run_id)
    return lambda c: c.feedback.DeleteRunFeedback(request, metadata=as_user(user))


@dataclass
class Race:
    """How to prepare a round of one write, and the statuses it may end in."""

    prepare: Callable[[Client, str, int], list[Call]]  # (client, thread, round) -> racing calls
    allowed: set[grpc.StatusCode]


def _register_thread(client: Client, thread: str, round_: int) -> list[Call]:
    # Re-registering the thread being deleted: the registration or the delete wins.
    return [register_thread(thread)] * WRITERS


def _register_run(client: Client, thread: str, round_: int) -> list[Call]:
    # Half re-register an existing run, half register new ones.
    existing = f"{thread}-r0"
    register_run(thread, existing)(client)
    return [register_run(thread, existing if i % 2 else f"{thread}-r{i + 1}") for i in range(WRITERS)]


def _with_run(client: Client, thread: str) -> str:
    run = f"{thread}-r0"
    register_run(thread, run)(client)
    return run


def _create(client: Client, thread: str, round_: int) -> list[Call]:
    run = _with_run(client, thread)
    first = users(round_)[0]
    upsert(thread, run, first)(client)  # one caller collides with existing feedback
    return [create(thread, run, user) for user in users(round_)]


def _upsert(client: Client, thread: str, round_: int) -> list[Call]:
    run = _with_run(client, thread)
    calls = []
    for i, user in enumerate(users(round_)):
        if i % 2:
            upsert(thread, run, user)(client)  # half update, half insert
        calls.append(upsert(thread, run, user))
    return calls


def _delete_feedback(client: Client, thread: str, round_: int) -> list[Call]:
    run = _with_run(client, thread)
    calls = []
    for user in users(round_):
        created = upsert(thread, run, user)(client)
        calls.append(delete_feedback(thread, run, created.feedback_id, user))
    return calls


def _delete_run_feedback(client: Client, thread: str, round_: int) -> list[Call]:
    run = _with_run(client, thread)
    for user in users(round_):
        upsert(thread, run, user)(client)
        upsert(thread, run, user, message_id="m1")(client)
    return [delete_run_feedback(thread, run, user) for user in users(round_)]


RACES = {
    "RegisterThread": Race(_register_thread, {OK}),
    "RegisterRun": Race(_register_run, {OK, NOT_FOUND}),
    "CreateFeedback": Race(_create, {OK, NOT_FOUND, ALREADY_EXISTS}),
    "UpsertFeedback": Race(_upsert, {OK, NOT_FOUND}),
    "DeleteFeedback": Race(_delete_feedback, {OK, NOT_FOUND}),
    "DeleteRunFeedback": Race(_delete_run_feedback, {OK, NOT_FOUND}),
}


def status(call: Call, client: Client) -> grpc.StatusCode:
    try:
        call(client)
    except grpc.RpcError as error:
        return error.code()
    return OK


def statuses(call: Call, client: Client, times: int) -> list[grpc.StatusCode]:
    return [status(call, client) for _ in range(times)]


def orphans(db: Database) -> dict[str, int]:
    """Rows whose parent is gone, read straight from the database."""

    def count(query) -> int:
        return db.execute_sql(*query.sql()).fetchone()[0]

    runs = Run.select(fn.COUNT(Run.run_id)).join(Thread, JOIN.LEFT_OUTER).where(Thread.thread_id.is_null())
    feedback = (
        Feedback.select(fn.COUNT(Feedback.id))
        .join(Run, JOIN.LEFT_OUTER)
        .where(Run.run_id.is_null() | (Run.thread != Feedback.thread_id))
    )
    return {"runs without thread": count(runs), "feedback without run": count(feedback)}


@pytest.fixture
def clients(database_url, tmp_path) -> Iterator[tuple[Client, list[Client], Database]]:
    """A server; a client to prepare with; one client (own channel) per racer;
    and a separate connection for checking rows (the server's own binding is
    left alone)."""
    with running_server(server_settings(tmp_path, database_url=database_url)) as (server, setup):
        channels = [grpc.insecure_channel(server.address) for _ in range(WRITERS + 1)]
        checker = db_url.connect(database_url)
        try:
            yield setup, [Client(channel) for channel in channels], checker
        finally:
            checker.close()
            for channel in channels:
                channel.close()


def race(pool: ThreadPoolExecutor, calls: list[tuple[Call, int]], racers: list[Client]) -> list[list]:
    """Starts every (call, times) together, each on its own channel; their statuses."""
    start = threading.Barrier(len(calls))

    def run(call: Call, times: int, client: Client) -> list[grpc.StatusCode]:
        start.wait(10)
        return statuses(call, client, times)

    futures = [
        pool.submit(run, call, times, client) for (call, times), client in zip(calls, racers, strict=True)
    ]
    return [future.result() for future in futures]


@pytest.mark.parametrize("write", RACES)
def test_write_racing_delete_thread_ends_in_a_documented_status(write, clients):
    setup, racers, checker = clients
    writes: list[grpc.StatusCode] = []
    deletes: list[grpc.StatusCode] = []
    with ThreadPoolExecutor(len(racers)) as pool:
        for round_ in range(ROUNDS):
            thread = f"t{round_}"
            register_thread(thread)(setup)
            calls = [(call, REPEATS) for call in RACES[write].prepare(setup, thread, round_)]
            position = round_ % len(racers)  # which channel deletes moves round by round
            calls.insert(position, (delete_thread(thread), 1))
            results = race(pool, calls, racers)
            deletes += results.pop(position)
            writes += [code for codes in results for code in codes]
            assert orphans(checker) == {"runs without thread": 0, "feedback without run": 0}, (
                f"round {round_}"
            )
    counted = Counter(code.name for code in writes)
    assert set(writes) <= RACES[write].allowed, f"{write} ended in {dict(counted)}"
    assert set(deletes) == {OK}  # the thread existed when each round began

"""StreamFeedbackChanges and DeleteUserFeedback through real servers, on
SQLite, PostgreSQL and MariaDB: every write shows up once, in commit order,
with the feedback as it is; a consumer applying the changes mirrors the
stored feedback exactly, under a concurrent workload; a change held
uncommitted is not skipped; a stream resumes from its last cursor with no gap
and no repeat, on any replica; old changes are pruned and their cursors must
resync; shutdown ends a following stream at once."""

import base64
import json
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import thread_registry_pb2 as registry_pb2
from feedback_service.config import sqlite_url
from feedback_service.core.records import ChangeKind
from feedback_service.store import changes as change_log
from feedback_service.store import writes
from feedback_service.store.database import open_database
from feedback_service.store.models import Feedback
from tests.harness import (
    JWT_SECRET,
    Client,
    ServiceProcess,
    as_service,
    as_service_for,
    as_user,
    backend_url,
    bad_fields,
    inspect_database,
    register,
    running_server,
    separate_channel,
    server_settings,
    wait_until,
)

Code = grpc.StatusCode
CREATED, UPDATED, DELETED = pb.CHANGE_KIND_CREATED, pb.CHANGE_KIND_UPDATED, pb.CHANGE_KIND_DELETED


def read_changes(client: Client, after: str = "", thread_id: str = "") -> list[pb.FeedbackChange]:
    """Every change after the cursor, with follow off: the stream ends by itself."""
    request = pb.StreamFeedbackChangesRequest(after_cursor=after, thread_id=thread_id)
    return list(client.feedback.StreamFeedbackChanges(request, metadata=as_service(), timeout=60))


def stream_error(client: Client, **fields) -> grpc.RpcError:
    request = pb.StreamFeedbackChangesRequest(**fields)
    with pytest.raises(grpc.RpcError) as raised:
        list(client.feedback.StreamFeedbackChanges(request, metadata=as_service(), timeout=30))
    return raised.value


def kinds(changes: list[pb.FeedbackChange]) -> list[tuple[int, str]]:
    return [(c.kind, c.feedback.feedback_id) for c in changes]


class Mirror:
    """What a consumer keeps: the feedback by id, built by applying changes."""

    def __init__(self) -> None:
        self.rows: dict[str, pb.Feedback] = {}
        self.cursor = ""
        self.applied = 0

    def apply(self, change: pb.FeedbackChange) -> None:
        # rating 0: deleted (or deleted since this change; its DELETED follows).
        if change.kind == DELETED or change.feedback.rating == 0:
            self.rows.pop(change.feedback.feedback_id, None)
        else:
            self.rows[change.feedback.feedback_id] = change.feedback
        self.cursor = change.cursor
        self.applied += 1


def listed_as_service(client: Client, thread_ids) -> dict[str, pb.Feedback]:
    """Every feedback of the threads, as ListThreadFeedback pages show a service."""
    rows: dict[str, pb.Feedback] = {}
    for thread_id in thread_ids:
        token = ""
        while True:
            page = client.feedback.ListThreadFeedback(
                pb.ListThreadFeedbackRequest(thread_id=thread_id, page_size=1000, page_token=token),
                metadata=as_service(),
            )
            rows.update((f.feedback_id, f) for f in page.feedback)
            token = page.next_page_token
            if not token:
                break
    return rows


@contextmanager
def following(channel: grpc.Channel, after: str = "", thread_id: str = "") -> Iterator["Follower"]:
    follower = Follower(channel, after, thread_id)
    follower.start()
    try:
        yield follower
    finally:
        follower.stop()


@dataclass
class Follower:
    """A consumer on a following stream, in a thread of its own."""

    channel: grpc.Channel
    after: str
    thread_id: str
    received: list[pb.FeedbackChange] = field(default_factory=list)
    mirror: Mirror = field(default_factory=Mirror)
    error: grpc.RpcError | None = None
    arrived: list[float] = field(default_factory=list)

    def start(self) -> None:
        request = pb.StreamFeedbackChangesRequest(
            after_cursor=self.after, follow=True, thread_id=self.thread_id
        )
        stub = Client(self.channel).feedback.StreamFeedbackChanges
        self.call = stub(request, metadata=as_service())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for change in self.call:
                self.received.append(change)
                self.arrived.append(time.monotonic())
                self.mirror.apply(change)
        except grpc.RpcError as error:
            self.error = error

    def wait_for(self, count: int, timeout_s: float = 30) -> list[pb.FeedbackChange]:
        wait_until(lambda: len(self.received) >= count or self.error is not None, timeout_s)
        assert self.error is None or self.error.code() == Code.CANCELLED, self.error
        return self.received

    def wait_for_cursor(self, cursor: str, timeout_s: float = 60) -> None:
        wait_until(lambda: self.mirror.cursor == cursor or self.error is not None, timeout_s)
        assert self.mirror.cursor == cursor, self.error

    def stop(self) -> None:
        self.call.cancel()
        self._thread.join(10)


@pytest.fixture
def served(database_url, tmp_path) -> Iterator[tuple[Client, str]]:
    """A server on each backend, its client and its address."""
    with running_server(server_settings(tmp_path, database_url=database_url)) as (server, client):
        yield client, server.address


# --- every write, once, in order ------------------------------------------------------


def test_every_kind_of_write_appears_once_in_commit_order(served):
    client, _ = served
    register(client, "t1", "", ["r1", "r2"])
    register(client, "t2", "", ["r3"])
    feedback = client.feedback
    a = feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1, comment="first"),
        metadata=as_user("alice"),
    )
    b = feedback.UpsertFeedback(
        pb.UpsertFeedbackRequest(thread_id="t1", run_id="r2", rating=1, message_id="m1"),
        metadata=as_user("alice"),
    )
    b2 = feedback.UpsertFeedback(
        pb.UpsertFeedbackRequest(thread_id="t1", run_id="r2", rating=-1, message_id="m1", comment="changed"),
        metadata=as_user("alice"),
    )
    c = feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t1", run_id="r2", rating=1), metadata=as_user("bob")
    )
    d = feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t2", run_id="r3", rating=1), metadata=as_user("bob")
    )
    e = feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t2", run_id="r3", rating=-1), metadata=as_user("carol")
    )
    feedback.DeleteFeedback(
        pb.DeleteFeedbackRequest(thread_id="t1", run_id="r1", feedback_id=a.feedback_id),
        metadata=as_user("alice"),
    )
    feedback.DeleteRunFeedback(
        pb.DeleteRunFeedbackRequest(thread_id="t1", run_id="r2"), metadata=as_user("alice")
    )
    client.registry.DeleteThread(registry_pb2.DeleteThreadRequest(thread_id="t2"), metadata=as_service())
    erased = feedback.DeleteUserFeedback(pb.DeleteUserFeedbackRequest(user_id="bob"), metadata=as_service())
    assert erased.deleted_feedback == 1  # c; d went with t2

    changes = read_changes(client)
    assert len(changes) == 11 and len({ch.cursor for ch in changes}) == 11
    assert kinds(changes[:8]) == [
        (CREATED, a.feedback_id),
        (CREATED, b.feedback_id),
        (UPDATED, b.feedback_id),
        (CREATED, c.feedback_id),
        (CREATED, d.feedback_id),
        (CREATED, e.feedback_id),
        (DELETED, a.feedback_id),
        (DELETED, b.feedback_id),
    ]
    # DeleteThread's changes, in the order it deleted its feedback; then the erasure.
    assert sorted(kinds(changes[8:10])) == sorted([(DELETED, d.feedback_id), (DELETED, e.feedback_id)])
    assert kinds(changes[10:]) == [(DELETED, c.feedback_id)]
    # Each change names its feedback by ids and key.
    named = {
        ch.feedback.feedback_id: (ch.feedback.thread_id, ch.feedback.run_id, ch.feedback.user_id)
        for ch in changes
    }
    assert named == {f.feedback_id: (f.thread_id, f.run_id, f.user_id) for f in (a, b, c, d, e)}
    assert [ch.feedback.message_id for ch in changes if ch.feedback.feedback_id == b.feedback_id] == [
        "m1"
    ] * 3
    # Nothing is stored any more: every change carries only the ids and key.
    assert all(ch.feedback.rating == 0 and not ch.feedback.HasField("created_at") for ch in changes)
    # changed_at: the feedback's updated_at for CREATED and UPDATED, then the deletes' times.
    assert b2.feedback_id == b.feedback_id
    assert [changes[0].changed_at, changes[2].changed_at] == [a.created_at, b2.updated_at]
    stamps = [ch.changed_at.ToMicroseconds() for ch in changes]
    assert stamps == sorted(stamps)
    # Only t2's changes, with the filter; cursors are the same positions.
    only_t2 = read_changes(client, thread_id="t2")
    assert [ch.cursor for ch in only_t2] == [ch.cursor for ch in changes if ch.feedback.thread_id == "t2"]


def test_a_change_carries_the_feedback_as_it_is_when_read(served):
    """A CREATED read after an update shows the update; once the feedback is
    gone, its CREATED keeps only the ids and key (rating 0), and its DELETED follows."""
    client, _ = served
    register(client, "t1", "alice", ["r1"])
    created = client.feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1, comment="before"),
        metadata=as_user("alice"),
    )
    updated = client.feedback.UpsertFeedback(
        pb.UpsertFeedbackRequest(thread_id="t1", run_id="r1", rating=-1, comment="after"),
        metadata=as_user("alice"),
    )
    first, second = read_changes(client)
    assert (first.kind, second.kind) == (CREATED, UPDATED)
    assert first.feedback == updated == second.feedback
    assert first.changed_at == created.created_at and second.changed_at == updated.updated_at
    client.feedback.DeleteRunFeedback(
        pb.DeleteRunFeedbackRequest(thread_id="t1", run_id="r1"), metadata=as_user("alice")
    )
    first, _, third = read_changes(client)
    assert first.kind == CREATED and first.feedback.rating == 0 and not first.feedback.comment
    assert (first.feedback.feedback_id, first.feedback.user_id) == (created.feedback_id, "alice")
    assert third.kind == DELETED


def test_writes_that_fail_record_no_change(served):
    client, _ = served
    register(client, "t1", "alice", ["r1"])
    client.feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1), metadata=as_user("alice")
    )
    before = read_changes(client)
    failing = [
        lambda: client.feedback.CreateFeedback(
            pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1), metadata=as_user("alice")
        ),  # ALREADY_EXISTS
        lambda: client.feedback.CreateFeedback(
            pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1), metadata=as_user("bob")
        ),  # someone else's thread
        lambda: client.feedback.UpsertFeedback(
            pb.UpsertFeedbackRequest(thread_id="t1", run_id="nope", rating=1), metadata=as_user("alice")
        ),
        lambda: client.feedback.DeleteRunFeedback(
            pb.DeleteRunFeedbackRequest(thread_id="t1", run_id="r1"), metadata=as_user("bob")
        ),
        lambda: client.feedback.DeleteFeedback(
            pb.DeleteFeedbackRequest(thread_id="t1", run_id="r1", feedback_id="nope"),
            metadata=as_user("alice"),
        ),
    ]
    for call in failing:
        with pytest.raises(grpc.RpcError):
            call()
    assert (
        client.feedback.DeleteUserFeedback(
            pb.DeleteUserFeedbackRequest(user_id="nobody"), metadata=as_service()
        ).deleted_feedback
        == 0
    )
    assert read_changes(client) == before


def test_malformed_requests_name_the_field(served):
    client, _ = served
    huge = base64.urlsafe_b64encode(("9" * 5000 + ".1.abc").encode()).decode()  # past int()'s 4,300 digits
    for value in ("garbage", "!!", base64.urlsafe_b64encode(b"12.").decode(), "MS5hYmM", huge):
        error = stream_error(client, after_cursor=value)
        assert error.code() == Code.INVALID_ARGUMENT, value
        assert bad_fields(error) == ["after_cursor"]
    error = stream_error(client, thread_id="t 1")
    assert error.code() == Code.INVALID_ARGUMENT
    assert bad_fields(error) == ["thread_id"]
    with pytest.raises(grpc.RpcError) as raised:
        client.feedback.DeleteUserFeedback(pb.DeleteUserFeedbackRequest(user_id=""), metadata=as_service())
    assert raised.value.code() == Code.INVALID_ARGUMENT
    assert bad_fields(raised.value) == ["user_id"]


def test_a_cursor_of_another_log_or_past_the_end_is_invalid_argument(served):
    client, _ = served
    register(client, "t1", "", ["r1"])
    client.feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1), metadata=as_user("u")
    )
    (change,) = read_changes(client)
    raw = base64.urlsafe_b64decode(change.cursor + "=" * (-len(change.cursor) % 4)).decode()
    *numbers, log_id = raw.split(".")  # (sequence) or (transaction, sequence) on PostgreSQL
    forgeries = [
        ".".join([*numbers, "0" * 16]),
        ".".join([str(2**62), *numbers[1:], log_id]),  # a position far past the end
        ".".join([str(2**63), *numbers[1:], log_id]),
        ".".join(["9" * 5000, *numbers[1:], log_id]),  # past what int() converts
    ]
    if len(numbers) == 1:  # dense positions: the next one is past the end
        forgeries.append(f"{int(numbers[0]) + 1}.{log_id}")
    for forged in forgeries:
        cursor = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
        error = stream_error(client, after_cursor=cursor)
        assert error.code() == Code.INVALID_ARGUMENT, forged
        assert bad_fields(error) == ["after_cursor"]
    assert read_changes(client, after=change.cursor) == []


# --- exact mirror under a concurrent workload -----------------------------------------

WORK_THREADS = {"w0": ["w0-r0", "w0-r1"], "w1": ["w1-r0", "w1-r1"], "w2": ["w2-r0"]}
WORK_USERS = [f"u{i}" for i in range(6)]
WRITERS = 8
OPS_PER_WRITER = 60
# The platform acts once for every this many writes of the writers together.
WRITES_PER_PLATFORM_OP = 3 * WRITERS


def writer(address: str, index: int, stop: threading.Event, written: list[Code]) -> list[Code]:
    """Creates, upserts, deletes one and deletes a run's, as random users.
    Each outcome is also appended to `written`, shared by all writers."""
    rng = random.Random(index)
    client = Client(separate_channel(address))
    codes: list[Code] = []
    mine: list[tuple[str, str, str, str]] = []  # (user, thread, run, feedback_id)
    try:
        for n in range(OPS_PER_WRITER):
            user = rng.choice(WORK_USERS)
            thread = rng.choice(list(WORK_THREADS))
            run = rng.choice(WORK_THREADS[thread])
            message = rng.choice(["", "m1", "m2"])
            op = rng.choice(["create", "create", "upsert", "upsert", "delete", "delete_run"])
            try:
                if op == "create":
                    made = client.feedback.CreateFeedback(
                        pb.CreateFeedbackRequest(
                            thread_id=thread,
                            run_id=run,
                            rating=1,
                            message_id=message,
                            comment=f"c{index}-{n}",
                        ),
                        metadata=as_user(user),
                    )
                    mine.append((user, thread, run, made.feedback_id))
                elif op == "upsert":
                    client.feedback.UpsertFeedback(
                        pb.UpsertFeedbackRequest(
                            thread_id=thread,
                            run_id=run,
                            rating=-1,
                            message_id=message,
                            comment=f"u{index}-{n}",
                        ),
                        metadata=as_service_for(user),
                    )
                elif op == "delete" and mine:
                    user, thread, run, feedback_id = mine.pop(rng.randrange(len(mine)))
                    client.feedback.DeleteFeedback(
                        pb.DeleteFeedbackRequest(thread_id=thread, run_id=run, feedback_id=feedback_id),
                        metadata=as_user(user),
                    )
                else:
                    client.feedback.DeleteRunFeedback(
                        pb.DeleteRunFeedbackRequest(thread_id=thread, run_id=run), metadata=as_user(user)
                    )
                codes.append(Code.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
            written.append(codes[-1])
            if stop.is_set():
                break
    finally:
        client.channel.close()
    return codes


def platform(address: str, stop: threading.Event, written: list[Code]) -> list[Code]:
    """Deletes threads (their feedback cascading) and registers them again,
    and erases users, while the writers write: once every
    WRITES_PER_PLATFORM_OP of their writes."""
    rng = random.Random(99)
    client = Client(separate_channel(address))
    codes = []
    try:
        while not stop.is_set():
            thread = rng.choice(list(WORK_THREADS))
            try:
                if rng.random() < 0.5:
                    client.registry.DeleteThread(
                        registry_pb2.DeleteThreadRequest(thread_id=thread), metadata=as_service()
                    )
                    register(client, thread, "", WORK_THREADS[thread])
                else:
                    client.feedback.DeleteUserFeedback(
                        pb.DeleteUserFeedbackRequest(user_id=rng.choice(WORK_USERS)), metadata=as_service()
                    )
                codes.append(Code.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
            next_turn = len(written) + WRITES_PER_PLATFORM_OP
            wait_until(lambda turn=next_turn: len(written) >= turn or stop.is_set(), 120)
    finally:
        client.channel.close()
    return codes


def test_a_consumer_applying_every_change_mirrors_what_a_service_lists(served):
    """Followers during the workload (one from the start, one that
    disconnects and resumes), and a reader from "" after it, all end with
    exactly the feedback ListThreadFeedback returns a service."""
    client, address = served
    for thread, runs in WORK_THREADS.items():
        register(client, thread, "", runs)
    stop = threading.Event()
    with following(separate_channel(address)) as live, ThreadPoolExecutor(WRITERS + 1) as pool:
        written: list[Code] = []
        platform_codes = pool.submit(platform, address, stop, written)
        writers = [pool.submit(writer, address, i, stop, written) for i in range(WRITERS)]
        # A second consumer reads part of the way, drops, and resumes from its cursor.
        live.wait_for(7)
        resumed = Mirror()
        for change in read_changes(client)[:7]:
            resumed.apply(change)
        codes = [code for future in writers for code in future.result(timeout=300)]
        stop.set()
        codes += platform_codes.result(timeout=60)
        assert set(codes) <= {Code.OK, Code.NOT_FOUND, Code.ALREADY_EXISTS}, codes
        assert codes.count(Code.OK) > WRITERS * OPS_PER_WRITER // 3

        everything = read_changes(client)
        live.wait_for_cursor(everything[-1].cursor)
        for change in read_changes(client, after=resumed.cursor):
            resumed.apply(change)

    fresh = Mirror()
    for change in everything:
        fresh.apply(change)
    stored = listed_as_service(client, WORK_THREADS)
    assert stored, "the workload left no feedback to compare"
    assert live.mirror.rows == stored
    assert fresh.rows == stored
    assert resumed.rows == stored
    assert [c.cursor for c in live.received] == [c.cursor for c in everything]
    assert len({c.cursor for c in everything}) == len(everything)
    kinds_seen = {c.kind for c in everything}
    assert kinds_seen == {CREATED, UPDATED, DELETED}
    print(f"\nmirror: {len(everything)} changes, {len(stored)} feedback stored, {len(codes)} calls")


# --- no change skipped when commits finish out of order ---------------------------------


@contextmanager
def service_on(url: str, data_dir: Path, **settings: str) -> Iterator[ServiceProcess]:
    service = ServiceProcess(data_dir, database_url=url, jwt_secret=JWT_SECRET, **settings)
    try:
        yield service
    finally:
        service.terminate()


def draft(user: str, thread: str = "t1", run: str = "r1"):
    from feedback_service.core.records import FeedbackDraft

    return FeedbackDraft(thread, run, user, "", 1, f"by {user}")


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_a_write_begun_first_and_committed_last_is_not_skipped(backend, tmp_path):
    """The case sequences get wrong: a transaction inserts its feedback (and
    so takes the lower row id), stays open while a later write commits, then
    commits. Its change is streamed, not skipped. On MySQL a change's position
    is taken when its transaction appends it, last: the later write is
    streamed at once, the held one after it. On PostgreSQL changes are read
    in transaction order, only below the oldest transaction still running:
    the later write waits in the feed until the held one ends, then both come,
    the held one first."""
    url = backend_url(backend, tmp_path)
    by_transaction = backend == "postgres"
    with service_on(url, tmp_path / "data") as service:
        client = Client(grpc.insecure_channel(service.address))
        register(client, "t1", "", ["r1"])
        start = _cursor_after_a_first_write(client)
        db = open_database(url)  # this process's own connection, bound to the models
        try:
            with (
                following(separate_channel(service.address), after=start) as follower,
                db.connection_context(),
            ):
                with db.atomic():
                    held = writes._new_row(draft("held"))
                    Feedback.insert(
                        dict(zip(writes.INSERTED_FIELDS, writes._inserted_values(held), strict=True))
                    ).execute()
                    # Committed while `held` is open.
                    later = client.feedback.CreateFeedback(
                        pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1),
                        metadata=as_user("later"),
                    )
                    if by_transaction:  # held back behind the open transaction
                        assert read_changes(client, after=start) == []
                    else:  # streamed at once
                        assert kinds(follower.wait_for(1)) == [(CREATED, later.feedback_id)]
                    change_log.append_changes(ChangeKind.CREATED, [writes._key(held)], held.updated_at)
                both = [(CREATED, later.feedback_id), (CREATED, held.feedback_id)]
                assert kinds(follower.wait_for(2)) == (both[::-1] if by_transaction else both)
                ids = dict(db.execute_sql("SELECT feedback_id, id FROM feedback").fetchall())
                assert ids[held.feedback_id] < ids[later.feedback_id], "the held row took the lower row id"
            assert kinds(read_changes(client, after=start)) == kinds(follower.received)
        finally:
            db.close()
            client.channel.close()


def _cursor_after_a_first_write(client: Client) -> str:
    client.feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1), metadata=as_user("first")
    )
    return read_changes(client)[-1].cursor


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
def test_a_change_held_uncommitted_holds_back_later_changes_until_it_commits(backend, tmp_path):
    """A transaction that has appended its change holds the feed back until
    it commits: no reader sees anything past it, and once it commits both are
    streamed, in order. Where the log is ordered by its head (SQLite, MySQL),
    a later write waits for it; on PostgreSQL writers share no lock, so the
    later write commits while it is still open."""
    url = backend_url(backend, tmp_path) if backend != "sqlite" else sqlite_url(tmp_path / "shared.db")
    with service_on(url, tmp_path / "data") as service:
        client = Client(grpc.insecure_channel(service.address))
        register(client, "t1", "", ["r1"])
        first = client.feedback.CreateFeedback(
            pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1), metadata=as_user("first")
        )
        start = read_changes(client)[-1].cursor
        db = open_database(url)
        try:
            with (
                following(separate_channel(service.address), after=start) as follower,
                db.connection_context(),
            ):
                with db.atomic():
                    held = writes.create_feedback(draft("held"), False)
                    later = client.feedback.CreateFeedback.future(
                        pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1),
                        metadata=as_user("later"),
                        timeout=30,
                    )
                    if backend == "postgres":
                        later.result()  # committed while `held` is open
                    else:
                        # Time is the subject: that the later write is still waiting,
                        # and nothing was streamed, 1.5 s (three polls) after it was sent.
                        time.sleep(1.5)
                        assert not later.done(), "the later write should wait for the held change"
                    assert follower.received == [] and read_changes(client, after=start) == []
                later = later.result()
                assert kinds(follower.wait_for(2)) == [
                    (CREATED, held.feedback_id),
                    (CREATED, later.feedback_id),
                ]
            assert kinds(read_changes(client)) == [(CREATED, first.feedback_id), *kinds(follower.received)]
        finally:
            db.close()
            client.channel.close()


@dataclass
class HeldWrite:
    """A feedback write in a transaction of the test's own, on its own
    connection and thread: it inserts its feedback when started (taking a row
    id, and on PostgreSQL a transaction id), then waits for `commit` to
    append its change and commit."""

    db: object
    user: str
    begun: threading.Event = field(default_factory=threading.Event)
    commit: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    feedback_id: str = ""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.begun.wait(30)

    def _run(self) -> None:
        with self.db.connection_context(), self.db.atomic():
            row = writes._new_row(draft(self.user))
            Feedback.insert(
                dict(zip(writes.INSERTED_FIELDS, writes._inserted_values(row), strict=True))
            ).execute()
            self.feedback_id = row.feedback_id
            self.begun.set()
            assert self.commit.wait(60)
            change_log.append_changes(ChangeKind.CREATED, [writes._key(row)], row.updated_at)
        self.done.set()

    def finish(self) -> None:
        self.commit.set()
        assert self.done.wait(30)
        self._thread.join(10)


def _creates(clients: list[Client], prefix: str, count: int) -> list[str]:
    """`count` creates spread over the clients (and so the processes), in parallel."""

    def create(i: int) -> str:
        client = clients[i % len(clients)]
        request = pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1, message_id=f"{prefix}{i}")
        return client.feedback.CreateFeedback(request, metadata=as_user("writer"), timeout=30).feedback_id

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(create, range(count)))


class Resumer:
    """A consumer that reads what is new after its cursor now and then, each
    time from the other process, and keeps what it got."""

    def __init__(self, clients: list[Client]) -> None:
        self.clients = clients
        self.received: list[pb.FeedbackChange] = []

    def read(self) -> None:
        cursor = self.received[-1].cursor if self.received else ""
        client = self.clients[len(self.received) % len(self.clients)]
        self.received += read_changes(client, after=cursor)


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_transactions_committing_out_of_order_across_two_processes_lose_and_repeat_nothing(backend, tmp_path):
    """Three transactions begin in the order 1, 2, 3 and commit in the order
    3, 1, 2, while writes through two server processes commit between them.
    A follower on each process, a consumer that resumes between every step
    on either process, and a reader from the start each receive every change
    exactly once, in the same order."""
    url = backend_url(backend, tmp_path)
    with service_on(url, tmp_path / "a") as one, service_on(url, tmp_path / "b") as two:
        clients = [Client(separate_channel(one.address)), Client(separate_channel(two.address))]
        register(clients[0], "t1", "", ["r1"])
        db = open_database(url)
        held = [HeldWrite(db, f"held{i}") for i in range(3)]
        resumer = Resumer(clients)
        try:
            with (
                following(separate_channel(one.address)) as on_one,
                following(separate_channel(two.address)) as on_two,
            ):
                written = _creates(clients, "a", 10)
                resumer.read()
                for write in held:
                    write.start()
                    written += _creates(clients, f"b{write.user}-", 6)
                    resumer.read()
                for write in (held[2], held[0], held[1]):
                    write.finish()
                    resumer.read()
                    written += _creates(clients, f"c{write.user}-", 6)
                    resumer.read()
                written += [write.feedback_id for write in held]
                for follower in (on_one, on_two):
                    follower.wait_for(len(written), timeout_s=60)
            everything = read_changes(clients[1])
        finally:
            for write in held:
                write.commit.set()
            db.close()
            for client in clients:
                client.channel.close()
    assert sorted(c.feedback.feedback_id for c in everything) == sorted(written)
    assert len({c.cursor for c in everything}) == len(written)
    for consumer in (on_one, on_two, resumer):
        assert [c.cursor for c in consumer.received] == [c.cursor for c in everything]


# --- resume, any replica ------------------------------------------------------------------


def test_resuming_from_the_last_cursor_gives_no_gap_and_no_repeat(served):
    client, address = served
    register(client, "t1", "", ["r1"])
    for i in range(25):
        client.feedback.UpsertFeedback(
            pb.UpsertFeedbackRequest(thread_id="t1", run_id="r1", rating=1, message_id=f"m{i % 10}"),
            metadata=as_user("alice"),
        )
    everything = read_changes(client)
    assert len(everything) == 25
    # Read a few at a time, dropping the stream each time, following or not.
    pieces, cursor = [], ""
    while len(pieces) < len(everything):
        request = pb.StreamFeedbackChangesRequest(after_cursor=cursor, follow=len(pieces) % 2 == 0)
        call = client.feedback.StreamFeedbackChanges(request, metadata=as_service())
        for _ in range(min(4, len(everything) - len(pieces))):
            pieces.append(next(call))
        call.cancel()
        cursor = pieces[-1].cursor
    assert pieces == everything
    # A follower dropped in the middle of a burst of writes resumes where it was.
    with following(separate_channel(address), after=cursor) as first:
        for i in range(10):
            client.feedback.CreateFeedback(
                pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=-1, message_id=f"n{i}"),
                metadata=as_user("bob"),
            )
            if i == 4:
                first.wait_for(3)
                first.stop()
        taken = list(first.received)
    with following(separate_channel(address), after=taken[-1].cursor) as second:
        second.wait_for(10 - len(taken))
    assert taken + second.received == read_changes(client, after=cursor)
    assert len(read_changes(client, after=cursor)) == 10


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
def test_a_change_written_through_one_process_streams_from_another(backend, tmp_path):
    url = backend_url(backend, tmp_path) if backend != "sqlite" else sqlite_url(tmp_path / "shared.db")
    with service_on(url, tmp_path / "a") as writer_process, service_on(url, tmp_path / "b") as reader_process:
        writing = Client(grpc.insecure_channel(writer_process.address))
        reading = Client(grpc.insecure_channel(reader_process.address))
        register(writing, "t1", "", ["r1"])
        with following(separate_channel(reader_process.address)) as follower:
            written, sent = [], []
            for i in range(5):
                sent.append(time.monotonic())
                written.append(
                    writing.feedback.CreateFeedback(
                        pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1, message_id=f"m{i}"),
                        metadata=as_user("alice"),
                    )
                )
                follower.wait_for(i + 1, timeout_s=10)  # each write's own delay
        assert [c.feedback for c in follower.received] == written
        delays = [arrived - at for arrived, at in zip(follower.arrived, sent, strict=True)]
        assert max(delays) < 2, delays  # about a second: polled every 0.5 s (slack for a busy machine)
        # A cursor handed out by one process resumes on the other.
        from_writer = list(
            writing.feedback.StreamFeedbackChanges(pb.StreamFeedbackChangesRequest(), metadata=as_service())
        )
        resumed = read_changes(reading, after=from_writer[1].cursor)
        assert resumed == from_writer[2:]
        writing.channel.close()
        reading.channel.close()


# --- retention ---------------------------------------------------------------------------


def test_old_changes_are_pruned_and_an_old_cursor_must_resync(database_url, tmp_path):
    settings = server_settings(
        tmp_path, database_url=database_url, changes_retention_s=1.0, changes_prune_interval_s=0.2
    )
    with running_server(settings) as (_, client):
        register(client, "t1", "", ["r1"])
        old = [
            client.feedback.CreateFeedback(
                pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1, message_id=f"m{i}"),
                metadata=as_user("alice"),
            )
            for i in range(3)
        ]
        oldest, newest_old = read_changes(client)[0], read_changes(client)[-1]
        db = inspect_database(database_url)
        try:
            wait_until(lambda: db.execute_sql("SELECT COUNT(*) FROM feedback_change").fetchone()[0] == 0)
        finally:
            db.close()
        new = client.feedback.CreateFeedback(
            pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=-1), metadata=as_user("bob")
        )
        error = stream_error(client, after_cursor=oldest.cursor)
        assert error.code() == Code.FAILED_PRECONDITION
        assert "pruned" in error.details() and "resync" in error.details()
        assert "ListThreadFeedback" in error.details() and "1s" in error.details()
        # The newest pruned change's cursor misses nothing: it goes on.
        assert kinds(read_changes(client, after=newest_old.cursor)) == [(CREATED, new.feedback_id)]
        # The empty cursor starts at the oldest change kept; the list has the rest.
        assert kinds(read_changes(client)) == [(CREATED, new.feedback_id)]
        stored = listed_as_service(client, ["t1"])
        assert set(stored) == {f.feedback_id for f in [*old, new]}


def test_request_ids_past_their_window_are_pruned(database_url, tmp_path):
    settings = server_settings(tmp_path, database_url=database_url, changes_prune_interval_s=0.2)
    with running_server(settings) as (_, client):
        register(client, "t1", "", ["r1"])
        client.feedback.CreateFeedback(
            pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1, request_id=str(uuid.uuid4())),
            metadata=as_user("a"),
        )
        db = inspect_database(settings.effective_database_url())
        try:
            assert db.execute_sql("SELECT COUNT(*) FROM idempotent_request").fetchone() == (1,)
            db.execute_sql("UPDATE idempotent_request SET created_at = created_at - 86400000001")
            wait_until(lambda: db.execute_sql("SELECT COUNT(*) FROM idempotent_request").fetchone() == (0,))
        finally:
            db.close()


# --- limits and shutdown -------------------------------------------------------------------


def test_change_streams_are_bounded_on_their_own_and_do_not_count_as_calls(tmp_path):
    settings = server_settings(tmp_path, max_change_streams=2, max_concurrent_rpcs=1)
    with running_server(settings) as (server, client):
        register(client, "t1", "", ["r1"])
        with (
            following(separate_channel(server.address)) as one,
            following(separate_channel(server.address)) as two,
        ):
            client.feedback.CreateFeedback(
                pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1), metadata=as_user("a")
            )
            one.wait_for(1)
            two.wait_for(1)
            error = stream_error(client, follow=True)
            assert error.code() == Code.RESOURCE_EXHAUSTED
            assert "2 change streams" in error.details()
            # Unary calls still run: the open streams are not calls in progress.
            stats = client.feedback.GetFeedbackStats(
                pb.GetFeedbackStatsRequest(thread_id="t1", run_id="r1"), metadata=as_service()
            )
            assert stats.total == 1
        # Closed streams give their places back.
        wait_until(lambda: _opens(client))


def _opens(client: Client) -> bool:
    try:
        read_changes(client)
    except grpc.RpcError as error:
        assert error.code() == Code.RESOURCE_EXHAUSTED
        return False
    return True


def test_shutdown_ends_a_following_stream_at_once_with_one_access_line(tmp_path):
    service = ServiceProcess(
        tmp_path / "data",
        jwt_secret=JWT_SECRET,
        shutdown_grace_s="30",
        log_format="json",
        metrics_listen="127.0.0.1:0",
    )
    channel = grpc.insecure_channel(service.address)
    try:
        register(Client(channel), "t1", "", ["r1"])
        with following(separate_channel(service.address)) as follower:
            wait_until(lambda: service.metric("feedback_change_streams_open") == 1)
            stopping = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            wait_until(lambda: follower.error is not None, 10)
            assert follower.error.code() == Code.UNAVAILABLE
            assert "shutting down" in follower.error.details()
        assert service.process.wait(10) == 0
        assert time.monotonic() - stopping < 5, "the stream held the shutdown"
    finally:
        channel.close()
    service.terminate()
    log = "".join(service.log)
    assert "Traceback" not in log and '"level": "ERROR"' not in log, log
    streams = [e for e in service.access_lines() if e["method"].endswith("/StreamFeedbackChanges")]
    assert [(e["code"], e["principal_kind"], e["principal_id"]) for e in streams] == [
        ("UNAVAILABLE", "service", "platform")
    ]


# --- erasure -------------------------------------------------------------------------------


def test_erasing_a_user_removes_their_feedback_everywhere_and_shows_on_the_feed(served):
    client, _ = served
    register(client, "t-a", "alice", ["ra"])
    register(client, "t-s", "", ["rs1", "rs2"])
    mine = [
        client.feedback.CreateFeedback(
            pb.CreateFeedbackRequest(thread_id=t, run_id=r, rating=1, message_id=m, comment="private words"),
            metadata=as_user("alice"),
        )
        for t, r, m in (("t-a", "ra", ""), ("t-a", "ra", "m1"), ("t-s", "rs1", ""), ("t-s", "rs2", "m9"))
    ]
    kept = client.feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t-s", run_id="rs1", rating=-1), metadata=as_user("bob")
    )
    before = read_changes(client)[-1].cursor
    erased = client.feedback.DeleteUserFeedback(
        pb.DeleteUserFeedbackRequest(user_id="alice"), metadata=as_service()
    )
    assert erased.deleted_feedback == 4
    assert listed_as_service(client, ["t-a", "t-s"]) == {kept.feedback_id: kept}
    after = read_changes(client, after=before)
    assert sorted(kinds(after)) == sorted((DELETED, f.feedback_id) for f in mine)
    assert all(c.feedback.user_id == "alice" and not c.feedback.comment for c in after)
    # Once more: nothing left to erase.
    again = client.feedback.DeleteUserFeedback(
        pb.DeleteUserFeedbackRequest(user_id="alice"), metadata=as_service()
    )
    assert again.deleted_feedback == 0
    # Every change of alice's feedback now carries no text at all.
    assert all(not c.feedback.comment for c in read_changes(client) if c.feedback.user_id == "alice")


def test_erasure_is_logged_with_the_service_and_the_user_and_never_a_comment(tmp_path):
    service = ServiceProcess(tmp_path / "data", jwt_secret=JWT_SECRET, log_format="json")
    try:
        client = Client(grpc.insecure_channel(service.address))
        register(client, "t1", "", ["r1"])
        secret = "a comment that must never reach the logs"
        client.feedback.CreateFeedback(
            pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1, comment=secret),
            metadata=as_user("alice"),
        )
        client.feedback.DeleteUserFeedback(
            pb.DeleteUserFeedbackRequest(user_id="alice"), metadata=as_service()
        )
        wait_until(lambda: any("erased" in line for line in service.log))
        wait_until(lambda: any(e["method"].endswith("/DeleteUserFeedback") for e in service.access_lines()))
        client.channel.close()
    finally:
        service.terminate()
    erasures = [json.loads(line) for line in service.log if "erased" in line]
    assert [e["message"] for e in erasures] == ["erased 1 feedback of user alice for service platform"]
    access = [e for e in service.access_lines() if e["method"].endswith("/DeleteUserFeedback")]
    assert [(e["code"], e["principal_id"]) for e in access] == [("OK", "platform")]
    assert secret not in "".join(service.log)


def test_a_change_carries_the_feedback_with_its_tags(served):
    client, _ = served
    register(client, "t1", "", ["r1"])
    alice = as_user("alice")
    created = client.feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=-1, tags=["slow", "incorrect"]),
        metadata=alice,
    )
    client.feedback.UpsertFeedback(
        pb.UpsertFeedbackRequest(thread_id="t1", run_id="r1", rating=-1, tags=["other"]), metadata=alice
    )
    changes = read_changes(client)
    assert [list(change.feedback.tags) for change in changes] == [["other"], ["other"]]  # as it is now
    listed = client.feedback.ListFeedback(
        pb.ListFeedbackRequest(thread_id="t1", run_id="r1"), metadata=as_service()
    )
    assert [changes[-1].feedback] == list(listed.feedback)
    assert changes[-1].feedback.feedback_id == created.feedback_id

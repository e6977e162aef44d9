"""Many callers across two server processes (`serve --workers 2`, one port)
on the same keys: no lost write, no duplicate row, never INTERNAL."""

import random
import socket
import threading
from collections import Counter
from dataclasses import dataclass

import grpc
import pytest

from feedback.v1 import feedback_pb2 as pb
from tests.harness import JWT_SECRET, Client, ServiceProcess, as_service, as_user, register

HOT_USERS = [f"hot{i}" for i in range(4)]  # shared by every hot caller
OWNED_USERS = [f"own{i}" for i in range(6)]  # each driven by one sequential caller
HOT_CALLERS = 12
OPS_PER_CALLER = 40
EXPECTED_CODES = {grpc.StatusCode.OK, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.NOT_FOUND}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_client(address: str) -> Client:
    # A local subchannel pool gives every client its own TCP connection, which
    # the kernel assigns to one of the worker processes.
    return Client(grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]))


@dataclass
class Outcome:
    op: str
    code: grpc.StatusCode
    tag: str
    response: pb.Feedback | None


def do(client: Client, user: str, op: str, tag: str) -> Outcome:
    metadata = as_user(user)
    rating = random.choice((1, -1))
    try:
        if op == "upsert":
            request = pb.UpsertFeedbackRequest(thread_id="t1", run_id="r1", rating=rating, comment=tag)
            return Outcome(
                op, grpc.StatusCode.OK, tag, client.feedback.UpsertFeedback(request, metadata=metadata)
            )
        if op == "create":
            request = pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=rating, comment=tag)
            return Outcome(
                op, grpc.StatusCode.OK, tag, client.feedback.CreateFeedback(request, metadata=metadata)
            )
        request = pb.DeleteRunFeedbackRequest(thread_id="t1", run_id="r1")
        client.feedback.DeleteRunFeedback(request, metadata=metadata)
        return Outcome(op, grpc.StatusCode.OK, tag, None)
    except grpc.RpcError as error:
        return Outcome(op, error.code(), tag, None)


def hot_caller(address: str, index: int, outcomes: list[tuple[str, Outcome]]) -> None:
    client = new_client(address)
    for n in range(OPS_PER_CALLER):
        user = random.choice(HOT_USERS)
        op = random.choice(("upsert", "upsert", "create", "delete"))
        outcomes.append((user, do(client, user, op, f"hot-{index}-{n}")))
    client.channel.close()


def owned_caller(address: str, user: str, outcomes: list[tuple[str, Outcome]], final: dict) -> None:
    """One caller per key: the last committed write is known exactly."""
    client = new_client(address)
    state: pb.Feedback | None = None
    for n in range(OPS_PER_CALLER):
        outcome = do(client, user, random.choice(("upsert", "create", "delete")), f"{user}-{n}")
        outcomes.append((user, outcome))
        if outcome.code == grpc.StatusCode.OK:
            state = outcome.response
        elif outcome.op == "create":  # ALREADY_EXISTS exactly when a row exists
            assert (outcome.code == grpc.StatusCode.ALREADY_EXISTS) == (state is not None), outcome
        elif outcome.op == "delete":  # NOT_FOUND exactly when no row exists
            assert (outcome.code == grpc.StatusCode.NOT_FOUND) == (state is None), outcome
    final[user] = state
    client.channel.close()


def test_two_server_processes_lose_and_duplicate_nothing(database_url, tmp_path):
    service = ServiceProcess(
        tmp_path / "data",
        "--workers",
        "2",
        listen=f"127.0.0.1:{free_port()}",
        servers=2,
        database_url=database_url,
        jwt_secret=JWT_SECRET,
    )
    try:
        setup = new_client(service.address)
        register(setup, "t1", "", ["r1"])
        outcomes: list[tuple[str, Outcome]] = []
        final: dict[str, pb.Feedback | None] = {}
        threads = [
            threading.Thread(target=hot_caller, args=(service.address, i, outcomes))
            for i in range(HOT_CALLERS)
        ]
        threads += [
            threading.Thread(target=owned_caller, args=(service.address, u, outcomes, final))
            for u in OWNED_USERS
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)

        codes = Counter(outcome.code for _, outcome in outcomes)
        assert set(codes) <= EXPECTED_CODES, (codes, "".join(service.log))
        listed = setup.feedback.ListFeedback(
            pb.ListFeedbackRequest(thread_id="t1", run_id="r1", page_size=1000), metadata=as_service()
        ).feedback
        rows = {row.user_id: row for row in listed}
        assert len(rows) == len(listed), "a key has more than one row"

        # Owned keys hold exactly their last committed write (or nothing after a delete).
        for user in OWNED_USERS:
            assert rows.get(user) == final[user], user
        # Hot keys hold exactly what one successful write returned: no torn or lost row.
        written = {(user, o.response.comment): o.response for user, o in outcomes if o.response is not None}
        for user in HOT_USERS:
            if user in rows:
                assert written[(user, rows[user].comment)] == rows[user]
        stats = setup.feedback.GetFeedbackStats(
            pb.GetFeedbackStatsRequest(thread_id="t1", run_id="r1"), metadata=as_service()
        )
        assert stats.total == len(rows)
        setup.channel.close()
    finally:
        assert service.terminate() == 0, "".join(service.log[-20:])
    assert len(service.server_pids) == 2
    seen = {code.name: n for code, n in codes.items()}
    print(
        f"\n[scale-out] writes issued: {len(outcomes)}, rows verified: {len(rows)} "
        f"(keys {len(HOT_USERS) + len(OWNED_USERS)}), statuses: {seen}, "
        f"server pids: {sorted(service.server_pids)}"
    )


def test_workers_need_a_fixed_port(tmp_path):
    with pytest.raises(AssertionError, match="--workers needs a fixed port"):
        ServiceProcess(tmp_path / "data", "--workers", "2", listen="127.0.0.1:0", servers=2)

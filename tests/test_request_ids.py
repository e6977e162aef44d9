"""Safe retries (AIP-155) through real servers, on SQLite, PostgreSQL and
MariaDB: a repeat of a request_id returns the first call's response, so a
retried create is not ALREADY_EXISTS and a retried delete is not NOT_FOUND;
a reused request_id with another request is INVALID_ARGUMENT; concurrent
duplicates, on one server process or two, make one write and get identical
answers."""

import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import grpc
import pytest

from feedback.v1 import feedback_pb2 as pb
from tests.harness import (
    JWT_SECRET,
    Client,
    ServiceProcess,
    as_service,
    as_service_for,
    as_user,
    bad_fields,
    inspect_database,
    register,
    rpc_error,
    running_server,
    separate_channel,
    server_settings,
)

Code = grpc.StatusCode
ALICE = as_user("alice")


def rid() -> str:
    return str(uuid.uuid4())


def create_request(request_id: str, rating: int = 1, **fields) -> pb.CreateFeedbackRequest:
    return pb.CreateFeedbackRequest(
        thread_id="t1", run_id="r1", rating=rating, request_id=request_id, **fields
    )


def listed(client: Client) -> list[pb.Feedback]:
    request = pb.ListFeedbackRequest(thread_id="t1", run_id="r1", page_size=1000)
    return list(client.feedback.ListFeedback(request, metadata=as_service()).feedback)


def changes(client: Client) -> list[pb.FeedbackChange]:
    return list(
        client.feedback.StreamFeedbackChanges(pb.StreamFeedbackChangesRequest(), metadata=as_service())
    )


@pytest.fixture
def world(client: Client) -> Client:
    register(client, "t1", "", ["r1", "r2"])
    return client


def test_a_retried_create_returns_the_first_feedback_not_already_exists(world):
    request_id = rid()
    first = world.feedback.CreateFeedback(create_request(request_id, comment="once"), metadata=ALICE)
    again = world.feedback.CreateFeedback(create_request(request_id, comment="once"), metadata=ALICE)
    assert again == first
    # Any case of the same id is the same id.
    upper = world.feedback.CreateFeedback(create_request(request_id.upper(), comment="once"), metadata=ALICE)
    assert upper == first
    # Without the request id, the same create is a second one.
    error = rpc_error(world.feedback.CreateFeedback, create_request("", comment="once"), metadata=ALICE)
    assert error.code() == Code.ALREADY_EXISTS
    assert listed(world) == [first]
    assert len(changes(world)) == 1


def test_a_retry_returns_the_first_response_even_after_the_feedback_changed(world):
    request_id = rid()
    first = world.feedback.CreateFeedback(create_request(request_id), metadata=ALICE)
    world.feedback.UpsertFeedback(
        pb.UpsertFeedbackRequest(thread_id="t1", run_id="r1", rating=-1, comment="changed"), metadata=ALICE
    )
    assert world.feedback.CreateFeedback(create_request(request_id), metadata=ALICE) == first


def test_a_retried_delete_succeeds_again_not_not_found(world):
    created = world.feedback.CreateFeedback(create_request(""), metadata=ALICE)
    world.feedback.CreateFeedback(create_request("", message_id="m1"), metadata=ALICE)
    delete_one = pb.DeleteFeedbackRequest(
        thread_id="t1", run_id="r1", feedback_id=created.feedback_id, request_id=rid()
    )
    for _ in range(3):
        assert world.feedback.DeleteFeedback(delete_one, metadata=ALICE).success
    delete_run = pb.DeleteRunFeedbackRequest(thread_id="t1", run_id="r1", request_id=rid())
    for _ in range(3):
        assert world.feedback.DeleteRunFeedback(delete_run, metadata=ALICE).success
    assert listed(world) == []
    # One change per feedback deleted, however often the deletes were repeated.
    assert [c.kind for c in changes(world)] == [pb.CHANGE_KIND_CREATED] * 2 + [pb.CHANGE_KIND_DELETED] * 2
    # Without a request id, the repeat is NOT_FOUND, as it always was.
    delete_one.request_id = ""
    assert rpc_error(world.feedback.DeleteFeedback, delete_one, metadata=ALICE).code() == Code.NOT_FOUND


@pytest.mark.parametrize(
    "other",
    [
        {"rating": -1},
        {"comment": "something else"},
        {"message_id": "m1"},
        {"run_id": "r2"},
    ],
)
def test_the_same_request_id_with_a_different_request_is_invalid_argument(world, other):
    request_id = rid()
    world.feedback.CreateFeedback(create_request(request_id), metadata=ALICE)
    request = create_request(request_id)
    for name, value in other.items():
        setattr(request, name, value)
    error = rpc_error(world.feedback.CreateFeedback, request, metadata=ALICE)
    assert error.code() == Code.INVALID_ARGUMENT
    assert bad_fields(error) == ["request_id"]
    assert len(listed(world)) == 1


def test_a_request_id_names_one_request_on_one_rpc(world):
    request_id = rid()
    created = world.feedback.CreateFeedback(create_request(request_id), metadata=ALICE)
    delete = pb.DeleteFeedbackRequest(
        thread_id="t1", run_id="r1", feedback_id=created.feedback_id, request_id=request_id
    )
    error = rpc_error(world.feedback.DeleteFeedback, delete, metadata=ALICE)
    assert error.code() == Code.INVALID_ARGUMENT
    assert bad_fields(error) == ["request_id"]
    assert listed(world) == [created]


def test_request_ids_belong_to_their_caller(world):
    """Another user, or a service acting for the same user, sending the same
    request id sends a request of their own."""
    request_id = rid()
    alice = world.feedback.CreateFeedback(create_request(request_id), metadata=ALICE)
    bob = world.feedback.CreateFeedback(create_request(request_id), metadata=as_user("bob"))
    assert bob.user_id == "bob" and bob.feedback_id != alice.feedback_id
    error = rpc_error(
        world.feedback.CreateFeedback, create_request(request_id), metadata=as_service_for("alice")
    )
    assert error.code() == Code.ALREADY_EXISTS


@pytest.mark.parametrize(
    "value",
    ["not-a-uuid", "123e4567e89b12d3a456426614174000", "{123e4567-e89b-12d3-a456-426614174000}", "x" * 37],
)
def test_a_request_id_that_is_not_a_uuid_is_invalid_argument(world, value):
    calls: list[tuple[Callable, object]] = [
        (world.feedback.CreateFeedback, create_request(value)),
        (
            world.feedback.DeleteFeedback,
            pb.DeleteFeedbackRequest(thread_id="t1", run_id="r1", feedback_id="f", request_id=value),
        ),
        (
            world.feedback.DeleteRunFeedback,
            pb.DeleteRunFeedbackRequest(thread_id="t1", run_id="r1", request_id=value),
        ),
    ]
    for call, request in calls:
        error = rpc_error(call, request, metadata=ALICE)
        assert error.code() == Code.INVALID_ARGUMENT
        assert bad_fields(error) == ["request_id"]
    assert listed(world) == []


def test_a_failed_first_call_leaves_nothing_behind(world):
    """A call that fails keeps no response: its retry runs again."""
    request_id = rid()
    request = pb.CreateFeedbackRequest(thread_id="t1", run_id="r-later", rating=1, request_id=request_id)
    assert rpc_error(world.feedback.CreateFeedback, request, metadata=ALICE).code() == Code.NOT_FOUND
    register(world, "t1", "", ["r-later"])
    created = world.feedback.CreateFeedback(request, metadata=ALICE)
    assert created.run_id == "r-later"
    # Nor is ALREADY_EXISTS or NOT_FOUND: once the way is clear, the retry succeeds.
    request.request_id = rid()
    assert rpc_error(world.feedback.CreateFeedback, request, metadata=ALICE).code() == Code.ALREADY_EXISTS
    world.feedback.DeleteRunFeedback(
        pb.DeleteRunFeedbackRequest(thread_id="t1", run_id="r-later"), metadata=ALICE
    )
    assert world.feedback.CreateFeedback(request, metadata=ALICE).feedback_id != created.feedback_id
    delete = pb.DeleteRunFeedbackRequest(thread_id="t1", run_id="r2", request_id=rid())
    assert rpc_error(world.feedback.DeleteRunFeedback, delete, metadata=ALICE).code() == Code.NOT_FOUND
    world.feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t1", run_id="r2", rating=1), metadata=ALICE
    )
    assert world.feedback.DeleteRunFeedback(delete, metadata=ALICE).success


def test_an_entry_older_than_24_hours_counts_as_new(world, database_url):
    request_id = rid()
    first = world.feedback.CreateFeedback(create_request(request_id), metadata=ALICE)
    db = inspect_database(database_url)
    try:
        db.execute_sql("UPDATE idempotent_request SET created_at = created_at - 86400000001")
    finally:
        db.close()
    # Treated as new: the feedback exists, so this create is ALREADY_EXISTS...
    assert rpc_error(world.feedback.CreateFeedback, create_request(request_id), metadata=ALICE).code() == (
        Code.ALREADY_EXISTS
    )
    # ...and once it is gone, the same request id creates a new one.
    world.feedback.DeleteRunFeedback(pb.DeleteRunFeedbackRequest(thread_id="t1", run_id="r1"), metadata=ALICE)
    second = world.feedback.CreateFeedback(create_request(request_id), metadata=ALICE)
    assert second.feedback_id != first.feedback_id
    assert world.feedback.CreateFeedback(create_request(request_id), metadata=ALICE) == second


def test_erasing_a_user_forgets_their_request_ids(world):
    request_id = rid()
    first = world.feedback.CreateFeedback(create_request(request_id, comment="private"), metadata=ALICE)
    world.feedback.DeleteUserFeedback(pb.DeleteUserFeedbackRequest(user_id="alice"), metadata=as_service())
    # Nothing of the first call is kept: the retry runs again.
    second = world.feedback.CreateFeedback(create_request(request_id, comment="private"), metadata=ALICE)
    assert second.feedback_id != first.feedback_id


# --- concurrent duplicates ----------------------------------------------------------

DUPLICATES = 16


def at_once(calls: list[Callable[[], object]]) -> list[tuple[Code, object]]:
    """Runs the calls together (each on its own connection); their outcomes."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> tuple[Code, object]:
        start.wait(10)
        try:
            return Code.OK, call()
        except grpc.RpcError as error:
            return error.code(), error.details()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def duplicates(addresses: list[str], rounds: int = 5) -> None:
    """Rounds of DUPLICATES identical creates, then identical deletes, spread
    over the addresses: each round makes one row (then removes it), and every
    duplicate gets the same answer."""
    setup = Client(separate_channel(addresses[0]))
    register(setup, "t1", "", ["r1"])
    clients = [Client(separate_channel(addresses[i % len(addresses)])) for i in range(DUPLICATES)]
    try:
        for round_ in range(rounds):
            user = as_user(f"user{round_}")
            request = create_request(rid(), comment=f"round {round_}")
            created = at_once([partial(c.feedback.CreateFeedback, request, metadata=user) for c in clients])
            assert Counter(code for code, _ in created) == {Code.OK: DUPLICATES}, created
            responses = {response.SerializeToString(deterministic=True) for _, response in created}
            assert len(responses) == 1
            (feedback,) = [f for f in listed(setup) if f.user_id == f"user{round_}"]
            assert feedback == created[0][1]
            delete = pb.DeleteFeedbackRequest(
                thread_id="t1", run_id="r1", feedback_id=feedback.feedback_id, request_id=rid()
            )
            deleted = at_once([partial(c.feedback.DeleteFeedback, delete, metadata=user) for c in clients])
            assert Counter(code for code, _ in deleted) == {Code.OK: DUPLICATES}, deleted
            assert [f for f in listed(setup) if f.user_id == f"user{round_}"] == []
        kinds = Counter(c.kind for c in changes(setup))
        assert kinds == {pb.CHANGE_KIND_CREATED: rounds, pb.CHANGE_KIND_DELETED: rounds}
    finally:
        for client in (setup, *clients):
            client.channel.close()


def test_concurrent_duplicates_make_one_write_and_get_identical_answers(database_url, tmp_path):
    with running_server(server_settings(tmp_path, database_url=database_url)) as (server, _):
        duplicates([server.address])


def test_duplicates_across_two_server_processes_make_one_write(database_url, tmp_path):
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    services = [
        ServiceProcess(tmp_path / name, database_url=database_url, jwt_secret=JWT_SECRET)
        for name in ("a", "b")
    ]
    try:
        duplicates([service.address for service in services], rounds=4)
    finally:
        for service in services:
            assert service.terminate() == 0


def test_a_random_mix_of_retries_converges(world):
    """Creates and deletes, each sent one to three times in a row with its
    request id, as a flaky network would: the stored feedback is what one
    send of each would have made."""
    rng = random.Random(7)
    expected: dict[str, pb.Feedback] = {}
    for n in range(30):
        message = f"m{n % 6}"
        live = [f for f in expected.values() if f.message_id == message]
        if live:
            request = pb.DeleteFeedbackRequest(
                thread_id="t1", run_id="r1", feedback_id=live[0].feedback_id, request_id=rid()
            )
            for _ in range(rng.randint(1, 3)):
                assert world.feedback.DeleteFeedback(request, metadata=ALICE).success
            del expected[live[0].feedback_id]
        else:
            request = create_request(rid(), message_id=message, comment=f"n{n}")
            answers = {
                world.feedback.CreateFeedback(request, metadata=ALICE).feedback_id
                for _ in range(rng.randint(1, 3))
            }
            (feedback_id,) = answers
            expected[feedback_id] = next(f for f in listed(world) if f.feedback_id == feedback_id)
    assert {f.feedback_id: f for f in listed(world)} == expected

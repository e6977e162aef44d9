"""ThreadRegistry behaviour through a real channel, on every backend."""

import grpc

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import thread_registry_pb2 as registry_pb2
from tests.harness import as_service, as_user, bad_fields, register, rpc_error

SERVICE = as_service()


def register_thread(client, thread_id, owner=""):
    request = registry_pb2.RegisterThreadRequest(thread_id=thread_id, owner_user_id=owner)
    return client.registry.RegisterThread(request, metadata=SERVICE)


def register_run(client, thread_id, run_id):
    request = registry_pb2.RegisterRunRequest(thread_id=thread_id, run_id=run_id)
    return client.registry.RegisterRun(request, metadata=SERVICE)


def test_registering_a_thread_twice_is_idempotent(client):
    first = register_thread(client, "t1", "alice")
    again = register_thread(client, "t1", "alice")
    assert (again.thread_id, again.owner_user_id) == ("t1", "alice")
    assert again.created_at == first.created_at


def test_a_thread_never_changes_owner(client):
    register_thread(client, "t1", "alice")
    for owner in ("bob", ""):
        error = rpc_error(
            client.registry.RegisterThread,
            registry_pb2.RegisterThreadRequest(thread_id="t1", owner_user_id=owner),
            metadata=SERVICE,
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert register_thread(client, "t1", "alice").owner_user_id == "alice"


def test_registering_a_run_twice_is_idempotent(client):
    register_thread(client, "t1")
    first = register_run(client, "t1", "r1")
    again = register_run(client, "t1", "r1")
    assert (again.run_id, again.thread_id, again.created_at) == ("r1", "t1", first.created_at)


def test_a_run_never_moves_to_another_thread(client):
    register_thread(client, "t1")
    register_thread(client, "t2")
    register_run(client, "t1", "r1")
    error = rpc_error(
        client.registry.RegisterRun,
        registry_pb2.RegisterRunRequest(thread_id="t2", run_id="r1"),
        metadata=SERVICE,
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert register_run(client, "t1", "r1").thread_id == "t1"


def test_a_run_needs_a_registered_thread(client):
    error = rpc_error(
        client.registry.RegisterRun,
        registry_pb2.RegisterRunRequest(thread_id="nope", run_id="r1"),
        metadata=SERVICE,
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_registry_validates_ids(client):
    error = rpc_error(
        client.registry.RegisterThread,
        registry_pb2.RegisterThreadRequest(thread_id="", owner_user_id="has space"),
        metadata=SERVICE,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["thread_id", "owner_user_id"]


def test_deleting_a_thread_removes_its_runs_and_feedback(client):
    register(client, "t1", "", ["r1", "r2"])
    register(client, "t2", "", ["r3"])
    for user, run in (("alice", "r1"), ("bob", "r1"), ("alice", "r2")):
        client.feedback.CreateFeedback(
            pb.CreateFeedbackRequest(thread_id="t1", run_id=run, rating=1), metadata=as_user(user)
        )
    client.feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t2", run_id="r3", rating=1), metadata=as_user("alice")
    )
    deleted = client.registry.DeleteThread(registry_pb2.DeleteThreadRequest(thread_id="t1"), metadata=SERVICE)
    assert (deleted.deleted_runs, deleted.deleted_feedback) == (2, 3)
    listed = client.feedback.ListThreadFeedback(
        pb.ListThreadFeedbackRequest(thread_id="t1"), metadata=SERVICE
    )
    assert list(listed.feedback) == []
    error = rpc_error(
        client.registry.RegisterRun,
        registry_pb2.RegisterRunRequest(thread_id="t1", run_id="r1"),
        metadata=SERVICE,
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # The other thread is untouched, and the deleted run ids can be registered anew.
    stats = client.feedback.GetFeedbackStats(
        pb.GetFeedbackStatsRequest(thread_id="t2", run_id="r3"), metadata=SERVICE
    )
    assert stats.total == 1
    register(client, "t3", "", ["r1"])


def test_deleting_an_unknown_thread_is_not_found(client):
    error = rpc_error(
        client.registry.DeleteThread, registry_pb2.DeleteThreadRequest(thread_id="nope"), metadata=SERVICE
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND

"""BatchGetCallerFeedback: the caller's own feedback on a page of runs, what a
thread view needs to light the thumbs on each run. On every backend."""

import grpc
import pytest

from feedback.v1 import feedback_pb2 as pb
from feedback_service.domain import feedback_lists
from tests.harness import as_service, as_service_for, as_user, bad_fields, register, rpc_error

ALICE = as_user("alice")
BOB = as_user("bob")


def rate(client, user=ALICE, thread="t-alice", run="r1", rating=1, **fields):
    request = pb.UpsertFeedbackRequest(thread_id=thread, run_id=run, rating=rating, **fields)
    return client.feedback.UpsertFeedback(request, metadata=user)


def caller_feedback(client, run_ids, user=ALICE, thread="t-alice"):
    request = pb.BatchGetCallerFeedbackRequest(thread_id=thread, run_ids=run_ids)
    return list(client.feedback.BatchGetCallerFeedback(request, metadata=user).runs)


def test_one_entry_per_requested_run_in_order_with_repeats_and_unknown_runs(world):
    on_r2 = rate(world, run="r2", rating=-1, tags=["slow"])
    entries = caller_feedback(world, ["r2", "nope", "r1", "r2"])
    assert [entry.run_id for entry in entries] == ["r2", "nope", "r1", "r2"]
    assert entries[0].run_feedback == entries[3].run_feedback == on_r2
    for entry in entries[1:3]:
        assert not entry.HasField("run_feedback")
        assert list(entry.message_feedback) == []


def test_run_level_and_message_level_feedback_are_apart(world):
    second = rate(world, message_id="m-2", rating=-1)
    run_level = rate(world, rating=1, comment="good run")
    first = rate(world, message_id="m-1", rating=1)
    (entry,) = caller_feedback(world, ["r1"])
    assert entry.run_feedback == run_level
    assert list(entry.message_feedback) == [second, first]  # oldest first


def test_message_feedback_alone_leaves_the_run_feedback_unset(world):
    only = rate(world, run="r2", message_id="m-1")
    (entry,) = caller_feedback(world, ["r2"])
    assert not entry.HasField("run_feedback")
    assert list(entry.message_feedback) == [only]


def test_only_the_callers_own_feedback(world):
    mine = rate(world, thread="t-shared", run="rs", rating=-1)
    rate(world, user=BOB, thread="t-shared", run="rs", rating=1)
    rate(world, user=BOB, thread="t-shared", run="rs", message_id="m-1")
    (entry,) = caller_feedback(world, ["rs"], thread="t-shared")
    assert entry.run_feedback == mine
    assert list(entry.message_feedback) == []
    (bobs,) = caller_feedback(world, ["rs"], user=BOB, thread="t-shared")
    assert bobs.run_feedback.user_id == "bob"
    assert [f.message_id for f in bobs.message_feedback] == ["m-1"]


def test_a_service_acting_for_a_user_gets_that_users_feedback(world):
    mine = rate(world, run="r1")
    (entry,) = caller_feedback(world, ["r1"], user=as_service_for("alice"))
    assert entry.run_feedback == mine


def test_a_service_acting_as_itself_has_no_feedback_of_its_own(world):
    request = pb.BatchGetCallerFeedbackRequest(thread_id="t-alice", run_ids=["r1"])
    error = rpc_error(world.feedback.BatchGetCallerFeedback, request, metadata=as_service())
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_someone_elses_thread_is_not_found_and_an_unregistered_one_is_empty(world):
    request = pb.BatchGetCallerFeedbackRequest(thread_id="t-bob", run_ids=["rb"])
    error = rpc_error(world.feedback.BatchGetCallerFeedback, request, metadata=ALICE)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    (entry,) = caller_feedback(world, ["r-x"], thread="t-nobody")
    assert (entry.run_id, entry.HasField("run_feedback"), len(entry.message_feedback)) == ("r-x", False, 0)


def test_runs_of_another_thread_are_not_answered(world):
    rate(world, thread="t-shared", run="rs")
    (entry,) = caller_feedback(world, ["rs"])  # asked on t-alice
    assert not entry.HasField("run_feedback")


@pytest.mark.parametrize(("count", "bad"), [(0, "run_ids"), (101, "run_ids")])
def test_1_to_100_runs(world, count, bad):
    request = pb.BatchGetCallerFeedbackRequest(thread_id="t-alice", run_ids=[f"r{i}" for i in range(count)])
    error = rpc_error(world.feedback.BatchGetCallerFeedback, request, metadata=ALICE)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == [bad]
    assert len(caller_feedback(world, [f"r{i}" for i in range(100)])) == 100


def test_a_bad_run_id_is_named_by_index(world):
    request = pb.BatchGetCallerFeedbackRequest(thread_id="t-alice", run_ids=["r1", "r 2"])
    error = rpc_error(world.feedback.BatchGetCallerFeedback, request, metadata=ALICE)
    assert bad_fields(error) == ["run_ids[1]"]


def test_more_feedback_than_the_limit_is_failed_precondition(world, monkeypatch):
    monkeypatch.setattr(feedback_lists, "MAX_CALLER_FEEDBACK", 3)
    for i in range(3):
        rate(world, message_id=f"m-{i}")
    assert len(caller_feedback(world, ["r1"])[0].message_feedback) == 3
    rate(world, run="r2")
    request = pb.BatchGetCallerFeedbackRequest(thread_id="t-alice", run_ids=["r1", "r2"])
    error = rpc_error(world.feedback.BatchGetCallerFeedback, request, metadata=ALICE)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ask for fewer runs" in error.details()


def test_more_than_a_mebibyte_is_failed_precondition(world):
    register(world, "t-long", "alice", ["long"])
    for i in range(130):  # 130 comments of 4096 two-byte characters: over 1 MiB
        rate(world, thread="t-long", run="long", message_id=f"m-{i}", comment="é" * 4096)
    request = pb.BatchGetCallerFeedbackRequest(thread_id="t-long", run_ids=["long"])
    error = rpc_error(world.feedback.BatchGetCallerFeedback, request, metadata=ALICE)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

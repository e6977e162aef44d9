"""FeedbackService behaviour through a real channel, on every backend."""

import grpc
import pytest

from feedback.v1 import feedback_pb2 as pb
from tests.harness import as_service, as_service_for, as_user, bad_fields, register, rpc_error

ALICE = as_user("alice")
BOB = as_user("bob")


def create(client, user=ALICE, thread="t-alice", run="r1", rating=1, **fields):
    request = pb.CreateFeedbackRequest(thread_id=thread, run_id=run, rating=rating, **fields)
    return client.feedback.CreateFeedback(request, metadata=user)


def upsert(client, user=ALICE, thread="t-alice", run="r1", rating=1, **fields):
    request = pb.UpsertFeedbackRequest(thread_id=thread, run_id=run, rating=rating, **fields)
    return client.feedback.UpsertFeedback(request, metadata=user)


def list_run(client, user=ALICE, thread="t-alice", run="r1", **fields):
    request = pb.ListFeedbackRequest(thread_id=thread, run_id=run, **fields)
    return client.feedback.ListFeedback(request, metadata=user)


def stats(client, thread="t-alice", run="r1", user=ALICE):
    request = pb.GetFeedbackStatsRequest(thread_id=thread, run_id=run)
    return client.feedback.GetFeedbackStats(request, metadata=user)


# --- CreateFeedback --------------------------------------------------------------


def test_create_returns_the_stored_feedback(world):
    feedback = create(world, rating=-1, comment="wrong answer", message_id="m-7")
    assert feedback.feedback_id
    assert (feedback.thread_id, feedback.run_id, feedback.user_id) == ("t-alice", "r1", "alice")
    assert (feedback.rating, feedback.comment, feedback.message_id) == (-1, "wrong answer", "m-7")
    assert feedback.created_at.ToMicroseconds() > 0
    assert feedback.updated_at == feedback.created_at
    assert list(list_run(world).feedback) == [feedback]


def test_second_create_on_the_same_run_is_already_exists(world):
    first = create(world)
    error = rpc_error(
        world.feedback.CreateFeedback,
        pb.CreateFeedbackRequest(thread_id="t-alice", run_id="r1", rating=-1),
        metadata=ALICE,
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert list(list_run(world).feedback) == [first]


def test_message_level_feedback_is_separate_from_run_level(world):
    create(world)
    create(world, message_id="m-1")
    create(world, message_id="m-2")
    error = rpc_error(
        world.feedback.CreateFeedback,
        pb.CreateFeedbackRequest(thread_id="t-alice", run_id="r1", rating=1, message_id="m-1"),
        metadata=ALICE,
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert len(list_run(world).feedback) == 3


@pytest.mark.parametrize("rating", [0, 2, -2, 100, -(2**31)])
def test_rating_other_than_plus_or_minus_one_is_invalid(world, rating):
    error = rpc_error(
        world.feedback.CreateFeedback,
        pb.CreateFeedbackRequest(thread_id="t-alice", run_id="r1", rating=rating),
        metadata=ALICE,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["rating"]
    assert stats(world).total == 0


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"run_id": ""}, "run_id"),
        ({"run_id": "r 1"}, "run_id"),
        ({"run_id": "r" * 129}, "run_id"),
        ({"run_id": "ŕun"}, "run_id"),
        ({"message_id": "m/1"}, "message_id"),
        ({"comment": "x" * 4097}, "comment"),
        ({"comment": "nul\x00byte"}, "comment"),
    ],
)
def test_malformed_fields_are_invalid_and_name_the_field(world, fields, bad):
    request = pb.CreateFeedbackRequest(thread_id="t-alice", run_id="r1", rating=1)
    for name, value in fields.items():
        setattr(request, name, value)
    error = rpc_error(world.feedback.CreateFeedback, request, metadata=ALICE)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad in bad_fields(error)
    assert stats(world).total == 0


def test_limits_are_inclusive(world):
    feedback = create(world, run="r1", comment="é" * 4096, message_id="m" * 128)
    assert len(feedback.comment) == 4096
    assert list_run(world).feedback[0].comment == "é" * 4096


def test_unicode_comment_round_trips(world):
    comment = "très bien 👍 — 好"
    create(world, comment=comment)
    assert list_run(world).feedback[0].comment == comment


@pytest.mark.parametrize(("thread", "run"), [("t-alice", "nope"), ("t-alice", "rs"), ("t-shared", "r1")])
def test_run_missing_or_in_another_thread_is_not_found(world, thread, run):
    error = rpc_error(
        world.feedback.CreateFeedback,
        pb.CreateFeedbackRequest(thread_id=thread, run_id=run, rating=1),
        metadata=ALICE,
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = rpc_error(
        world.feedback.UpsertFeedback,
        pb.UpsertFeedbackRequest(thread_id=thread, run_id=run, rating=1),
        metadata=ALICE,
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


# --- UpsertFeedback --------------------------------------------------------------


def test_upsert_creates_then_updates_the_same_feedback(world):
    first = upsert(world, rating=1, comment="good")
    second = upsert(world, rating=-1, comment="on reflection, no")
    assert second.feedback_id == first.feedback_id
    assert second.created_at == first.created_at
    assert second.updated_at.ToMicroseconds() > first.updated_at.ToMicroseconds()
    assert (second.rating, second.comment) == (-1, "on reflection, no")
    assert [f.feedback_id for f in list_run(world).feedback] == [first.feedback_id]
    assert (stats(world).positive, stats(world).negative) == (0, 1)


def test_upsert_with_empty_comment_clears_it(world):
    upsert(world, comment="first thoughts")
    assert upsert(world).comment == ""


def test_upsert_updates_what_create_made(world):
    created = create(world)
    assert upsert(world, rating=-1).feedback_id == created.feedback_id


def test_upsert_keys_on_the_message(world):
    run_level = upsert(world)
    message_level = upsert(world, message_id="m-1")
    assert run_level.feedback_id != message_level.feedback_id
    assert upsert(world, message_id="m-1", rating=-1).feedback_id == message_level.feedback_id


def test_upsert_validates_like_create(world):
    error = rpc_error(
        world.feedback.UpsertFeedback,
        pb.UpsertFeedbackRequest(thread_id="t-alice", run_id="r1", rating=3, comment="\x00"),
        metadata=ALICE,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["rating", "comment"]


# --- ListFeedback ------------------------------------------------------------------


def test_users_list_only_their_own_feedback(world):
    mine = create(world, thread="t-shared", run="rs")
    create(world, user=BOB, thread="t-shared", run="rs")
    listed = list_run(world, thread="t-shared", run="rs").feedback
    assert [f.feedback_id for f in listed] == [mine.feedback_id]


def test_a_service_lists_everyones_feedback(world):
    ids = [create(world, user=as_user(u), thread="t-shared", run="rs").feedback_id for u in ("a", "b", "c")]
    listed = list_run(world, user=as_service(), thread="t-shared", run="rs").feedback
    assert [f.feedback_id for f in listed] == ids


def test_a_service_on_behalf_of_a_user_sees_what_that_user_sees(world):
    mine = create(world, user=as_service_for("carol"), thread="t-shared", run="rs")
    create(world, user=BOB, thread="t-shared", run="rs")
    assert mine.user_id == "carol"
    listed = list_run(world, user=as_service_for("carol"), thread="t-shared", run="rs").feedback
    assert [f.feedback_id for f in listed] == [mine.feedback_id]


def test_list_is_oldest_first_and_pages_across_inserts(world):
    users = [as_user(f"u{i}") for i in range(7)]
    ids = [create(world, user=u, thread="t-shared", run="rs").feedback_id for u in users[:5]]
    service = as_service()
    page1 = list_run(world, user=service, thread="t-shared", run="rs", page_size=2)
    assert [f.feedback_id for f in page1.feedback] == ids[:2]
    # Rows inserted while paging appear at the end, and nothing repeats or is skipped.
    ids += [create(world, user=u, thread="t-shared", run="rs").feedback_id for u in users[5:]]
    seen = [f.feedback_id for f in page1.feedback]
    token = page1.next_page_token
    while token:
        page = list_run(world, user=service, thread="t-shared", run="rs", page_size=2, page_token=token)
        seen += [f.feedback_id for f in page.feedback]
        token = page.next_page_token
    assert seen == ids


def test_default_page_size_is_100_and_maximum_1000(world):
    for i in range(101):
        create(world, message_id=f"m{i}")
    assert len(list_run(world).feedback) == 100
    assert len(list_run(world, page_size=5000).feedback) == 101
    last = list_run(world, page_size=101)
    assert len(last.feedback) == 101 and last.next_page_token == ""


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_token": "not-a-token"}, "page_token"),
        ({"page_token": "MTIzLmFiYw"}, "page_token"),
    ],
)
def test_bad_page_arguments_are_invalid(world, fields, bad):
    error = rpc_error(
        world.feedback.ListFeedback,
        pb.ListFeedbackRequest(thread_id="t-alice", run_id="r1", **fields),
        metadata=ALICE,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == [bad]


def test_a_page_token_only_continues_its_own_query(world):
    for i in range(3):
        create(world, message_id=f"m{i}")
    token = list_run(world, page_size=1).next_page_token
    assert token
    error = rpc_error(
        world.feedback.ListFeedback,
        pb.ListFeedbackRequest(thread_id="t-alice", run_id="r2", page_token=token),
        metadata=ALICE,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = rpc_error(
        world.feedback.ListFeedback,
        pb.ListFeedbackRequest(thread_id="t-alice", run_id="r1", page_token=token),
        metadata=as_service(),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list_run(world, page_token=token, page_size=1).feedback[0].message_id == "m1"


def test_listing_an_unknown_run_is_empty(world):
    assert list(list_run(world, run="never-registered").feedback) == []


# --- ListThreadFeedback ------------------------------------------------------------


def test_thread_listing_spans_runs_and_only_the_callers_feedback(world):
    register(world, "t-shared-2", "", ["s1", "s2"])
    a = create(world, thread="t-shared-2", run="s1")
    create(world, user=BOB, thread="t-shared-2", run="s1")
    b = create(world, thread="t-shared-2", run="s2", message_id="m")
    request = pb.ListThreadFeedbackRequest(thread_id="t-shared-2", page_size=1)
    page = world.feedback.ListThreadFeedback(request, metadata=ALICE)
    assert [f.feedback_id for f in page.feedback] == [a.feedback_id]
    request.page_token = page.next_page_token
    page = world.feedback.ListThreadFeedback(request, metadata=ALICE)
    assert [f.feedback_id for f in page.feedback] == [b.feedback_id]
    assert page.next_page_token == ""
    everyone = world.feedback.ListThreadFeedback(
        pb.ListThreadFeedbackRequest(thread_id="t-shared-2"), metadata=as_service()
    )
    assert len(everyone.feedback) == 3


# --- stats ------------------------------------------------------------------------


def test_stats_count_every_users_vote_and_leave_message_feedback_out(world):
    create(world, thread="t-shared", run="rs", rating=1)
    create(world, user=BOB, thread="t-shared", run="rs", rating=-1)
    create(world, user=as_user("carol"), thread="t-shared", run="rs", rating=1, message_id="m")
    result = stats(world, thread="t-shared", run="rs", user=BOB)
    assert (result.run_id, result.total, result.positive, result.negative) == ("rs", 2, 1, 1)
    assert list(result.messages) == []


def test_one_user_cannot_inflate_a_runs_stats_with_message_feedback(world):
    create(world, rating=-1)
    for i in range(5):
        create(world, rating=1, message_id=f"m{i}")
    result = stats(world)
    assert (result.total, result.positive, result.negative) == (1, 0, 1)


def test_include_messages_counts_each_message_apart_from_the_votes(world):
    create(world, thread="t-shared", run="rs", rating=1)
    create(world, thread="t-shared", run="rs", rating=-1, message_id="m-2")
    create(world, user=BOB, thread="t-shared", run="rs", rating=1, message_id="m-2")
    create(world, user=BOB, thread="t-shared", run="rs", rating=-1, message_id="m-1")
    request = pb.GetFeedbackStatsRequest(thread_id="t-shared", run_id="rs", include_messages=True)
    result = world.feedback.GetFeedbackStats(request, metadata=BOB)
    assert (result.total, result.positive, result.negative) == (1, 1, 0)
    assert [(m.message_id, m.total, m.positive, m.negative) for m in result.messages] == [
        ("m-1", 1, 0, 1),
        ("m-2", 2, 1, 1),
    ]
    request = pb.BatchGetFeedbackStatsRequest(
        thread_id="t-shared", run_ids=["rs", "r-none", "rs"], include_messages=True
    )
    batch = world.feedback.BatchGetFeedbackStats(request, metadata=BOB).stats
    assert [s.run_id for s in batch] == ["rs", "r-none", "rs"]
    assert batch[0] == batch[2] == result
    assert (batch[1].total, list(batch[1].messages)) == (0, [])


def test_stats_of_an_empty_or_unknown_run_are_zero(world):
    for run in ("r2", "unknown"):
        result = stats(world, run=run)
        assert (result.run_id, result.total, result.positive, result.negative) == (run, 0, 0, 0)


def test_batch_stats_answer_in_request_order(world):
    create(world, run="r1", rating=1)
    create(world, run="r2", rating=-1)
    create(world, run="r2", rating=-1, message_id="m")
    request = pb.BatchGetFeedbackStatsRequest(thread_id="t-alice", run_ids=["r2", "zz", "r1", "r2"])
    result = world.feedback.BatchGetFeedbackStats(request, metadata=ALICE).stats
    assert [(s.run_id, s.total, s.positive, s.negative) for s in result] == [
        ("r2", 1, 0, 1),
        ("zz", 0, 0, 0),
        ("r1", 1, 1, 0),
        ("r2", 1, 0, 1),
    ]
    assert all(not s.messages for s in result)


@pytest.mark.parametrize(("count", "bad"), [(0, "run_ids"), (101, "run_ids")])
def test_batch_stats_take_1_to_100_runs(world, count, bad):
    request = pb.BatchGetFeedbackStatsRequest(thread_id="t-alice", run_ids=[f"r{i}" for i in range(count)])
    error = rpc_error(world.feedback.BatchGetFeedbackStats, request, metadata=ALICE)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == [bad]
    request = pb.BatchGetFeedbackStatsRequest(thread_id="t-alice", run_ids=[f"r{i}" for i in range(100)])
    assert len(world.feedback.BatchGetFeedbackStats(request, metadata=ALICE).stats) == 100


def test_batch_stats_name_a_bad_run_id_by_index(world):
    request = pb.BatchGetFeedbackStatsRequest(thread_id="t-alice", run_ids=["r1", "bad id"])
    error = rpc_error(world.feedback.BatchGetFeedbackStats, request, metadata=ALICE)
    assert bad_fields(error) == ["run_ids[1]"]


# --- deletes ----------------------------------------------------------------------


def delete(client, feedback_id, user=ALICE, thread="t-alice", run="r1"):
    request = pb.DeleteFeedbackRequest(thread_id=thread, run_id=run, feedback_id=feedback_id)
    return client.feedback.DeleteFeedback(request, metadata=user)


def test_delete_removes_the_callers_feedback(world):
    feedback = create(world)
    assert delete(world, feedback.feedback_id).success is True
    assert stats(world).total == 0
    error = rpc_error(
        world.feedback.DeleteFeedback,
        pb.DeleteFeedbackRequest(thread_id="t-alice", run_id="r1", feedback_id=feedback.feedback_id),
        metadata=ALICE,
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_another_users_feedback_is_not_found(world):
    bobs = create(world, user=BOB, thread="t-shared", run="rs")
    error = rpc_error(
        world.feedback.DeleteFeedback,
        pb.DeleteFeedbackRequest(thread_id="t-shared", run_id="rs", feedback_id=bobs.feedback_id),
        metadata=ALICE,
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert stats(world, thread="t-shared", run="rs").total == 1


def test_delete_checks_the_feedback_is_on_that_thread_and_run(world):
    feedback = create(world, run="r1")
    error = rpc_error(
        world.feedback.DeleteFeedback,
        pb.DeleteFeedbackRequest(thread_id="t-alice", run_id="r2", feedback_id=feedback.feedback_id),
        metadata=ALICE,
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert stats(world).total == 1


def test_delete_run_feedback_removes_only_the_callers(world):
    create(world, thread="t-shared", run="rs")
    create(world, thread="t-shared", run="rs", message_id="m")
    create(world, user=BOB, thread="t-shared", run="rs")
    request = pb.DeleteRunFeedbackRequest(thread_id="t-shared", run_id="rs")
    assert world.feedback.DeleteRunFeedback(request, metadata=ALICE).success is True
    result = stats(world, thread="t-shared", run="rs")
    assert (result.total, result.positive) == (1, 1)
    error = rpc_error(world.feedback.DeleteRunFeedback, request, metadata=ALICE)
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_user_ids_are_case_sensitive(world):
    lower = create(world, user=as_user("alice"), thread="t-shared", run="rs")
    upper = create(world, user=as_user("ALICE"), thread="t-shared", run="rs")
    assert lower.feedback_id != upper.feedback_id
    listed = list_run(world, user=as_user("ALICE"), thread="t-shared", run="rs").feedback
    assert [f.feedback_id for f in listed] == [upper.feedback_id]

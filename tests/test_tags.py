"""Tags: the reasons a user gives with a rating, from a closed, configurable
vocabulary; stored with the feedback, replaced by upserts, counted over the
votes. On every backend."""

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import thread_registry_pb2 as registry_pb2
from feedback_service.config import Settings
from feedback_service.domain.validation import DEFAULT_TAGS
from tests.harness import (
    Client,
    as_service,
    as_service_for,
    as_user,
    bad_fields,
    inspect_database,
    register,
    rpc_error,
    running_server,
    server_settings,
)

ALICE = as_user("alice")
BOB = as_user("bob")


def create(client, user=ALICE, thread="t-alice", run="r1", rating=-1, **fields):
    request = pb.CreateFeedbackRequest(thread_id=thread, run_id=run, rating=rating, **fields)
    return client.feedback.CreateFeedback(request, metadata=user)


def upsert(client, user=ALICE, thread="t-alice", run="r1", rating=-1, **fields):
    request = pb.UpsertFeedbackRequest(thread_id=thread, run_id=run, rating=rating, **fields)
    return client.feedback.UpsertFeedback(request, metadata=user)


def listed(client, user=ALICE, thread="t-alice", run="r1", **fields):
    request = pb.ListFeedbackRequest(thread_id=thread, run_id=run, **fields)
    return list(client.feedback.ListFeedback(request, metadata=user).feedback)


def tag_counts(client, thread="t-alice", run="r1", user=ALICE) -> list[tuple[str, int]]:
    request = pb.GetFeedbackStatsRequest(thread_id=thread, run_id=run)
    return [(t.tag, t.count) for t in client.feedback.GetFeedbackStats(request, metadata=user).tags]


def stored_tag_rows(database_url: str) -> set[tuple[str, str]]:
    """(feedback_id, tag) of every row of feedback_tag, read straight from the database."""
    db = inspect_database(database_url)
    try:
        return set(
            db.execute_sql(
                "SELECT f.feedback_id, t.tag FROM feedback_tag t JOIN feedback f ON f.id = t.feedback_row_id"
            ).fetchall()
        )
    finally:
        db.close()


def test_the_default_vocabulary_is_the_original_routers():
    assert DEFAULT_TAGS == ("incorrect", "not_as_expected", "slow", "style_tone", "safety_legal", "other")
    assert Settings().tags == DEFAULT_TAGS == Settings.from_env({}).tags


def test_tags_are_stored_in_the_order_given_and_returned_by_every_read(world, database_url):
    created = create(world, tags=["slow", "incorrect"], comment="took ages and was wrong")
    assert list(created.tags) == ["slow", "incorrect"]
    assert listed(world) == [created]
    thread = world.feedback.ListThreadFeedback(
        pb.ListThreadFeedbackRequest(thread_id="t-alice"), metadata=ALICE
    )
    assert list(thread.feedback) == [created]
    assert stored_tag_rows(database_url) == {
        (created.feedback_id, "slow"),
        (created.feedback_id, "incorrect"),
    }


def test_feedback_without_tags_has_none(world, database_url):
    assert list(create(world).tags) == []
    assert list(listed(world)[0].tags) == []
    assert stored_tag_rows(database_url) == set()


def test_upsert_replaces_the_tags(world, database_url):
    first = upsert(world, tags=["incorrect", "not_as_expected"])
    second = upsert(world, tags=["other"])
    assert second.feedback_id == first.feedback_id
    assert list(second.tags) == ["other"]
    assert list(listed(world)[0].tags) == ["other"]
    assert tag_counts(world) == [("other", 1)]
    assert stored_tag_rows(database_url) == {(first.feedback_id, "other")}
    cleared = upsert(world, rating=1)
    assert list(cleared.tags) == []
    assert tag_counts(world) == []
    assert stored_tag_rows(database_url) == set()


def test_upsert_of_a_created_feedback_replaces_its_tags(world, database_url):
    created = create(world, tags=["slow"])
    assert list(upsert(world, tags=["slow", "style_tone"]).tags) == ["slow", "style_tone"]
    assert stored_tag_rows(database_url) == {
        (created.feedback_id, "slow"),
        (created.feedback_id, "style_tone"),
    }


@pytest.mark.parametrize("method", ["CreateFeedback", "UpsertFeedback"])
def test_an_unknown_tag_is_invalid_and_named(world, database_url, method):
    request_type = getattr(pb, f"{method}Request")
    request = request_type(thread_id="t-alice", run_id="r1", rating=-1, tags=["slow", "hallucinated"])
    error = rpc_error(getattr(world.feedback, method), request, metadata=ALICE)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["tags[1]"]
    assert "'hallucinated'" in error.details()
    assert listed(world) == []
    assert stored_tag_rows(database_url) == set()


def test_a_repeated_tag_is_invalid(world):
    request = pb.CreateFeedbackRequest(
        thread_id="t-alice", run_id="r1", rating=-1, tags=["slow", "other", "slow"]
    )
    error = rpc_error(world.feedback.CreateFeedback, request, metadata=ALICE)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["tags[2]"]
    assert listed(world) == []


def test_tags_match_exactly(world):
    for tag in ("Slow", "slow ", "", "slow,other"):
        request = pb.UpsertFeedbackRequest(thread_id="t-alice", run_id="r1", rating=1, tags=[tag])
        error = rpc_error(world.feedback.UpsertFeedback, request, metadata=ALICE)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, tag
        assert bad_fields(error) == ["tags[0]"]


def test_all_six_tags_fit(world):
    assert list(create(world, tags=list(DEFAULT_TAGS)).tags) == list(DEFAULT_TAGS)


def test_tag_counts_cover_the_votes_only_sorted_by_tag(world):
    create(world, thread="t-shared", run="rs", tags=["slow", "incorrect"])
    create(world, user=BOB, thread="t-shared", run="rs", rating=1, tags=["slow"])
    # Message-level feedback is not a vote: its tags are not counted.
    create(world, user=BOB, thread="t-shared", run="rs", message_id="m-1", tags=["other", "slow"])
    assert tag_counts(world, thread="t-shared", run="rs") == [("incorrect", 1), ("slow", 2)]
    request = pb.BatchGetFeedbackStatsRequest(thread_id="t-shared", run_ids=["rs", "r-none"])
    batch = world.feedback.BatchGetFeedbackStats(request, metadata=BOB).stats
    assert [[(t.tag, t.count) for t in s.tags] for s in batch] == [[("incorrect", 1), ("slow", 2)], []]


def test_deleting_feedback_deletes_its_tags(world, database_url):
    one = create(world, tags=["slow"])
    create(world, message_id="m-1", tags=["other"])
    create(world, run="r2", tags=["incorrect"])
    request = pb.DeleteFeedbackRequest(thread_id="t-alice", run_id="r1", feedback_id=one.feedback_id)
    world.feedback.DeleteFeedback(request, metadata=ALICE)
    assert {tag for _, tag in stored_tag_rows(database_url)} == {"other", "incorrect"}
    world.feedback.DeleteRunFeedback(
        pb.DeleteRunFeedbackRequest(thread_id="t-alice", run_id="r1"), metadata=ALICE
    )
    assert {tag for _, tag in stored_tag_rows(database_url)} == {"incorrect"}
    world.registry.DeleteThread(registry_pb2.DeleteThreadRequest(thread_id="t-alice"), metadata=as_service())
    assert stored_tag_rows(database_url) == set()


WRITERS = 4
WRITES_EACH = 15
TAG_SETS = [["incorrect"], ["slow", "style_tone"], [], ["other", "safety_legal", "not_as_expected"]]


def test_concurrent_upserts_leave_one_consistent_tag_set_and_readers_never_see_half(world, database_url):
    """Writers upsert one feedback with different tag sets while readers
    count and list it: every read sees exactly one writer's tag set, and the
    end state agrees everywhere."""
    written = [sorted(tags) for tags in TAG_SETS]
    upsert(world, tags=TAG_SETS[0])
    stop = threading.Event()
    problems: list[str] = []

    def write(index: int) -> None:
        for i in range(WRITES_EACH):
            tags = TAG_SETS[(index + i) % len(TAG_SETS)]
            upsert(world, user=as_service_for("alice"), rating=1 if i % 2 else -1, tags=tags)

    def read() -> None:
        while not stop.is_set():
            counts = tag_counts(world)
            if sorted(tag for tag, _ in counts) not in written or any(n != 1 for _, n in counts):
                problems.append(f"stats saw tags {counts}")
            rows = listed(world)
            if len(rows) != 1 or sorted(rows[0].tags) not in written:
                problems.append(f"list saw {[list(r.tags) for r in rows]}")

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(120)
    stop.set()
    for thread in readers:
        thread.join(30)
    assert problems == []
    (final,) = listed(world)
    assert sorted(final.tags) in written
    assert sorted(tag for tag, _ in tag_counts(world)) == sorted(final.tags)
    assert stored_tag_rows(database_url) == {(final.feedback_id, tag) for tag in final.tags}


# --- a configured vocabulary --------------------------------------------------------

TEAM_TAGS = ("wrong_tool", "too_long", "a", "b", "c", "d", "e", "f")


@pytest.fixture
def team_client(database_url: str, tmp_path: Path) -> Iterator[Client]:
    """A server whose FEEDBACK_TAGS is TEAM_TAGS, once per backend."""
    settings = server_settings(tmp_path, database_url=database_url, tags=TEAM_TAGS)
    with running_server(settings) as (_, client):
        register(client, "t-alice", "alice", ["r1"])
        yield client


def test_the_vocabulary_is_the_configured_one(team_client):
    assert list(create(team_client, tags=["wrong_tool"]).tags) == ["wrong_tool"]
    request = pb.UpsertFeedbackRequest(thread_id="t-alice", run_id="r1", rating=1, tags=["slow"])
    error = rpc_error(team_client.feedback.UpsertFeedback, request, metadata=ALICE)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "known tags: wrong_tool, too_long" in error.details()


def test_at_most_six_tags(team_client):
    request = pb.CreateFeedbackRequest(thread_id="t-alice", run_id="r1", rating=1, tags=list(TEAM_TAGS[:7]))
    error = rpc_error(team_client.feedback.CreateFeedback, request, metadata=ALICE)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["tags"]
    assert len(create(team_client, tags=list(TEAM_TAGS[:6])).tags) == 6


@pytest.mark.parametrize(
    ("spec", "tags"),
    [("slow,other", ("slow", "other")), (" a , b_2 ,", ("a", "b_2")), ("x" * 32, ("x" * 32,))],
)
def test_feedback_tags_setting(spec, tags):
    assert Settings.from_env({"FEEDBACK_TAGS": spec}).tags == tags


@pytest.mark.parametrize("spec", ["Slow", "a,a", "x" * 33, "has space", "dash-ed", ",", "é"])
def test_a_bad_feedback_tags_setting_is_refused(spec):
    with pytest.raises(ValueError, match="FEEDBACK_TAGS"):
        Settings.from_env({"FEEDBACK_TAGS": spec})

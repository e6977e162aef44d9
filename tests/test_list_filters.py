"""Filters on ListFeedback and ListThreadFeedback, and page tokens bound to
them. On every backend."""

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from feedback.v1 import feedback_pb2 as pb
from tests.harness import as_service, as_service_for, as_user, bad_fields, register

ALICE = as_user("alice")
BOB = as_user("bob")
SERVICE = as_service()


def rate(client, user=ALICE, thread="t-shared", run="rs", rating=1, **fields):
    request = pb.CreateFeedbackRequest(thread_id=thread, run_id=run, rating=rating, **fields)
    return client.feedback.CreateFeedback(request, metadata=user)


def list_run(client, user=SERVICE, thread="t-shared", run="rs", **fields):
    request = pb.ListFeedbackRequest(thread_id=thread, run_id=run, **fields)
    return client.feedback.ListFeedback(request, metadata=user)


def list_thread(client, user=SERVICE, thread="t-shared", **fields):
    request = pb.ListThreadFeedbackRequest(thread_id=thread, **fields)
    return client.feedback.ListThreadFeedback(request, metadata=user)


LISTS = {"ListFeedback": list_run, "ListThreadFeedback": list_thread}


def failure(call, *args, **fields) -> grpc.RpcError:
    """The error a call fails with (the test fails if it succeeds)."""
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, **fields)
    return raised.value


def ids(response) -> list[str]:
    return [f.feedback_id for f in response.feedback]


def every_page(call, **fields) -> list[str]:
    """The ids on every page, one feedback per page."""
    seen, token = [], ""
    while True:
        page = call(page_size=1, page_token=token, **fields)
        seen += ids(page)
        token = page.next_page_token
        if not token:
            return seen


@pytest.fixture
def rated(world):
    """On the shared thread's runs rs and rs2: alice's, bob's and carol's
    votes and message feedback, with comments and tags."""
    register(world, "t-shared", "", ["rs", "rs2"])  # a second run on the same thread
    made = {
        "alice": rate(world, rating=-1, comment="wrong", tags=["incorrect", "slow"]),
        "alice-m1": rate(world, rating=1, message_id="m-1"),
        "bob": rate(world, user=BOB, rating=1, tags=["slow"]),
        "bob-m1": rate(world, user=BOB, rating=-1, message_id="m-1", comment="this one", tags=["incorrect"]),
        "carol-rs2": rate(world, user=as_user("carol"), run="rs2", rating=-1, tags=["incorrect"]),
        "alice-rs2": rate(world, run="rs2", rating=-1, comment="again", tags=["other"]),
    }
    return world, {name: f.feedback_id for name, f in made.items()}


@pytest.mark.parametrize("name", LISTS)
def test_rating_filter(rated, name):
    client, made = rated
    call = LISTS[name]
    negative = ids(call(client, rating=-1))
    positive = ids(call(client, rating=1))
    everything = ids(call(client))
    assert set(negative) | set(positive) == set(everything)
    assert not set(negative) & set(positive)
    assert made["alice"] in negative and made["bob"] in positive and made["bob-m1"] in negative
    assert ids(call(client, rating=0)) == everything


@pytest.mark.parametrize("name", LISTS)
def test_has_comment_filter_tells_unset_from_false(rated, name):
    client, made = rated
    call = LISTS[name]
    with_comment = ids(call(client, has_comment=True))
    without = ids(call(client, has_comment=False))
    everything = ids(call(client))
    assert made["alice"] in with_comment and made["bob-m1"] in with_comment
    assert made["bob"] in without and made["alice-m1"] in without
    assert sorted(with_comment + without) == sorted(everything)
    assert all(f.comment for f in call(client, has_comment=True).feedback)
    assert not any(f.comment for f in call(client, has_comment=False).feedback)


def test_tag_filter_on_a_run(rated):
    client, made = rated
    assert ids(list_run(client, tag="incorrect")) == [made["alice"], made["bob-m1"]]
    assert ids(list_run(client, tag="slow")) == [made["alice"], made["bob"]]
    assert ids(list_run(client, tag="other")) == []
    assert ids(list_run(client, user=ALICE, tag="slow")) == [made["alice"]]


def test_tag_filter_on_a_thread(rated):
    client, made = rated
    # A service, every user: read through feedback_tag's index.
    assert ids(list_thread(client, tag="incorrect")) == [made["alice"], made["bob-m1"], made["carol-rs2"]]
    assert every_page(lambda **f: list_thread(client, **f), tag="incorrect") == [
        made["alice"],
        made["bob-m1"],
        made["carol-rs2"],
    ]
    # A user: their own.
    assert ids(list_thread(client, user=ALICE, tag="incorrect")) == [made["alice"]]
    assert ids(list_thread(client, user=BOB, tag="incorrect")) == [made["bob-m1"]]


def test_filters_combine(rated):
    client, made = rated
    assert ids(list_thread(client, rating=-1, tag="incorrect", has_comment=False)) == [made["carol-rs2"]]
    assert ids(list_thread(client, rating=-1, has_comment=True, user_id="alice")) == [
        made["alice"],
        made["alice-rs2"],
    ]
    assert ids(list_run(client, rating=-1, tag="incorrect", has_comment=True, user_id="bob")) == [
        made["bob-m1"]
    ]
    assert ids(list_thread(client, rating=1, tag="incorrect")) == []
    assert every_page(lambda **f: list_thread(client, **f), rating=-1, has_comment=True) == [
        made["alice"],
        made["bob-m1"],
        made["alice-rs2"],
    ]


def test_a_tag_filter_sees_an_upserts_new_tags(rated):
    client, made = rated
    request = pb.UpsertFeedbackRequest(thread_id="t-shared", run_id="rs", rating=-1, tags=["other"])
    client.feedback.UpsertFeedback(request, metadata=BOB)
    assert ids(list_thread(client, tag="slow")) == [made["alice"]]
    assert ids(list_thread(client, tag="other")) == [made["bob"], made["alice-rs2"]]


def at(micros: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


@pytest.mark.parametrize("name", LISTS)
def test_created_range_is_half_open(world, name):
    call = LISTS[name]
    made = [rate(world, user=as_user(f"u{i}")) for i in range(3)]
    first, second, third = (f.created_at.ToMicroseconds() for f in made)
    assert first < second < third
    all_ids = [f.feedback_id for f in made]
    assert ids(call(world, created_after=at(second))) == all_ids[1:]
    assert ids(call(world, created_before=at(third))) == all_ids[:2]
    assert ids(call(world, created_after=at(second), created_before=at(third))) == [all_ids[1]]
    assert ids(call(world, created_after=at(third + 1))) == []
    # A bound in nanoseconds keeps its meaning: one nanosecond after a feedback excludes it.
    after = at(second)
    after.nanos += 1
    assert ids(call(world, created_after=after)) == all_ids[2:]


@pytest.mark.parametrize("name", LISTS)
def test_user_id_filter_is_for_services_acting_as_themselves(rated, name):
    client, made = rated
    call = LISTS[name]
    bobs = ids(call(client, user_id="bob"))
    assert bobs and made["bob"] in bobs and made["alice"] not in bobs
    assert bobs == ids(call(client, user=BOB))
    for caller in (ALICE, as_service_for("alice")):
        error = failure(call, client, user=caller, user_id="bob")
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    # Naming themselves changes nothing.
    assert ids(call(client, user=ALICE, user_id="alice")) == ids(call(client, user=ALICE))


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"rating": 2}, ["rating"]),
        ({"rating": -2}, ["rating"]),
        ({"tag": "nope"}, ["tag"]),
        ({"tag": "Slow"}, ["tag"]),
        ({"user_id": "b o b"}, ["user_id"]),
        ({"created_after": Timestamp(seconds=5, nanos=-1)}, ["created_after"]),
        ({"created_before": Timestamp(seconds=253_402_300_800)}, ["created_before"]),
        ({"created_after": at(2_000_000), "created_before": at(2_000_000)}, ["created_before"]),
        ({"created_after": at(3_000_000), "created_before": at(2_000_000)}, ["created_before"]),
        ({"rating": 3, "tag": "x", "page_size": -1}, ["page_size", "rating", "tag"]),
    ],
)
@pytest.mark.parametrize("name", LISTS)
def test_bad_filters_are_invalid_and_named(world, name, fields, bad):
    error = failure(LISTS[name], world, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(bad_fields(error)) == bad


OTHER_FILTERS = [
    {},
    {"rating": 1},
    {"rating": -1, "has_comment": False},
    {"rating": -1, "has_comment": True, "tag": "slow"},
    {"rating": -1, "created_after": at(1)},
    {"rating": -1, "created_before": at(2**50)},
    {"rating": -1, "user_id": "alice"},
]


@pytest.mark.parametrize("name", LISTS)
def test_page_tokens_are_bound_to_the_filter(rated, name):
    client, _ = rated
    call = LISTS[name]
    chosen = {"rating": -1}
    first = call(client, page_size=1, **chosen)
    assert first.next_page_token
    assert call(client, page_size=1, page_token=first.next_page_token, **chosen).feedback
    for other in OTHER_FILTERS:
        error = failure(call, client, page_token=first.next_page_token, **other)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, other
        assert bad_fields(error) == ["page_token"]
    unfiltered = call(client, page_size=1).next_page_token
    error = failure(call, client, page_token=unfiltered, **chosen)
    assert bad_fields(error) == ["page_token"]


def test_a_service_filtering_on_a_user_and_that_user_do_not_share_tokens(rated):
    client, _ = rated
    token = list_thread(client, page_size=1, user_id="alice").next_page_token
    assert token
    error = failure(list_thread, client, user=ALICE, page_token=token)
    assert bad_fields(error) == ["page_token"]

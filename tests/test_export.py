"""ExportFeedback through a real channel, on every backend: every feedback the
filters keep, oldest first, with its run's labels, page by page; a page token
resumes with no gap and no repeat."""

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import thread_registry_pb2 as registry_pb2
from feedback_service.domain.feedback_lists import EXPORT_PAGE_SIZE
from tests.harness import (
    as_service,
    as_service_for,
    as_user,
    bad_fields,
    register,
    running_server,
    separate_channel,
    server_settings,
    wait_until,
)
from tests.test_changes import following

SERVICE = as_service()
LABELS = {"r1": {"release": "1", "model": "a"}, "r2": {"release": "2", "model": "a"}, "r3": {}}
USERS = [f"u{i}" for i in range(EXPORT_PAGE_SIZE // 2 + 3)]


@pytest.fixture
def rated(client):
    """Two releases' runs and an unlabelled one, rated by many users; enough
    feedback for several pages."""
    client.registry.RegisterThread(registry_pb2.RegisterThreadRequest(thread_id="t1"), metadata=SERVICE)
    for run, labels in LABELS.items():
        request = registry_pb2.RegisterRunRequest(thread_id="t1", run_id=run, labels=labels)
        client.registry.RegisterRun(request, metadata=SERVICE)
    for index, user in enumerate(USERS):
        for run in LABELS:
            rating = 1 if (index + len(run)) % 3 else -1
            request = pb.CreateFeedbackRequest(
                thread_id="t1",
                run_id=run,
                rating=rating,
                comment="why" if index % 4 == 0 else "",
                tags=["slow"] if index % 5 == 0 else [],
            )
            client.feedback.CreateFeedback(request, metadata=as_service_for(user))
    return client


def export(client, **fields) -> list[pb.ExportFeedbackResponse]:
    return list(client.feedback.ExportFeedback(pb.ExportFeedbackRequest(**fields), metadata=SERVICE))


def every_feedback(client) -> list[pb.Feedback]:
    feedback, token = [], ""
    while True:
        page = client.feedback.ListThreadFeedback(
            pb.ListThreadFeedbackRequest(thread_id="t1", page_size=1000, page_token=token), metadata=SERVICE
        )
        feedback += page.feedback
        token = page.next_page_token
        if not token:
            return feedback


def test_the_export_holds_every_feedback_oldest_first_with_its_runs_labels(rated):
    pages = export(rated)
    assert len(pages) > 1 and all(len(page.feedback) <= EXPORT_PAGE_SIZE for page in pages)
    exported = [item for page in pages for item in page.feedback]
    assert [item.feedback for item in exported] == every_feedback(rated)
    for item in exported:
        assert dict(item.run_labels) == LABELS[item.feedback.run_id]


def test_filters_keep_what_they_say(rated):
    everything = [item.feedback for page in export(rated) for item in page.feedback]
    release_1 = [
        item.feedback for page in export(rated, run_labels={"release": "1"}) for item in page.feedback
    ]
    assert release_1 == [f for f in everything if f.run_id == "r1"]
    model_a = [item.feedback for page in export(rated, run_labels={"model": "a"}) for item in page.feedback]
    assert model_a == [f for f in everything if f.run_id in ("r1", "r2")]
    down = [item.feedback for page in export(rated, rating=-1, tag="slow") for item in page.feedback]
    assert down == [f for f in everything if f.rating == -1 and "slow" in f.tags]
    commented = [item.feedback for page in export(rated, has_comment=True) for item in page.feedback]
    assert commented == [f for f in everything if f.comment]
    assert export(rated, thread_id="t-other") == []
    assert export(rated, created_before=Timestamp(seconds=86_400)) == []
    assert export(rated, run_labels={"release": "3"}) == []


def test_a_page_token_resumes_with_no_gap_and_no_repeat(rated):
    pages = export(rated, run_labels={"model": "a"})
    everything = [item for page in pages for item in page.feedback]
    for cut, page in enumerate(pages):
        rest = export(rated, run_labels={"model": "a"}, page_token=page.page_token)
        sent = [item for earlier in pages[: cut + 1] for item in earlier.feedback]
        assert sent + [item for later in rest for item in later.feedback] == everything


def test_a_page_token_is_bound_to_its_filters(rated):
    token = export(rated, run_labels={"model": "a"})[0].page_token
    with pytest.raises(grpc.RpcError) as refused:
        export(rated, run_labels={"model": "b"}, page_token=token)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(refused.value) == ["page_token"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"run_labels": {"Bad": "x"}}, ["run_labels[Bad]"]),
        ({"rating": 2}, ["rating"]),
        ({"tag": "nope"}, ["tag"]),
        ({"thread_id": "a b"}, ["thread_id"]),
        ({"page_token": "garbage"}, ["page_token"]),
    ],
)
def test_a_bad_request_is_invalid_argument_naming_the_field(rated, fields, named):
    with pytest.raises(grpc.RpcError) as refused:
        export(rated, **fields)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(refused.value) == named


def test_only_a_service_acting_as_itself_may_export(rated):
    for metadata in (as_user("u1"), as_service_for("u1")):
        with pytest.raises(grpc.RpcError) as refused:
            list(rated.feedback.ExportFeedback(pb.ExportFeedbackRequest(), metadata=metadata))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_exports_count_against_the_change_stream_limit(tmp_path):
    settings = server_settings(tmp_path, max_change_streams=1)
    with running_server(settings) as (server, client):
        register(client, "t1", "", ["r1"])
        with following(separate_channel(server.address)) as change_stream:
            client.feedback.CreateFeedback(
                pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1), metadata=as_user("a")
            )
            change_stream.wait_for(1)  # the one place is taken
            with pytest.raises(grpc.RpcError) as refused:
                export(client)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "1 change streams (StreamFeedbackChanges and ExportFeedback)" in refused.value.details()
        # The closed stream gives its place back.
        wait_until(lambda: _exports(client))


def _exports(client) -> bool:
    try:
        export(client)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return False
    return True

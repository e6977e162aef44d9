"""Run labels through a real channel, on every backend: registered with the
run, returned with it, never changed, validated field by field."""

import grpc
import pytest

from feedback.v1 import thread_registry_pb2 as registry_pb2
from tests.harness import as_service, bad_fields, rpc_error

SERVICE = as_service()
RELEASE = {"agent": "researcher", "model": "gpt-5.1", "prompt": "v42", "release": "2026.12.1"}


def register_run(client, run_id: str, labels: dict[str, str] | None = None, thread_id: str = "t1"):
    request = registry_pb2.RegisterRunRequest(thread_id=thread_id, run_id=run_id, labels=labels or {})
    return client.registry.RegisterRun(request, metadata=SERVICE)


@pytest.fixture
def thread(client):
    client.registry.RegisterThread(registry_pb2.RegisterThreadRequest(thread_id="t1"), metadata=SERVICE)
    return client


def test_a_run_is_returned_with_its_labels(thread):
    run = register_run(thread, "r1", RELEASE)
    assert dict(run.labels) == RELEASE


def test_registering_again_with_the_same_labels_returns_the_run_unchanged(thread):
    first = register_run(thread, "r1", RELEASE)
    again = register_run(thread, "r1", dict(reversed(RELEASE.items())))
    assert again == first


@pytest.mark.parametrize(
    "other",
    [
        {**RELEASE, "release": "2026.12.2"},
        {key: value for key, value in RELEASE.items() if key != "prompt"},
        {**RELEASE, "extra": "x"},
        {},
    ],
)
def test_a_run_never_changes_its_labels(thread, other):
    register_run(thread, "r1", RELEASE)
    error = rpc_error(
        thread.registry.RegisterRun,
        registry_pb2.RegisterRunRequest(thread_id="t1", run_id="r1", labels=other),
        metadata=SERVICE,
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "other labels" in error.details()
    assert dict(register_run(thread, "r1", RELEASE).labels) == RELEASE


def test_a_run_registered_without_labels_keeps_none(thread):
    assert dict(register_run(thread, "r1").labels) == {}
    error = rpc_error(
        thread.registry.RegisterRun,
        registry_pb2.RegisterRunRequest(thread_id="t1", run_id="r1", labels={"release": "1"}),
        metadata=SERVICE,
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert dict(register_run(thread, "r1").labels) == {}


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({"Release": "1"}, "labels[Release]"),
        ({"1release": "1"}, "labels[1release]"),
        ({"": "1"}, "labels[]"),
        ({"a" * 33: "1"}, f"labels[{'a' * 33}]"),
        ({"re-lease": "1"}, "labels[re-lease]"),
        ({"release": ""}, "labels[release]"),
        ({"release": "x" * 129}, "labels[release]"),
        ({"release": "2026\n12"}, "labels[release]"),
        ({"release": "tab\there"}, "labels[release]"),
        ({"release": "del\x7f"}, "labels[release]"),
        ({"release": "c1\x85"}, "labels[release]"),
        ({f"k{i}": "v" for i in range(9)}, "labels"),
    ],
)
def test_a_bad_label_is_invalid_argument_naming_it_and_registers_nothing(thread, labels, field):
    error = rpc_error(
        thread.registry.RegisterRun,
        registry_pb2.RegisterRunRequest(thread_id="t1", run_id="r1", labels=labels),
        metadata=SERVICE,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == [field]
    # Nothing was registered: the run can still be registered with good labels.
    assert dict(register_run(thread, "r1", RELEASE).labels) == RELEASE


def test_the_limits_are_inclusive(thread):
    labels = {f"k{i}": "v" * 128 for i in range(7)} | {"a" * 32: "é"}
    assert dict(register_run(thread, "r1", labels).labels) == labels


def test_deleting_a_thread_deletes_its_runs_labels(thread):
    register_run(thread, "r1", RELEASE)
    thread.registry.DeleteThread(registry_pb2.DeleteThreadRequest(thread_id="t1"), metadata=SERVICE)
    thread.registry.RegisterThread(registry_pb2.RegisterThreadRequest(thread_id="t1"), metadata=SERVICE)
    assert dict(register_run(thread, "r1", {"release": "new"}).labels) == {"release": "new"}

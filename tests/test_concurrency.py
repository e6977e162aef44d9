"""Concurrent callers on the same key: one row, never a duplicate or INTERNAL."""

from concurrent.futures import ThreadPoolExecutor

import grpc

from feedback.v1 import feedback_pb2 as pb
from tests.harness import as_service, as_user, register

CALLERS = 24


def attempt(call, request, metadata) -> tuple[grpc.StatusCode, object]:
    try:
        return grpc.StatusCode.OK, call(request, metadata=metadata)
    except grpc.RpcError as error:
        return error.code(), None


def run_together(call, requests, metadata):
    with ThreadPoolExecutor(CALLERS) as pool:
        return list(pool.map(lambda r: attempt(call, r, metadata), requests))


def all_feedback(client):
    request = pb.ListThreadFeedbackRequest(thread_id="t1", page_size=1000)
    return list(client.feedback.ListThreadFeedback(request, metadata=as_service()).feedback)


def test_concurrent_upserts_leave_exactly_one_row(client):
    register(client, "t1", "alice", ["r1"])
    requests = [
        pb.UpsertFeedbackRequest(thread_id="t1", run_id="r1", rating=1 if i % 2 else -1, comment=f"c{i}")
        for i in range(CALLERS * 2)
    ]
    results = run_together(client.feedback.UpsertFeedback, requests, as_user("alice"))
    assert {code for code, _ in results} == {grpc.StatusCode.OK}
    assert len({response.feedback_id for _, response in results}) == 1
    rows = all_feedback(client)
    assert len(rows) == 1
    assert rows[0].comment in {r.comment for r in requests}


def test_concurrent_creates_make_one_row_and_already_exists_for_the_rest(client):
    register(client, "t1", "alice", ["r1"])
    requests = [pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1) for _ in range(CALLERS)]
    results = run_together(client.feedback.CreateFeedback, requests, as_user("alice"))
    codes = [code for code, _ in results]
    assert codes.count(grpc.StatusCode.OK) == 1
    assert codes.count(grpc.StatusCode.ALREADY_EXISTS) == CALLERS - 1
    assert len(all_feedback(client)) == 1

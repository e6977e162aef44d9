"""Every RPC of every service declares an access rule, and the server enforces
exactly that rule. The walk is driven by the service descriptors, so a new RPC
without a rule or without a case here fails."""

import asyncio
import threading

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.timestamp_pb2 import Timestamp

from feedback.v1 import access_pb2, feedback_pb2_grpc
from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import thread_registry_pb2 as registry_pb2
from feedback_service.auth.access import AccessRule, declared_rules
from feedback_service.auth.credentials import Authenticator, JwtVerifier, ServiceTokens
from feedback_service.auth.keys import KeySet
from feedback_service.config import sqlite_url
from feedback_service.domain.changes import ChangeFeed
from feedback_service.domain.feedback import FeedbackRules
from feedback_service.interceptors.authentication import AuthenticationInterceptor
from feedback_service.interceptors.authorization import AuthorizationInterceptor
from feedback_service.interceptors.errors import ErrorStatusInterceptor
from feedback_service.server import SERVICES
from feedback_service.servicers.feedback import FeedbackServicer
from feedback_service.store.database import Store, open_database
from feedback_service.store.migrations import migrate
from tests.harness import (
    JWT_SECRET,
    SERVICE_NAME,
    SERVICE_TOKEN,
    as_service,
    as_service_for,
    as_user,
    bearer,
    register,
)

READ, WRITE, DELETE = (
    access_pb2.PERMISSION_THREADS_READ,
    access_pb2.PERMISSION_THREADS_WRITE,
    access_pb2.PERMISSION_THREADS_DELETE,
)
NONE, READS, WRITES = (
    access_pb2.THREAD_ACCESS_NONE,
    access_pb2.THREAD_ACCESS_READ,
    access_pb2.THREAD_ACCESS_WRITE,
)
ANY, USER, SERVICE = access_pb2.CALLER_ANY, access_pb2.CALLER_USER, access_pb2.CALLER_SERVICE
SCOPES = {READ: "threads:read", WRITE: "threads:write", DELETE: "threads:delete"}
DAY_S = 86_400

# The rules of the original REST routes, and of the RPCs added since; the proto
# must declare exactly these.
EXPECTED_RULES = {
    "/feedback.v1.FeedbackService/CreateFeedback": AccessRule(WRITE, WRITES, USER),
    "/feedback.v1.FeedbackService/UpsertFeedback": AccessRule(WRITE, WRITES, USER),
    "/feedback.v1.FeedbackService/ListFeedback": AccessRule(READ, READS, ANY),
    "/feedback.v1.FeedbackService/GetFeedbackStats": AccessRule(READ, READS, ANY),
    "/feedback.v1.FeedbackService/DeleteFeedback": AccessRule(DELETE, WRITES, USER),
    "/feedback.v1.FeedbackService/DeleteRunFeedback": AccessRule(DELETE, WRITES, USER),
    "/feedback.v1.FeedbackService/ListThreadFeedback": AccessRule(READ, READS, ANY),
    "/feedback.v1.FeedbackService/BatchGetFeedbackStats": AccessRule(READ, READS, ANY),
    "/feedback.v1.FeedbackService/BatchGetCallerFeedback": AccessRule(READ, READS, USER),
    "/feedback.v1.FeedbackService/GetThreadFeedbackStats": AccessRule(READ, READS, ANY),
    "/feedback.v1.FeedbackService/GetFeedbackTimeSeries": AccessRule(READ, READS, ANY),
    "/feedback.v1.FeedbackService/StreamFeedbackChanges": AccessRule(READ, NONE, SERVICE),
    "/feedback.v1.FeedbackService/DeleteUserFeedback": AccessRule(DELETE, NONE, SERVICE),
    "/feedback.v1.FeedbackService/GetFeedbackBreakdown": AccessRule(READ, READS, ANY),
    "/feedback.v1.FeedbackService/CompareFeedback": AccessRule(READ, READS, ANY),
    "/feedback.v1.FeedbackService/ExportFeedback": AccessRule(READ, NONE, SERVICE),
    "/feedback.v1.ThreadRegistry/RegisterThread": AccessRule(WRITE, NONE, SERVICE),
    "/feedback.v1.ThreadRegistry/RegisterRun": AccessRule(WRITE, NONE, SERVICE),
    "/feedback.v1.ThreadRegistry/DeleteThread": AccessRule(DELETE, NONE, SERVICE),
}


def request_for(method: str, thread_id: str, run_id: str):
    """A well-formed request of each RPC aimed at the given thread and run."""
    name = method.rsplit("/", 1)[1]
    return {
        "CreateFeedback": lambda: pb.CreateFeedbackRequest(thread_id=thread_id, run_id=run_id, rating=1),
        "UpsertFeedback": lambda: pb.UpsertFeedbackRequest(thread_id=thread_id, run_id=run_id, rating=1),
        "ListFeedback": lambda: pb.ListFeedbackRequest(thread_id=thread_id, run_id=run_id),
        "GetFeedbackStats": lambda: pb.GetFeedbackStatsRequest(thread_id=thread_id, run_id=run_id),
        "DeleteFeedback": lambda: pb.DeleteFeedbackRequest(
            thread_id=thread_id, run_id=run_id, feedback_id="f1"
        ),
        "DeleteRunFeedback": lambda: pb.DeleteRunFeedbackRequest(thread_id=thread_id, run_id=run_id),
        "ListThreadFeedback": lambda: pb.ListThreadFeedbackRequest(thread_id=thread_id),
        "BatchGetFeedbackStats": lambda: pb.BatchGetFeedbackStatsRequest(
            thread_id=thread_id, run_ids=[run_id]
        ),
        "BatchGetCallerFeedback": lambda: pb.BatchGetCallerFeedbackRequest(
            thread_id=thread_id, run_ids=[run_id]
        ),
        "GetThreadFeedbackStats": lambda: pb.GetThreadFeedbackStatsRequest(thread_id=thread_id),
        "GetFeedbackTimeSeries": lambda: pb.GetFeedbackTimeSeriesRequest(
            thread_id=thread_id,
            bucket=pb.TIME_BUCKET_DAY,
            start_time=Timestamp(seconds=DAY_S * 20_000),
            end_time=Timestamp(seconds=DAY_S * 20_002),
        ),
        "StreamFeedbackChanges": lambda: pb.StreamFeedbackChangesRequest(thread_id=thread_id),
        "DeleteUserFeedback": lambda: pb.DeleteUserFeedbackRequest(user_id="nobody"),
        "GetFeedbackBreakdown": lambda: pb.GetFeedbackBreakdownRequest(
            thread_id=thread_id, label_key="release"
        ),
        "ExportFeedback": lambda: pb.ExportFeedbackRequest(thread_id=thread_id),
        "CompareFeedback": lambda: pb.CompareFeedbackRequest(
            thread_id=thread_id, baseline_labels={"release": "1"}, candidate_labels={"release": "2"}
        ),
        "RegisterThread": lambda: registry_pb2.RegisterThreadRequest(thread_id=thread_id),
        "RegisterRun": lambda: registry_pb2.RegisterRunRequest(thread_id=thread_id, run_id=run_id),
        "DeleteThread": lambda: registry_pb2.DeleteThreadRequest(thread_id=thread_id),
    }[name]()


ALL_METHODS = sorted(declared_rules(SERVICES))


def call(client, method: str, request, metadata) -> grpc.StatusCode:
    """Invokes any RPC by path (a server stream is read to its end); returns
    its status code and details."""
    service = next(s for s in SERVICES if method.startswith(f"/{s.full_name}/"))
    descriptor = service.FindMethodByName(method.rsplit("/", 1)[1])
    output = descriptor.output_type
    response_class = pb if output.file.name.endswith("feedback.proto") else registry_pb2
    kind = client.channel.unary_stream if descriptor.server_streaming else client.channel.unary_unary
    stub = kind(
        method,
        request_serializer=type(request).SerializeToString,
        response_deserializer=getattr(response_class, output.name).FromString,
    )
    try:
        response = stub(request, metadata=metadata)
        if descriptor.server_streaming:
            list(response)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def passes_access(result) -> bool:
    """OK, or a failure that comes after the access check (not about the thread)."""
    code, details = result
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return False
    if code == grpc.StatusCode.FAILED_PRECONDITION and "x-on-behalf-of" in details:
        return False
    return not (code == grpc.StatusCode.NOT_FOUND and details.startswith("thread "))


def test_every_rpc_declares_the_expected_rule():
    assert declared_rules(SERVICES) == EXPECTED_RULES


@pytest.fixture
def access_world(client):
    register(client, "t-alice", "alice", ["r-alice"])
    register(client, "t-bob", "bob", ["r-bob"])
    register(client, "t-shared", "", ["r-shared"])
    return client


@pytest.mark.parametrize("method", ALL_METHODS)
def test_no_or_bad_credentials_are_unauthenticated(access_world, method):
    request = request_for(method, "t-alice", "r-alice")
    for metadata in ([], bearer("not-a-jwt"), [("x-service-token", "wrong")]):
        assert call(access_world, method, request, metadata)[0] == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", ALL_METHODS)
def test_the_declared_caller_kind_is_enforced(access_world, method):
    rule = EXPECTED_RULES[method]
    request = request_for(method, "t-shared", "r-shared")
    user = call(access_world, method, request, as_user("alice"))
    delegated = call(access_world, method, request, as_service_for("alice"))
    if rule.caller == SERVICE:
        assert user[0] == delegated[0] == grpc.StatusCode.PERMISSION_DENIED
    else:
        assert passes_access(user) and passes_access(delegated)
    service = call(access_world, method, request_for(method, "t-shared", "r-shared"), as_service())
    if rule.caller == USER:
        assert service[0] == grpc.StatusCode.FAILED_PRECONDITION
        assert "x-on-behalf-of" in service[1]
    else:
        assert passes_access(service)


@pytest.mark.parametrize("method", [m for m in ALL_METHODS if EXPECTED_RULES[m].caller != SERVICE])
def test_the_declared_permission_is_enforced(access_world, method):
    rule = EXPECTED_RULES[method]
    request = request_for(method, "t-alice", "r-alice")
    others = " ".join(scope for p, scope in SCOPES.items() if p != rule.permission)
    code, details = call(access_world, method, request, as_user("alice", scope=others))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert SCOPES[rule.permission] in details
    assert passes_access(call(access_world, method, request, as_user("alice", scope=SCOPES[rule.permission])))


@pytest.mark.parametrize("method", [m for m in ALL_METHODS if EXPECTED_RULES[m].caller != SERVICE])
def test_the_declared_thread_check_is_enforced(access_world, method):
    rule = EXPECTED_RULES[method]
    alice = as_user("alice")
    # Someone else's thread is NOT_FOUND, for reads and writes alike.
    code, details = call(access_world, method, request_for(method, "t-bob", "r-bob"), alice)
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "thread t-bob not found")
    assert passes_access(call(access_world, method, request_for(method, "t-alice", "r-alice"), alice))
    assert passes_access(call(access_world, method, request_for(method, "t-shared", "r-shared"), alice))
    unregistered = call(access_world, method, request_for(method, "t-nobody", "r-x"), alice)
    if rule.thread_access == READS:
        assert unregistered[0] == grpc.StatusCode.OK
    else:
        assert unregistered == (grpc.StatusCode.NOT_FOUND, "thread t-nobody not found")
    # A service acting as itself is trusted with every thread.
    if rule.caller == ANY:
        assert call(access_world, method, request_for(method, "t-bob", "r-bob"), as_service())[0] == (
            grpc.StatusCode.OK
        )


def test_a_method_without_a_declared_rule_is_undeclared():
    """declared_rules() reports None for an RPC with no (feedback.v1.access) option."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(
        descriptor_pb2.FileDescriptorProto.FromString(
            descriptor_pb2.FileDescriptorProto(
                name="undeclared.proto",
                package="undeclared",
                message_type=[descriptor_pb2.DescriptorProto(name="Empty")],
                service=[
                    descriptor_pb2.ServiceDescriptorProto(
                        name="Bare",
                        method=[
                            descriptor_pb2.MethodDescriptorProto(
                                name="Do", input_type=".undeclared.Empty", output_type=".undeclared.Empty"
                            )
                        ],
                    )
                ],
            ).SerializeToString()
        )
    )
    assert declared_rules([pool.FindServiceByName("undeclared.Bare")]) == {"/undeclared.Bare/Do": None}


def test_the_server_refuses_an_rpc_whose_rule_is_missing(tmp_path):
    """A real server whose rule table lacks GetFeedbackStats refuses it, and
    still serves the RPCs that have rules."""
    db = open_database(sqlite_url(tmp_path / "feedback.db"))
    migrate(db)
    store = Store(db, 2)
    rules = declared_rules(SERVICES)
    rules["/feedback.v1.FeedbackService/GetFeedbackStats"] = None
    authenticator = Authenticator(
        JwtVerifier(KeySet(JWT_SECRET)), ServiceTokens({SERVICE_NAME: SERVICE_TOKEN})
    )
    ready, stop, port = threading.Event(), None, []

    async def serve():
        nonlocal stop
        server = grpc.aio.server(
            interceptors=[
                ErrorStatusInterceptor(),
                AuthenticationInterceptor(authenticator),
                AuthorizationInterceptor(rules),
            ]
        )
        feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(
            FeedbackServicer(FeedbackRules(store), ChangeFeed(store, poll_interval_s=0.5, retention_s=3600)),
            server,
        )
        port.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        stop = asyncio.Event()
        loop.append(asyncio.get_running_loop())
        ready.set()
        await stop.wait()
        await server.stop(1)

    loop: list = []
    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port[0]}") as channel:
            stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetFeedbackStats(
                    pb.GetFeedbackStatsRequest(thread_id="t", run_id="r"), metadata=as_service()
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "declares no access rule" in refused.value.details()
            listed = stub.ListFeedback(
                pb.ListFeedbackRequest(thread_id="t", run_id="r"), metadata=as_service()
            )
            assert list(listed.feedback) == []
    finally:
        loop[0].call_soon_threadsafe(stop.set)
        thread.join(10)

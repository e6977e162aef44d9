"""The REST route map in the contract: each FeedbackService RPC carries one
`google.api.http` rule, and the RPCs the original REST router served keep its
method and path, so a REST client of the original can be pointed at the
service through a transcoding proxy. The walk is driven by the service
descriptors: a new RPC without a route, or without a row here, fails."""

import re
import subprocess

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from feedback.v1 import feedback_pb2, thread_registry_pb2
from feedback_service.reflection import DESCRIPTOR_SET, documented_files
from tests.harness import BIN, ServiceProcess

# The original REST router (prefix /api/threads), one route per operation:
# the RPC that replaces it, then the original's method and path.
ORIGINAL_ROUTES = {
    "CreateFeedback": ("POST", "/api/threads/{thread_id}/runs/{run_id}/feedback"),
    "UpsertFeedback": ("PUT", "/api/threads/{thread_id}/runs/{run_id}/feedback"),
    "ListFeedback": ("GET", "/api/threads/{thread_id}/runs/{run_id}/feedback"),
    "GetFeedbackStats": ("GET", "/api/threads/{thread_id}/runs/{run_id}/feedback/stats"),
    "DeleteFeedback": ("DELETE", "/api/threads/{thread_id}/runs/{run_id}/feedback/{feedback_id}"),
    "DeleteRunFeedback": ("DELETE", "/api/threads/{thread_id}/runs/{run_id}/feedback"),
}

# RPCs the original did not have, with the routes the contract gives them.
NEW_ROUTES = {
    "ListThreadFeedback": ("GET", "/api/threads/{thread_id}/feedback"),
    "BatchGetFeedbackStats": ("POST", "/api/threads/{thread_id}/feedback/stats:batchGet"),
    "BatchGetCallerFeedback": ("POST", "/api/threads/{thread_id}/feedback:batchGetCaller"),
    "GetThreadFeedbackStats": ("GET", "/api/threads/{thread_id}/feedback/stats"),
    # thread_id may be empty (every thread), so it is a query parameter here.
    "GetFeedbackTimeSeries": ("GET", "/api/feedback/timeSeries"),
    "StreamFeedbackChanges": ("GET", "/api/feedback/changes"),
    "DeleteUserFeedback": ("DELETE", "/api/users/{user_id}/feedback"),
    # Maps in the request, and thread_id may be empty: a JSON body.
    "GetFeedbackBreakdown": ("POST", "/api/feedback:breakdown"),
    "CompareFeedback": ("POST", "/api/feedback:compare"),
    "ExportFeedback": ("POST", "/api/feedback:export"),
}

FEEDBACK_SERVICE = feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"]
# HTTP methods a rule may name; `custom` (any other verb) is not used here.
METHODS = ("get", "put", "post", "delete", "patch")


def rule_of(method) -> http_pb2.HttpRule | None:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    return options.Extensions[annotations_pb2.http]


def route(rule: http_pb2.HttpRule) -> tuple[str, str]:
    pattern = rule.WhichOneof("pattern")
    assert pattern in METHODS, f"unexpected pattern {pattern}"
    return pattern.upper(), getattr(rule, pattern)


def test_every_rpc_has_exactly_one_http_rule():
    for method in FEEDBACK_SERVICE.methods:
        rule = rule_of(method)
        assert rule is not None, f"{method.name} has no google.api.http rule"
        assert rule.WhichOneof("pattern") is not None, method.name
        assert not rule.additional_bindings, f"{method.name} has more than one route"


def test_every_rpc_is_in_the_route_table():
    assert {method.name for method in FEEDBACK_SERVICE.methods} == ORIGINAL_ROUTES.keys() | NEW_ROUTES.keys()
    assert not ORIGINAL_ROUTES.keys() & NEW_ROUTES.keys()


@pytest.mark.parametrize("name", sorted(ORIGINAL_ROUTES))
def test_the_original_routes_are_kept(name):
    assert route(rule_of(FEEDBACK_SERVICE.methods_by_name[name])) == ORIGINAL_ROUTES[name]


@pytest.mark.parametrize("name", sorted(NEW_ROUTES))
def test_new_rpcs_have_their_routes(name):
    assert route(rule_of(FEEDBACK_SERVICE.methods_by_name[name])) == NEW_ROUTES[name]


def test_no_two_rpcs_share_a_route():
    routes = [route(rule_of(method)) for method in FEEDBACK_SERVICE.methods]
    assert len(routes) == len(set(routes))


def test_path_variables_are_string_fields_of_the_request():
    for method in FEEDBACK_SERVICE.methods:
        _, path = route(rule_of(method))
        for name in re.findall(r"\{([^}=]+)\}", path):
            field = method.input_type.fields_by_name.get(name)
            assert field is not None, f"{method.name}: {name} is not a request field"
            assert field.type == field.TYPE_STRING and not field.is_repeated, f"{method.name}: {name}"


def test_json_bodies_only_where_the_original_took_one():
    # The original read a JSON body on POST and PUT only; everything else is
    # in the path (and, beyond the original, in query parameters).
    for method in FEEDBACK_SERVICE.methods:
        rule = rule_of(method)
        http_method, _ = route(rule)
        assert rule.body == ("*" if http_method in ("POST", "PUT") else ""), method.name


def test_list_feedback_answers_a_bare_array_like_the_original():
    # The original answered GET .../feedback with a JSON list of feedback.
    for method in FEEDBACK_SERVICE.methods:
        expected = "feedback" if method.name == "ListFeedback" else ""
        assert rule_of(method).response_body == expected, method.name


def test_thread_registry_stays_grpc_only():
    # Internal: the platform registers threads over gRPC; no REST route to expose.
    service = thread_registry_pb2.DESCRIPTOR.services_by_name["ThreadRegistry"]
    assert [method.name for method in service.methods if rule_of(method)] == []


def test_the_shipped_descriptor_set_has_the_same_routes():
    # Proxies (Envoy's grpc_json_transcoder) read the routes from this file.
    files = documented_files()
    assert {"google/api/annotations.proto", "google/api/http.proto"} <= files.keys(), DESCRIPTOR_SET
    shipped = next(s for s in files["feedback/v1/feedback.proto"].service if s.name == "FeedbackService")
    for method in shipped.method:
        options = descriptor_pb2.MethodOptions.FromString(method.options.SerializeToString())
        rule = options.Extensions[annotations_pb2.http]
        assert rule == rule_of(FEEDBACK_SERVICE.methods_by_name[method.name]), method.name


def test_reflection_describes_the_routes(tmp_path):
    service = ServiceProcess(tmp_path / "data")
    try:
        result = subprocess.run(
            [
                str(BIN / "grpcurl"),
                "-plaintext",
                service.address,
                "describe",
                "feedback.v1.FeedbackService.GetFeedbackStats",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        service.terminate()
    assert result.returncode == 0, result.stderr
    assert "/api/threads/{thread_id}/runs/{run_id}/feedback/stats" in result.stdout

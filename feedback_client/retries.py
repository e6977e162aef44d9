"""Which calls gRPC may retry, derived from the contract's descriptors, as a
gRPC service config (one retryPolicy per method).

A method is retried on UNAVAILABLE, with exponential backoff, when repeating
it cannot do anything twice:
- it only reads (its access rule's permission is `threads:read`);
- it is idempotent by definition (UpsertFeedback, RegisterThread, RegisterRun);
- its request has a `request_id` (AIP-155): the client fills an empty one
  with a fresh UUID before the first attempt, every attempt carries it, and
  the server answers a repeat with the first call's response.
Other methods are not retried. A retry policy cannot look at the request,
which is why the client fills `request_id` itself, as Google's client
libraries do.
"""

import json
from collections.abc import Iterable

from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor

from feedback.v1 import access_pb2, feedback_pb2, thread_registry_pb2

SERVICES = (
    feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"],
    thread_registry_pb2.DESCRIPTOR.services_by_name["ThreadRegistry"],
)
IDEMPOTENT = frozenset(
    {
        "feedback.v1.FeedbackService.UpsertFeedback",
        "feedback.v1.ThreadRegistry.RegisterThread",
        "feedback.v1.ThreadRegistry.RegisterRun",
    }
)
REQUEST_ID = "request_id"
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
# gRPC's retry throttling: each failure takes a token and each success gives
# back a tenth of one; with fewer than half of the 10 tokens left (about five
# failures more than a tenth of the successes), retries stop, so a server
# that is down is not sent five times the traffic.
RETRY_THROTTLING = {"maxTokens": 10, "tokenRatio": 0.1}


def method_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def has_request_id(method: MethodDescriptor) -> bool:
    field = method.input_type.fields_by_name.get(REQUEST_ID)
    return field is not None and field.type == FieldDescriptor.TYPE_STRING


def reads_only(method: MethodDescriptor) -> bool:
    options = method.GetOptions()
    if not options.HasExtension(access_pb2.access):
        return False
    return bool(options.Extensions[access_pb2.access].permission == access_pb2.PERMISSION_THREADS_READ)


def retried(method: MethodDescriptor) -> bool:
    return reads_only(method) or method.full_name in IDEMPOTENT or has_request_id(method)


def methods(services: Iterable[ServiceDescriptor] = SERVICES) -> list[MethodDescriptor]:
    return [method for service in services for method in service.methods]


def request_id_paths(services: Iterable[ServiceDescriptor] = SERVICES) -> frozenset[str]:
    """The paths of the methods whose requests carry a request_id."""
    return frozenset(method_path(m) for m in methods(services) if has_request_id(m))


def service_config(services: Iterable[ServiceDescriptor] = SERVICES) -> str:
    """The service config, as JSON for the channel option `grpc.service_config`."""
    names = [
        {"service": m.containing_service.full_name, "method": m.name} for m in methods(services) if retried(m)
    ]
    config: dict[str, object] = {"retryThrottling": RETRY_THROTTLING}
    if names:
        config["methodConfig"] = [{"name": names, "retryPolicy": RETRY_POLICY}]
    return json.dumps(config)

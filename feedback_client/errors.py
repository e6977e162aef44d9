"""Typed errors: a failed call raises the FeedbackError subclass named after
its status code, carrying the code, the server's message and, for
INVALID_ARGUMENT, the fields at fault (google.rpc.BadRequest)."""

from collections.abc import Iterable
from typing import NamedTuple

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class FieldViolation(NamedTuple):
    """One field at fault: `run_ids[3]`, `rating`, `x-on-behalf-of`, ..."""

    field: str
    description: str


class FeedbackError(Exception):
    """A call that failed. `code` is its grpc.StatusCode, `details` the
    server's message (safe to show), `field_violations` the fields at fault
    (empty unless INVALID_ARGUMENT)."""

    def __init__(
        self, code: grpc.StatusCode, details: str, field_violations: Iterable[FieldViolation] = ()
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.field_violations = list(field_violations)


class Cancelled(FeedbackError): ...


class Unknown(FeedbackError): ...


class InvalidArgument(FeedbackError): ...


class DeadlineExceeded(FeedbackError): ...


class NotFound(FeedbackError): ...


class AlreadyExists(FeedbackError): ...


class PermissionDenied(FeedbackError): ...


class ResourceExhausted(FeedbackError): ...


class FailedPrecondition(FeedbackError): ...


class Aborted(FeedbackError): ...


class OutOfRange(FeedbackError): ...


class Unimplemented(FeedbackError): ...


class Internal(FeedbackError): ...


class Unavailable(FeedbackError): ...


class DataLoss(FeedbackError): ...


class Unauthenticated(FeedbackError): ...


ERRORS: dict[grpc.StatusCode, type[FeedbackError]] = {
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNKNOWN: Unknown,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def error_from(error: grpc.RpcError) -> FeedbackError:
    """The typed error for a failed call (a grpc.RpcError that is a grpc.Call,
    as both the sync and the asyncio API raise)."""
    code = error.code()
    details = error.details() or ""
    return ERRORS.get(code, Unknown)(code, details, _field_violations(error))


def _field_violations(error: grpc.RpcError) -> list[FieldViolation]:
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # details whose code contradicts the call's: ignore them
        return []
    if status is None:
        return []
    violations = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
    return violations

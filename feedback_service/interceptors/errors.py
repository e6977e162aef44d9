"""Maps the errors raised below it to gRPC statuses, in one place."""

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from feedback_service.domain import errors
from feedback_service.interceptors._wrap import Behavior, UnaryInterceptor

log = logging.getLogger(__name__)

STATUS_CODES: dict[type[errors.ServiceError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def bad_request_status(error: errors.InvalidArgument) -> grpc.Status:
    """INVALID_ARGUMENT with google.rpc.BadRequest naming each field at fault."""
    details = any_pb2.Any()
    details.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(error), details=[details])
    return rpc_status.to_status(status)


class ErrorStatusInterceptor(UnaryInterceptor):
    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        return _with_statuses(behavior)


def _with_statuses(behavior: Behavior) -> Behavior:
    async def run(request, context: grpc.aio.ServicerContext):
        try:
            return await behavior(request, context)
        except errors.InvalidArgument as error:
            status = bad_request_status(error)
            await context.abort(status.code, status.details, status.trailing_metadata)
        except errors.ServiceError as error:
            await context.abort(STATUS_CODES[type(error)], str(error))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unexpected error")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return run

"""Turns the errors raised below it into gRPC statuses, in one place."""

import logging
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from feedback_service.core import errors
from feedback_service.interceptors.base import Behavior, Context, Handler, MethodName, ServerInterceptor

log = logging.getLogger(__name__)


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
    grpc_status: grpc.Status = rpc_status.to_status(status)  # grpcio-status ships no types
    return grpc_status


class ErrorStatusInterceptor(ServerInterceptor):
    """A ServiceError becomes the status its class names; anything else is a
    bug: INTERNAL for the caller, and its traceback logged once, here. It
    covers public methods too, whose requests are read below it."""

    def applies_to(self, method: MethodName, handler: Handler) -> bool:
        return True

    async def intercept(self, behavior: Behavior, request: Any, context: Context, method: MethodName) -> Any:
        try:
            return await behavior(request, context)
        except errors.InvalidArgument as error:
            status = bad_request_status(error)
            await context.abort(status.code, status.details, status.trailing_metadata)
        except errors.ServiceError as error:
            await context.abort(grpc.StatusCode[error.code], str(error))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unexpected error in %s", method.path)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

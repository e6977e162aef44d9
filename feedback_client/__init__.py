"""The Python client of feedback-service.

    from feedback_client import FeedbackClient, bearer_token
    from feedback.v1 import feedback_pb2 as pb

    with FeedbackClient("localhost:50051", bearer_token(jwt)) as client:
        client.feedback.CreateFeedback(pb.CreateFeedbackRequest(...))

`client.feedback` and `client.registry` are the generated stubs of
FeedbackService and ThreadRegistry; every failure raises a FeedbackError
subclass. AsyncFeedbackClient is the same for asyncio.
"""

from feedback_client.client import DEFAULT_TIMEOUT_S, AsyncFeedbackClient, FeedbackClient
from feedback_client.credentials import Credentials, bearer_token, on_behalf_of, service_token
from feedback_client.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FeedbackError,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Aborted",
    "AlreadyExists",
    "AsyncFeedbackClient",
    "Cancelled",
    "Credentials",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FeedbackClient",
    "FeedbackError",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "bearer_token",
    "on_behalf_of",
    "service_token",
]

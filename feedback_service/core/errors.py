"""Errors the rules raise. Each names its gRPC status code (as text, so this
module stays free of gRPC); the transport turns it into that status."""

from dataclasses import dataclass
from typing import ClassVar

# Characters of a caller's value that an error message may quote.
ECHO_LIMIT = 64


def echoed(value: str) -> str:
    """A caller's value as an error message may quote it: at most ECHO_LIMIT
    characters (then an ellipsis), quoted, with control characters escaped."""
    if len(value) > ECHO_LIMIT:
        value = value[:ECHO_LIMIT] + "\u2026"
    return repr(value)


class ServiceError(Exception):
    """A failure the caller should see, with a message safe to show them."""

    code: ClassVar[str]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field and why."""

    field: str
    description: str


class InvalidArgument(ServiceError):
    """The request is malformed; `violations` names the fields at fault."""

    code = "INVALID_ARGUMENT"
    # Status details travel in trailers that clients cap (8 KB by default):
    # report the first few violations and how many more there were.
    MAX_REPORTED = 10

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        self.violations = violations[: self.MAX_REPORTED]
        if message is None:
            message = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
            if len(violations) > self.MAX_REPORTED:
                message += f" (and {len(violations) - self.MAX_REPORTED} more)"
        super().__init__(message)


class Unauthenticated(ServiceError):
    """No usable credentials."""

    code = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    """The caller is known but may not do this."""

    code = "PERMISSION_DENIED"


class NotFound(ServiceError):
    """The thing does not exist, or the caller may not know that it does."""

    code = "NOT_FOUND"


class AlreadyExists(ServiceError):
    """A create collided with an existing record."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    """The request is well formed but the system's state refuses it."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    """The server is at a limit (calls in progress, open streams); retry later."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    """A dependency (the database) is unreachable; retrying may succeed."""

    code = "UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    """The caller's deadline passed before the work could start, or the
    request itself did not arrive in time."""

    code = "DEADLINE_EXCEEDED"

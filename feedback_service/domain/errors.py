"""Errors the rules raise; the transport maps each to one gRPC status code."""

from dataclasses import dataclass


class ServiceError(Exception):
    """A failure the caller should see, with a message safe to show them."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field and why."""

    field: str
    description: str


class InvalidArgument(ServiceError):
    """The request is malformed; `violations` names the fields at fault."""

    # Status details travel in trailers that clients cap (8 KB by default):
    # report the first few violations and how many more there were.
    MAX_REPORTED = 10

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations[: self.MAX_REPORTED]
        message = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        if len(violations) > self.MAX_REPORTED:
            message += f" (and {len(violations) - self.MAX_REPORTED} more)"
        super().__init__(message)


class Unauthenticated(ServiceError):
    """No usable credentials."""


class PermissionDenied(ServiceError):
    """The caller is known but may not do this."""


class NotFound(ServiceError):
    """The thing does not exist, or the caller may not know that it does."""


class AlreadyExists(ServiceError):
    """A create collided with an existing record."""


class FailedPrecondition(ServiceError):
    """The request is well formed but the system's state refuses it."""


class Unavailable(ServiceError):
    """A dependency (the database) is unreachable; retrying may succeed."""


class DeadlineExceeded(ServiceError):
    """The caller's deadline passed before the work could start."""

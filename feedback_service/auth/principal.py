"""The authenticated caller of one RPC."""

from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum

from feedback.v1 import access_pb2


class PrincipalKind(StrEnum):
    USER = "user"  # an end user with a JWT
    DELEGATED = "delegated"  # a service acting for a user (x-on-behalf-of)
    SERVICE = "service"  # a service acting as itself


ALL_PERMISSIONS = frozenset(
    {
        access_pb2.PERMISSION_THREADS_READ,
        access_pb2.PERMISSION_THREADS_WRITE,
        access_pb2.PERMISSION_THREADS_DELETE,
    }
)


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    # The user the call acts for; None for a service acting as itself.
    user_id: str | None
    # The calling service's configured name; None for an end user.
    service: str | None
    permissions: frozenset[int]

    @property
    def id(self) -> str:
        """A printable identity for logs."""
        if self.kind is PrincipalKind.DELEGATED:
            return f"{self.service}/{self.user_id}"
        return self.user_id or self.service or ""


# Set by the authentication interceptor for the RPC being served.
current_principal: ContextVar[Principal] = ContextVar("current_principal")

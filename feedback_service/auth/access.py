"""Access rules, as declared on each RPC by the `(feedback.v1.access)` option,
and what they grant a principal. No gRPC here: the interceptor feeds it."""

from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from feedback.v1 import access_pb2
from feedback_service.auth.principal import Principal, PrincipalKind
from feedback_service.core.errors import FailedPrecondition, PermissionDenied
from feedback_service.domain.access import Access, ThreadCheck

PERMISSION_NAMES = {
    access_pb2.PERMISSION_THREADS_READ: "threads:read",
    access_pb2.PERMISSION_THREADS_WRITE: "threads:write",
    access_pb2.PERMISSION_THREADS_DELETE: "threads:delete",
}
THREAD_CHECKS = {
    access_pb2.THREAD_ACCESS_NONE: ThreadCheck.NONE,
    access_pb2.THREAD_ACCESS_READ: ThreadCheck.READ,
    access_pb2.THREAD_ACCESS_WRITE: ThreadCheck.WRITE,
}

# Set by the authorization interceptor (its only writer) for the RPC being served.
current_access: ContextVar[Access] = ContextVar("current_access")


@dataclass(frozen=True, slots=True)
class AccessRule:
    permission: access_pb2.Permission.ValueType
    thread_access: access_pb2.ThreadAccess.ValueType
    caller: access_pb2.Caller.ValueType


def method_path(service: ServiceDescriptor, method_name: str) -> str:
    return f"/{service.full_name}/{method_name}"


def declared_rules(services: Iterable[ServiceDescriptor]) -> dict[str, AccessRule | None]:
    """Every method of the services, with its rule (None when absent or incomplete)."""
    rules: dict[str, AccessRule | None] = {}
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            rule = None
            if options.HasExtension(access_pb2.access):
                declared = options.Extensions[access_pb2.access]
                if declared.permission and declared.thread_access and declared.caller:
                    rule = AccessRule(declared.permission, declared.thread_access, declared.caller)
            rules[method_path(service, method.name)] = rule
    return rules


def grant(rule: AccessRule, principal: Principal) -> Access:
    """What the rule lets the principal do: PERMISSION_DENIED or
    FAILED_PRECONDITION for the wrong kind of caller or a missing permission,
    else the Access the domain applies to the thread. A service acting as
    itself is trusted with every thread and is not checked."""
    is_service = principal.kind is PrincipalKind.SERVICE
    if rule.caller == access_pb2.CALLER_SERVICE and not is_service:
        raise PermissionDenied("only internal services acting as themselves may call this")
    if rule.caller == access_pb2.CALLER_USER and is_service:
        raise FailedPrecondition("this call acts for a user: a service must name one with x-on-behalf-of")
    if rule.permission not in principal.permissions:
        raise PermissionDenied(f"missing permission {PERMISSION_NAMES[rule.permission]}")
    thread_check = ThreadCheck.NONE if is_service else THREAD_CHECKS[rule.thread_access]
    return Access(principal.user_id, thread_check, principal.id)

"""Access rules, as declared on each RPC by the `(feedback.v1.access)` option,
and the checks that enforce them. No gRPC here: the interceptor feeds it."""

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from feedback.v1 import access_pb2
from feedback_service.auth.principal import Principal, PrincipalKind
from feedback_service.domain.errors import FailedPrecondition, NotFound, PermissionDenied

PERMISSION_NAMES = {
    access_pb2.PERMISSION_THREADS_READ: "threads:read",
    access_pb2.PERMISSION_THREADS_WRITE: "threads:write",
    access_pb2.PERMISSION_THREADS_DELETE: "threads:delete",
}


@dataclass(frozen=True, slots=True)
class AccessRule:
    permission: int
    thread_access: int
    caller: int

    @property
    def checks_thread(self) -> bool:
        return self.thread_access != access_pb2.THREAD_ACCESS_NONE


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


def check_caller(rule: AccessRule, principal: Principal) -> None:
    """Caller kind and permission: PERMISSION_DENIED or FAILED_PRECONDITION."""
    is_service = principal.kind is PrincipalKind.SERVICE
    if rule.caller == access_pb2.CALLER_SERVICE and not is_service:
        raise PermissionDenied("only internal services acting as themselves may call this")
    if rule.caller == access_pb2.CALLER_USER and is_service:
        raise FailedPrecondition("this call acts for a user: a service must name one with x-on-behalf-of")
    if rule.permission not in principal.permissions:
        raise PermissionDenied(f"missing permission {PERMISSION_NAMES[rule.permission]}")


def check_thread(rule: AccessRule, principal: Principal, thread_id: str, owner: str | None) -> None:
    """Ownership: NOT_FOUND unless the caller may see (and, for writes, use) the thread.

    A service acting as itself is trusted with every thread and is not checked.
    """
    if owner is None:  # not registered
        if rule.thread_access == access_pb2.THREAD_ACCESS_READ:
            return  # reads on a thread that is not registered see nothing
        raise NotFound(f"thread {thread_id} not found")
    if owner not in ("", principal.user_id):
        raise NotFound(f"thread {thread_id} not found")

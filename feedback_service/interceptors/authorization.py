"""Enforces each RPC's declared access rule for the authenticated principal:
caller kind, permission, then thread ownership (which reads the thread)."""

import grpc

from feedback_service.auth import access
from feedback_service.auth.principal import PrincipalKind, current_principal
from feedback_service.domain.errors import PermissionDenied
from feedback_service.domain.validation import Checker
from feedback_service.interceptors._wrap import Behavior, UnaryInterceptor
from feedback_service.store import queries
from feedback_service.store.database import Store


class AuthorizationInterceptor(UnaryInterceptor):
    def __init__(self, rules: dict[str, access.AccessRule | None], store: Store) -> None:
        super().__init__()
        self._rules = rules
        self._store = store

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        rule = self._rules.get(method)

        async def run(request, context: grpc.aio.ServicerContext):
            if rule is None:
                raise PermissionDenied(f"{method} declares no access rule and is refused")
            principal = current_principal.get()
            access.check_caller(rule, principal)
            if rule.checks_thread and principal.kind is not PrincipalKind.SERVICE:
                check = Checker()
                thread_id = check.id("thread_id", request.thread_id)
                check.done()
                owner = await self._store.read(queries.thread_owner, thread_id)
                access.check_thread(rule, principal, thread_id, owner)
            return await behavior(request, context)

        return run

"""Enforces each RPC's declared access rule for the authenticated principal:
caller kind, permission, then thread ownership (which reads the thread)."""

from typing import Any

import grpc

from feedback_service.auth import access
from feedback_service.auth.principal import PrincipalKind, current_principal
from feedback_service.domain.errors import PermissionDenied
from feedback_service.domain.validation import Checker
from feedback_service.interceptors.base import Behavior, MethodName, ServerInterceptor
from feedback_service.store import queries
from feedback_service.store.database import Store


class AuthorizationInterceptor(ServerInterceptor):
    def __init__(self, rules: dict[str, access.AccessRule | None], store: Store) -> None:
        self._rules = rules
        self._store = store

    async def intercept(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext, method: MethodName
    ) -> Any:
        rule = self._rules.get(method.path)
        if rule is None:
            raise PermissionDenied(f"{method.path} declares no access rule and is refused")
        principal = current_principal.get()
        access.check_caller(rule, principal)
        if rule.checks_thread and principal.kind is not PrincipalKind.SERVICE:
            check = Checker()
            thread_id = check.id("thread_id", request.thread_id)
            check.done()
            owner = await self._store.read(queries.thread_owner, thread_id)
            access.check_thread(rule, principal, thread_id, owner)
        return await behavior(request, context)

"""Enforces each RPC's declared access rule for the authenticated principal:
caller kind, permission, then thread ownership (which reads the thread)."""

import grpc

from feedback_service.auth import access
from feedback_service.auth.principal import PrincipalKind, current_principal
from feedback_service.domain.errors import PermissionDenied
from feedback_service.domain.validation import Checker
from feedback_service.interceptors import is_public
from feedback_service.interceptors._wrap import Behavior, wrap_unary
from feedback_service.store import queries
from feedback_service.store.database import Store


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, rules: dict[str, access.AccessRule | None], store: Store) -> None:
        self._rules = rules
        self._store = store

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if is_public(method):
            return handler
        return wrap_unary(handler, lambda behavior: self._authorized(method, behavior))

    def _authorized(self, method: str, behavior: Behavior) -> Behavior:
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
                thread = await self._store.read(queries.get_thread, thread_id)
                access.check_thread(rule, principal, thread_id, thread)
            return await behavior(request, context)

        return run

"""Enforces each RPC's declared access rule for the authenticated principal
(caller kind and permission) and hands the servicer what the rule grants: the
user the call acts for, and the thread check the domain applies."""

from typing import Any

from feedback_service.auth.access import AccessRule, current_access, grant
from feedback_service.auth.principal import current_principal
from feedback_service.core.errors import PermissionDenied
from feedback_service.interceptors.base import Behavior, Context, MethodName, ServerInterceptor


class AuthorizationInterceptor(ServerInterceptor):
    def __init__(self, rules: dict[str, AccessRule | None]) -> None:
        self._rules = rules

    async def intercept(self, behavior: Behavior, request: Any, context: Context, method: MethodName) -> Any:
        rule = self._rules.get(method.path)
        if rule is None:
            raise PermissionDenied(f"{method.path} declares no access rule and is refused")
        current_access.set(grant(rule, current_principal.get()))
        return await behavior(request, context)

"""Metadata -> Principal, or UNAUTHENTICATED, before anything else runs."""

import grpc

from feedback_service.auth.credentials import Authenticator
from feedback_service.auth.principal import current_principal
from feedback_service.interceptors import is_public
from feedback_service.interceptors._wrap import Behavior, wrap_unary


class AuthenticationInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if is_public(handler_call_details.method):
            return handler
        return wrap_unary(handler, self._authenticated)

    def _authenticated(self, behavior: Behavior) -> Behavior:
        async def run(request, context: grpc.aio.ServicerContext):
            principal = self._authenticator.authenticate(context.invocation_metadata() or ())
            token = current_principal.set(principal)
            try:
                return await behavior(request, context)
            finally:
                current_principal.reset(token)

        return run

"""Metadata -> Principal, or UNAUTHENTICATED, before anything else runs."""

import grpc

from feedback_service.auth.credentials import Authenticator
from feedback_service.auth.principal import current_principal
from feedback_service.interceptors import is_public
from feedback_service.interceptors._wrap import Behavior, wrap_unary
from feedback_service.observability import current_call

# Where gRPC puts a verified client certificate's names (mutual TLS only).
CERTIFICATE_NAME_KEYS = ("x509_subject_alternative_name", "x509_common_name")


def certificate_identities(context: grpc.aio.ServicerContext) -> list[str]:
    """The SANs and CN of the peer's verified client certificate, if any."""
    properties = context.auth_context()
    return [
        value.decode("utf-8", "replace") for key in CERTIFICATE_NAME_KEYS for value in properties.get(key, ())
    ]


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
            principal = self._authenticator.authenticate(
                context.invocation_metadata() or (), certificate_identities(context)
            )
            record = current_call.get()
            if record is not None:
                record.principal = principal
            token = current_principal.set(principal)
            try:
                return await behavior(request, context)
            finally:
                current_principal.reset(token)

        return run

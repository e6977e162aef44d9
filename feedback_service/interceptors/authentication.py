"""Metadata -> Principal, or UNAUTHENTICATED, before anything else runs."""

import grpc

from feedback_service.auth.credentials import Authenticator
from feedback_service.auth.principal import current_principal
from feedback_service.interceptors._wrap import Behavior, UnaryInterceptor
from feedback_service.observability import current_call


def certificate_identities(context: grpc.aio.ServicerContext) -> list[str]:
    """The names of the peer's verified client certificate: its SANs, or its
    CN only when it has no SAN (RFC 6125)."""
    properties = context.auth_context()
    names = properties.get("x509_subject_alternative_name") or properties.get("x509_common_name") or ()
    return [value.decode("utf-8", "replace") for value in names]


class AuthenticationInterceptor(UnaryInterceptor):
    def __init__(self, authenticator: Authenticator, *, client_certificates: bool = False) -> None:
        super().__init__()
        self._authenticator = authenticator
        self._client_certificates = client_certificates  # only mutual TLS has them

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        async def run(request, context: grpc.aio.ServicerContext):
            identities = certificate_identities(context) if self._client_certificates else ()
            principal = self._authenticator.authenticate(context.invocation_metadata() or (), identities)
            record = current_call.get()
            if record is not None:
                record.principal = principal
            token = current_principal.set(principal)
            try:
                return await behavior(request, context)
            finally:
                current_principal.reset(token)

        return run

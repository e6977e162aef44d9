"""Metadata -> Principal, or UNAUTHENTICATED, before anything else runs."""

import grpc

from feedback_service.auth.credentials import Authenticator
from feedback_service.auth.principal import current_principal
from feedback_service.interceptors._wrap import Behavior, UnaryInterceptor
from feedback_service.observability import current_call

# Where gRPC puts a verified client certificate's names (mutual TLS only).
CERTIFICATE_NAME_KEYS = ("x509_subject_alternative_name", "x509_common_name")


def certificate_identities(context: grpc.aio.ServicerContext) -> list[str]:
    """The SANs and CN of the peer's verified client certificate, if any."""
    properties = context.auth_context()
    return [
        value.decode("utf-8", "replace") for key in CERTIFICATE_NAME_KEYS for value in properties.get(key, ())
    ]


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

"""Metadata -> Principal, or UNAUTHENTICATED, before anything else runs (the
request message itself is read only afterwards, so a caller without
credentials is turned away at once)."""

from typing import Any

from feedback_service.auth.credentials import Authenticator
from feedback_service.auth.principal import current_principal
from feedback_service.interceptors.base import Behavior, Context, MethodName, ServerInterceptor


def certificate_identities(context: Context) -> list[str]:
    """The names of the peer's verified client certificate: its SANs, or its
    CN only when it has no SAN (RFC 6125)."""
    properties = context.auth_context()
    names = properties.get("x509_subject_alternative_name") or properties.get("x509_common_name") or ()
    return [value.decode("utf-8", "replace") for value in names]


class AuthenticationInterceptor(ServerInterceptor):
    def __init__(self, authenticator: Authenticator, *, client_certificates: bool = False) -> None:
        self._authenticator = authenticator
        self._client_certificates = client_certificates  # only mutual TLS has them

    async def intercept(self, behavior: Behavior, request: Any, context: Context, method: MethodName) -> Any:
        identities = certificate_identities(context) if self._client_certificates else ()
        principal = self._authenticator.authenticate(context.invocation_metadata() or (), identities)
        # The only writer. Each call runs in its own task and context, so the
        # value is never seen by another call and needs no reset.
        current_principal.set(principal)
        return await behavior(request, context)

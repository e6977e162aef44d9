"""Who a client calls as: the metadata each call carries."""

from collections.abc import Callable

Metadata = tuple[tuple[str, str], ...]


class Credentials:
    """Metadata sent with every call of a client. Build one with
    bearer_token() or service_token()."""

    def __init__(self, metadata: Callable[[], Metadata]) -> None:
        self._metadata = metadata

    def metadata(self) -> Metadata:
        return self._metadata()


def bearer_token(token: str | Callable[[], str]) -> Credentials:
    """An end user's JWT, sent as `authorization: Bearer <token>`. Pass a
    function instead of a string to send what it returns on each call (a
    token it refreshes before it expires, say)."""
    if isinstance(token, str):
        fixed = (("authorization", f"Bearer {token}"),)
        return Credentials(lambda: fixed)
    return Credentials(lambda: (("authorization", f"Bearer {token()}"),))


def service_token(token: str) -> Credentials:
    """An internal service's token, sent as `x-service-token`. The service
    acts as itself; a call that passes `metadata=on_behalf_of(user_id)` acts
    for that user."""
    fixed = (("x-service-token", token),)
    return Credentials(lambda: fixed)


def on_behalf_of(user_id: str) -> Metadata:
    """Metadata for one call of a service client that acts for a user:
    `stub.CreateFeedback(request, metadata=on_behalf_of("alice"))`."""
    return (("x-on-behalf-of", user_id),)

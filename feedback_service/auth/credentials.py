"""Turns request metadata into a Principal: JWTs for end users, static tokens
for internal services. Failures raise Unauthenticated with a reason that never
echoes the credential; other caller values a reason names go through echoed()."""

import hashlib
import hmac
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import jwt

from feedback.v1 import access_pb2
from feedback_service.auth.keys import KeySet, VerificationKey
from feedback_service.auth.principal import ALL_PERMISSIONS, Principal, PrincipalKind
from feedback_service.core.errors import (
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    echoed,
)
from feedback_service.domain.validation import ID_RULE, is_valid_id

SCOPE_PERMISSIONS = {
    "threads:read": access_pb2.PERMISSION_THREADS_READ,
    "threads:write": access_pb2.PERMISSION_THREADS_WRITE,
    "threads:delete": access_pb2.PERMISSION_THREADS_DELETE,
}
AUTHORIZATION = "authorization"
SERVICE_TOKEN = "x-service-token"  # noqa: S105 - a header name
ON_BEHALF_OF = "x-on-behalf-of"
CREDENTIAL_HEADERS = (AUTHORIZATION, SERVICE_TOKEN, ON_BEHALF_OF)
# Verified tokens are remembered (until they expire) so a busy caller's token
# is checked once, not on every RPC.
TOKEN_CACHE_SIZE = 10_000
# exp, nbf and iat must be NumericDates up to the end of year 9999: a larger or
# odd value is no real issuer's, and would overflow the conversions below.
LATEST_NUMERIC_DATE = 253_402_300_799
TIME_CLAIMS = ("exp", "nbf", "iat")
# What PyJWT and the claim conversions raise for a token of odd shape: the
# caller's mistake (UNAUTHENTICATED), never a bug worth a traceback.
MALFORMED_TOKEN_ERRORS = (jwt.InvalidTokenError, OverflowError, TypeError, ValueError)
# Neither PyJWT's message nor the header itself is echoed: both may hold caller text.
HEADER_REFUSED = "token header is not accepted (kid must be a string; crit is not supported)"


def scope_permissions(scope: str) -> frozenset[int]:
    """RFC 6749 §3.3: scope tokens are separated by the space character alone;
    a tab or a no-break space is part of a token (so it matches no scope)."""
    return frozenset(SCOPE_PERMISSIONS[s] for s in scope.split(" ") if s in SCOPE_PERMISSIONS)


def permissions_from_scope(
    claims: Mapping[str, object], default: frozenset[int] = ALL_PERMISSIONS
) -> frozenset[int]:
    """The token's scope claim's permissions; `default` (FEEDBACK_JWT_DEFAULT_SCOPE,
    every permission unless set) when it has none."""
    if "scope" not in claims:
        return default
    scope = claims["scope"]
    if not isinstance(scope, str):  # null too: only a token without the claim gets the default
        raise Unauthenticated("token scope claim must be a space-separated string")
    return scope_permissions(scope)


def check_time_claims(claims: Mapping[str, object]) -> None:
    """PyJWT reads these with int(), which takes strings and numbers of any size."""
    for name in TIME_CLAIMS:
        if name in claims and not _is_numeric_date(claims[name]):
            raise Unauthenticated(f"token {name} must be a number of seconds since 1970 (up to year 9999)")


def _is_numeric_date(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0 <= value <= LATEST_NUMERIC_DATE


@dataclass(frozen=True)
class JwtPolicy:
    """What a valid token must also satisfy beyond its signature."""

    issuer: str | None = None
    audience: str | None = None
    leeway_s: float = 0.0
    # The permissions of a token without a scope claim.
    default_permissions: frozenset[int] = ALL_PERMISSIONS


class JwtVerifier:
    def __init__(self, keys: KeySet, policy: JwtPolicy = JwtPolicy()) -> None:
        self._keys = keys
        self._policy = policy
        self._cache: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        if self._keys.refresh_if_due():
            self._cache.clear()  # a removed key must stop verifying at once
        cached = self._cache.get(token)
        if cached is not None and cached[1] > time.time() - self._policy.leeway_s:
            return cached[0]
        principal, expires = self._decode(token)
        if len(self._cache) >= TOKEN_CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = (principal, expires)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        if self._keys.empty:
            raise Unauthenticated("this server accepts no JWTs (no key is configured)")
        try:
            return self._principal(token)
        except MALFORMED_TOKEN_ERRORS as exc:
            raise Unauthenticated(f"invalid token ({exc.__class__.__name__})") from None

    def _principal(self, token: str) -> tuple[Principal, float]:
        algorithm, kid = self._header(token)
        candidates = self._keys.candidates(algorithm, kid)
        if not candidates:
            raise Unauthenticated(f"no key with kid {echoed(kid or '')} for {algorithm}")
        claims = self._checked_claims(token, candidates)
        check_time_claims(claims)
        subject = claims["sub"]
        if not isinstance(subject, str) or not is_valid_id(subject):
            raise Unauthenticated(f"token sub must be a user id of {ID_RULE}")
        principal = Principal(
            PrincipalKind.USER,
            subject,
            None,
            permissions_from_scope(claims, self._policy.default_permissions),
        )
        expires = claims["exp"]
        if not isinstance(expires, int | float):  # PyJWT checked it already; this tells the type checker
            raise Unauthenticated("token exp must be a number")
        return principal, float(expires)

    def _header(self, token: str) -> tuple[str, str | None]:
        """The header's alg (one a key verifies) and kid (a string, or None)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthenticated("malformed bearer token") from None
        except jwt.InvalidTokenError:  # PyJWT's own checks of kid and crit
            raise Unauthenticated(HEADER_REFUSED) from None
        algorithm, kid = header.get("alg"), header.get("kid")
        # No crit extension is implemented here, so RFC 7515 §4.1.11 says refuse.
        if "crit" in header or not isinstance(kid, str | None):
            raise Unauthenticated(HEADER_REFUSED)
        if not isinstance(algorithm, str) or algorithm not in self._keys.algorithms():
            accepted = ", ".join(sorted(self._keys.algorithms()))
            shown = echoed(algorithm) if isinstance(algorithm, str) else "(missing or not a string)"
            raise Unauthenticated(f"token algorithm {shown} is not accepted (accepted: {accepted})")
        return algorithm, kid

    def _checked_claims(self, token: str, candidates: list[VerificationKey]) -> dict[str, object]:
        for key in candidates[:-1]:  # several keys may share no kid: the last one reports
            try:
                return self._decode_with(token, key)
            except Unauthenticated as error:
                if "signature" not in str(error):
                    raise
        return self._decode_with(token, candidates[-1])

    def _decode_with(self, token: str, key: VerificationKey) -> dict[str, object]:
        p = self._policy
        required = ["exp", "sub", *(["iss"] if p.issuer else []), *(["aud"] if p.audience else [])]
        try:
            # With no audience configured, a token naming one is refused (not for us).
            return jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                issuer=p.issuer,
                audience=p.audience,
                leeway=p.leeway_s,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token signature is invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("token issuer is not accepted") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("token audience is not accepted") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token ({exc.__class__.__name__})") from None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class ServiceTokens:
    """Static service tokens, compared in constant time as SHA-256 digests."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._digests = [(name, _digest(token)) for name, token in tokens.items()]

    def service_for(self, token: str) -> str | None:
        presented = _digest(token)
        match = None
        for name, digest in self._digests:  # no early exit: same time for every entry
            if hmac.compare_digest(presented, digest):
                match = name
        return match


class Authenticator:
    def __init__(
        self,
        jwt_verifier: JwtVerifier,
        service_tokens: ServiceTokens,
        certificate_services: Mapping[str, str] | None = None,
    ) -> None:
        self._jwt = jwt_verifier
        self._services = service_tokens
        # Verified client-certificate identity (SAN or CN) -> service name.
        self._certificate_services = dict(certificate_services or {})

    def authenticate(
        self, metadata: Iterable[tuple[str, str | bytes]], peer_identities: Iterable[str] = ()
    ) -> Principal:
        headers = _credential_headers(metadata)
        bearer = headers.get(AUTHORIZATION)
        service_token = headers.get(SERVICE_TOKEN)
        on_behalf_of = headers.get(ON_BEHALF_OF)
        if bearer is not None and service_token is not None:
            raise Unauthenticated("send either authorization or x-service-token, not both")
        if service_token is not None:
            return self._service(service_token, on_behalf_of)
        if bearer is not None:
            if on_behalf_of is not None:
                raise PermissionDenied("x-on-behalf-of is honoured only for services")
            return self._jwt.verify(_bearer_token(bearer))
        service = self._service_of_certificate(peer_identities)
        if service is not None:
            return self._acting(service, on_behalf_of)
        raise Unauthenticated("missing credentials: send 'authorization: Bearer <JWT>' or 'x-service-token'")

    def _service_of_certificate(self, identities: Iterable[str]) -> str | None:
        for identity in identities:
            if identity in self._certificate_services:
                return self._certificate_services[identity]
        return None

    def _service(self, token: str, on_behalf_of: str | None) -> Principal:
        name = self._services.service_for(token)
        if name is None:
            raise Unauthenticated("unknown service token")
        return self._acting(name, on_behalf_of)

    def _acting(self, name: str, on_behalf_of: str | None) -> Principal:
        if on_behalf_of is None:
            return Principal(PrincipalKind.SERVICE, None, name, ALL_PERMISSIONS)
        if not is_valid_id(on_behalf_of):
            raise InvalidArgument([FieldViolation(ON_BEHALF_OF, f"must be a user id of {ID_RULE}")])
        return Principal(PrincipalKind.DELEGATED, on_behalf_of, name, ALL_PERMISSIONS)


def _credential_headers(metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    """The credential headers, each sent at most once: with two, which one a
    proxy or another reader would honour is anyone's guess, so neither is."""
    headers: dict[str, str] = {}
    for key, value in metadata:
        if key not in CREDENTIAL_HEADERS or not isinstance(value, str):
            continue
        if key in headers:
            if key == ON_BEHALF_OF:
                raise InvalidArgument([FieldViolation(ON_BEHALF_OF, "must be sent only once")])
            raise Unauthenticated(f"send {key} only once")
        headers[key] = value
    return headers


def _bearer_token(header: str) -> str:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <JWT>'")
    return token.strip()

"""Turns request metadata into a Principal: JWTs for end users, static tokens
for internal services. Failures raise Unauthenticated with a reason that never
echoes the credential."""

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from feedback.v1 import access_pb2
from feedback_service.auth.principal import ALL_PERMISSIONS, Principal, PrincipalKind
from feedback_service.domain.errors import (
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
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
# Verified tokens are remembered (until they expire) so a busy caller's token
# is checked once, not on every RPC.
TOKEN_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class JwtKeys:
    """Verification keys by algorithm; each algorithm is pinned to one key."""

    hs256_secret: str | None = None
    public_key_pem: bytes | None = None
    issuer: str | None = None
    audience: str | None = None

    def by_algorithm(self) -> dict[str, object]:
        keys: dict[str, object] = {}
        if self.hs256_secret:
            keys["HS256"] = self.hs256_secret
        if self.public_key_pem:
            public = load_pem_public_key(self.public_key_pem)
            if isinstance(public, rsa.RSAPublicKey):
                keys["RS256"] = public
            elif isinstance(public, ec.EllipticCurvePublicKey):
                keys["ES256"] = public
            else:
                raise ValueError("the JWT public key must be an RSA or EC key")
        return keys


def permissions_from_scope(scope: object) -> frozenset[int]:
    if scope is None:
        return ALL_PERMISSIONS  # no scope claim: every permission, as before
    if not isinstance(scope, str):
        raise Unauthenticated("token scope claim must be a space-separated string")
    return frozenset(SCOPE_PERMISSIONS[s] for s in scope.split() if s in SCOPE_PERMISSIONS)


class JwtVerifier:
    def __init__(self, keys: JwtKeys) -> None:
        self._settings = keys
        self._keys = keys.by_algorithm()
        self._cache: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        principal, expires = self._decode(token)
        if len(self._cache) >= TOKEN_CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = (principal, expires)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        if not self._keys:
            raise Unauthenticated("this server accepts no JWTs (no key is configured)")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.DecodeError:
            raise Unauthenticated("malformed bearer token") from None
        key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None:
            accepted = ", ".join(sorted(self._keys))
            raise Unauthenticated(f"token algorithm {algorithm!r} is not accepted (accepted: {accepted})")
        claims = self._checked_claims(token, key, algorithm)
        subject = claims["sub"]
        if not isinstance(subject, str) or not is_valid_id(subject):
            raise Unauthenticated(f"token sub must be a user id of {ID_RULE}")
        principal = Principal(PrincipalKind.USER, subject, None, permissions_from_scope(claims.get("scope")))
        return principal, float(claims["exp"])

    def _checked_claims(self, token: str, key: object, algorithm: str) -> dict:
        s = self._settings
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=s.issuer,
                audience=s.audience,
                # With no audience configured, a token naming one is refused (not for us).
                options={
                    "require": [
                        "exp",
                        "sub",
                        *(["iss"] if s.issuer else []),
                        *(["aud"] if s.audience else []),
                    ]
                },
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
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


def parse_service_tokens(spec: str) -> dict[str, str]:
    """`name=token,name2=token2` -> {name: token}."""
    tokens: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, token = entry.partition("=")
        if not sep or not name.strip() or not token.strip():
            raise ValueError("FEEDBACK_SERVICE_TOKENS entries must look like name=token")
        tokens[name.strip()] = token.strip()
    return tokens


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
    def __init__(self, jwt_verifier: JwtVerifier, service_tokens: ServiceTokens) -> None:
        self._jwt = jwt_verifier
        self._services = service_tokens

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> Principal:
        headers: dict[str, str] = {}
        for key, value in metadata:
            if key in (AUTHORIZATION, SERVICE_TOKEN, ON_BEHALF_OF) and isinstance(value, str):
                headers.setdefault(key, value)
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
        raise Unauthenticated("missing credentials: send 'authorization: Bearer <JWT>' or 'x-service-token'")

    def _service(self, token: str, on_behalf_of: str | None) -> Principal:
        name = self._services.service_for(token)
        if name is None:
            raise Unauthenticated("unknown service token")
        if on_behalf_of is None:
            return Principal(PrincipalKind.SERVICE, None, name, ALL_PERMISSIONS)
        if not is_valid_id(on_behalf_of):
            raise InvalidArgument([FieldViolation(ON_BEHALF_OF, f"must be a user id of {ID_RULE}")])
        return Principal(PrincipalKind.DELEGATED, on_behalf_of, name, ALL_PERMISSIONS)


def _bearer_token(header: str) -> str:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <JWT>'")
    return token.strip()


def mint_token(
    secret: str,
    user_id: str,
    *,
    ttl_s: int = 3600,
    scope: str | None = None,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """An HS256 token for a user, for trying the service by hand."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + ttl_s}
    for name, value in (("scope", scope), ("iss", issuer), ("aud", audience)):
        if value is not None:
            claims[name] = value
    return jwt.encode(claims, secret, algorithm="HS256")

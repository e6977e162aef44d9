"""JWT verification keys: an HS256 secret, a PEM public key and/or a JWKS
file. Each key is pinned to one algorithm, so a public key can never be used
as an HMAC secret. Key files are re-read when they change, so keys rotate
without a restart (publish old and new keys together in the JWKS for the
overlap)."""

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

log = logging.getLogger(__name__)
RELOAD_CHECK_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class VerificationKey:
    algorithm: str
    key: str | rsa.RSAPublicKey | ec.EllipticCurvePublicKey  # an HS256 secret, or a public key
    kid: str | None = None


def _pinned(public_key: object, kid: str | None = None) -> VerificationKey:
    """The key with the one algorithm it may verify."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return VerificationKey("RS256", public_key, kid)
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1":
        return VerificationKey("ES256", public_key, kid)
    raise ValueError("JWT public keys must be RSA (RS256) or EC P-256 (ES256)")


def keys_from_pem(data: bytes) -> list[VerificationKey]:
    return [_pinned(load_pem_public_key(data))]


def keys_from_jwks(data: bytes) -> list[VerificationKey]:
    """The usable signing keys of a JWKS. A key this service cannot use (HMAC,
    encryption, another curve or algorithm, malformed) is skipped with a
    warning; a file that is not a JWKS, or has no usable key, is a ValueError."""
    document = json.loads(data)
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError('a JWKS must be an object with a "keys" list')
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC"):
            continue  # HMAC ("oct") keys are never taken from a key file
        if entry.get("use", "sig") != "sig":
            continue
        try:
            key = _pinned(jwt.PyJWK(entry).key, entry.get("kid"))
            if entry.get("alg", key.algorithm) != key.algorithm:
                raise ValueError(f"declares alg {entry['alg']}, expected {key.algorithm}")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            log.warning("skipping JWKS key %r: %s", entry.get("kid"), exc)
            continue
        keys.append(key)
    if not keys:
        raise ValueError("the JWKS holds no usable RS256 or ES256 signing key")
    return keys


class _WatchedFile:
    """A key file, parsed again whenever its modification time or size changes."""

    def __init__(self, path: Path, parse: Callable[[bytes], list[VerificationKey]]) -> None:
        self.path = path
        self._parse = parse
        self._stamp: tuple[float, int] | None = None
        self.keys: list[VerificationKey] = []
        self.refresh()

    def refresh(self) -> bool:
        """Reloads if changed; returns whether the keys changed. A broken
        rewrite keeps the previous keys (and is logged)."""
        stat = self.path.stat()
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._stamp:
            return False
        try:
            keys = self._parse(self.path.read_bytes())
        except (ValueError, TypeError, jwt.PyJWTError, jwt.PyJWKError) as exc:
            if self._stamp is None:
                raise
            log.error("keeping the previous JWT keys: %s is invalid (%s)", self.path, exc)
            return False
        self._stamp, self.keys = stamp, keys
        if len(keys):
            log.info("loaded %d JWT key(s) from %s", len(keys), self.path)
        return True


class KeySet:
    def __init__(
        self,
        hs256_secret: str | None = None,
        public_key_file: Path | None = None,
        jwks_file: Path | None = None,
    ) -> None:
        self._static = [VerificationKey("HS256", hs256_secret)] if hs256_secret else []
        self._files = [_WatchedFile(public_key_file, keys_from_pem)] if public_key_file else []
        if jwks_file:
            self._files.append(_WatchedFile(jwks_file, keys_from_jwks))
        self._checked_at = time.monotonic()
        self._lock = threading.Lock()

    @property
    def empty(self) -> bool:
        return not self._static and not any(f.keys for f in self._files)

    def refresh_if_due(self) -> bool:
        """Re-reads changed key files at most once a second; True if keys changed."""
        now = time.monotonic()
        if not self._files or now - self._checked_at < RELOAD_CHECK_INTERVAL_S:
            return False
        with self._lock:
            self._checked_at = now
            changed = False
            for watched in self._files:
                try:
                    changed |= watched.refresh()
                except OSError as exc:
                    log.error("cannot read JWT key file %s: %s", watched.path, exc)
            return changed

    def algorithms(self) -> set[str]:
        return {key.algorithm for key in self._all()}

    def candidates(self, algorithm: str, kid: str | None) -> list[VerificationKey]:
        """Keys that may have signed a token with this header: same algorithm,
        and the same kid when both the token and the key name one."""
        return [
            key
            for key in self._all()
            if key.algorithm == algorithm and (kid is None or key.kid is None or key.kid == kid)
        ]

    def _all(self) -> list[VerificationKey]:
        return [*self._static, *(key for watched in self._files for key in watched.keys)]

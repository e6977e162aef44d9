"""JWT keys from a JWKS file: RS256 / ES256 chosen by kid, rotation while the
server runs, keys that must never verify, and clock leeway."""

import base64
import hashlib
import hmac
import json
import logging
import math
import os
import time
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from feedback.v1 import feedback_pb2 as pb
from tests.harness import (
    JWT_SECRET,
    bearer,
    rpc_error,
    running_server,
    server_settings,
    user_token,
    wait_until,
)

STATS = pb.GetFeedbackStatsRequest(thread_id="t-any", run_id="r-any")
ALGORITHMS = ["RS256", "ES256"]


@pytest.fixture(scope="module")
def keys() -> dict[str, list]:
    """Per algorithm, three private keys (old, new, stranger), made once."""
    return {
        "RS256": [rsa.generate_private_key(65537, 2048) for _ in range(3)],
        "ES256": [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)],
    }


def jwk(private_key, kid: str, **fields) -> dict:
    public_key = private_key.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        entry = jwt.algorithms.RSAAlgorithm.to_jwk(public_key, as_dict=True)
        algorithm = "RS256"
    else:
        entry = jwt.algorithms.ECAlgorithm.to_jwk(public_key, as_dict=True)
        algorithm = "ES256"
    return {**entry, "kid": kid, "alg": algorithm, **fields}


def write_jwks(path: Path, entries: list[dict] | None = None, *, text: str | None = None) -> None:
    """Rewrites the JWKS file and makes sure its (mtime, size) stamp changes."""
    before = path.stat() if path.exists() else None
    path.write_text(json.dumps({"keys": entries}) if text is None else text)
    after = path.stat()
    if before is not None and (after.st_mtime, after.st_size) == (before.st_mtime, before.st_size):
        os.utime(path, (after.st_atime, after.st_mtime + 1))


def wait_for_reload(client, caplog) -> None:
    """Returns once the server has read the rewritten key file, which it does
    on a call, at most once a second: calls until its log says it has (keys
    loaded, or kept because the file is invalid)."""
    caplog.set_level(logging.INFO, logger="feedback_service.auth.keys")

    def reloads() -> int:
        messages = [r.getMessage() for r in caplog.records if r.name == "feedback_service.auth.keys"]
        return sum(m.startswith(("loaded ", "keeping the previous JWT keys")) for m in messages)

    before = reloads()

    def reloaded() -> bool:
        accepted(client, user_token("anyone"))  # lets the server look at its key files
        return reloads() > before

    wait_until(reloaded, timeout_s=10)


def token(private_key, algorithm: str, kid: str | None, user_id: str = "alice", **claims) -> str:
    payload = {"sub": user_id, "exp": int(time.time()) + 600, **claims}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, private_key, algorithm=algorithm, headers=headers)


def hs256_by_hand(claims: dict, secret: bytes, kid: str | None = None) -> str:
    """An HS256 JWT signed with raw bytes (PyJWT refuses a PEM as an HMAC secret)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


def public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def accepted(client, jwt_token: str) -> bool:
    """True if the token authenticates; any other outcome than OK or
    UNAUTHENTICATED fails the test."""
    try:
        client.feedback.GetFeedbackStats(STATS, metadata=bearer(jwt_token), timeout=10)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (error.code(), error.details())
        return False
    return True


def refused(client, jwt_token: str, reason: str) -> None:
    error = rpc_error(client.feedback.GetFeedbackStats, STATS, metadata=bearer(jwt_token), timeout=10)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (error.code(), error.details())
    assert reason in error.details()


def jwks_settings(tmp_path: Path, entries: list[dict], **overrides):
    jwks_file = tmp_path / "jwks.json"
    write_jwks(jwks_file, entries)
    return jwks_file, server_settings(tmp_path, jwt_secret=None, jwt_jwks_file=jwks_file, **overrides)


# --- kid --------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_key_is_chosen_by_kid(tmp_path, keys, algorithm):
    first, second, stranger = keys[algorithm]
    _, settings = jwks_settings(tmp_path, [jwk(first, "k1"), jwk(second, "k2")])
    with running_server(settings) as (_, client):
        assert accepted(client, token(first, algorithm, "k1"))
        assert accepted(client, token(second, algorithm, "k2"))
        # Signed by one published key but naming the other: the named key decides.
        refused(client, token(first, algorithm, "k2"), "signature")
        refused(client, token(first, algorithm, "unknown"), "no key with kid 'unknown'")
        refused(client, token(stranger, algorithm, "k1"), "signature")
        # No kid: any published key of the algorithm may have signed it.
        assert accepted(client, token(second, algorithm, None))
        refused(client, token(stranger, algorithm, None), "signature")


@pytest.mark.parametrize(
    ("kid", "shown"),
    [
        ("k" * 8000, "'" + "k" * 64 + "\u2026'"),
        ("k1\n2026-01-01 00:00:00,000 INFO 1 forged: {}", "'k1\\n2026-01-01 00:00:00,000 INFO 1 forged: {}'"),
        ("\x1b[2J\x00\x85\u2028", "'\\x1b[2J\\x00\\x85\\u2028'"),
    ],
    ids=["long", "newline", "controls"],
)
def test_an_unknown_kid_is_echoed_cut_and_escaped(tmp_path, keys, kid, shown):
    first = keys["RS256"][0]
    _, settings = jwks_settings(tmp_path, [jwk(first, "k1")])
    with running_server(settings) as (_, client):
        error = rpc_error(
            client.feedback.GetFeedbackStats, STATS, metadata=bearer(token(first, "RS256", kid))
        )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert f"no key with kid {shown}" in error.details()
    assert len(error.details()) < 100
    assert error.details().isprintable()


def test_rsa_and_ec_keys_side_by_side(tmp_path, keys):
    rsa_key, ec_key = keys["RS256"][0], keys["ES256"][0]
    _, settings = jwks_settings(tmp_path, [jwk(rsa_key, "rsa"), jwk(ec_key, "ec")])
    with running_server(settings) as (_, client):
        assert accepted(client, token(rsa_key, "RS256", "rsa"))
        assert accepted(client, token(ec_key, "ES256", "ec"))
        # Each key verifies only its own algorithm.
        refused(client, token(rsa_key, "RS256", "ec"), "no key with kid 'ec' for RS256")
        refused(client, token(ec_key, "ES256", "rsa"), "no key with kid 'rsa' for ES256")
        refused(client, token(rsa_key, "RS512", "rsa"), "algorithm 'RS512' is not accepted")


# --- rotation ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rotation_without_a_restart(tmp_path, keys, algorithm, caplog):
    old, new, _ = keys[algorithm]
    jwks_file, settings = jwks_settings(tmp_path, [jwk(old, "old")])
    with running_server(settings) as (_, client):
        old_token = token(old, algorithm, "old")
        new_token = token(new, algorithm, "new", user_id="bob")
        assert accepted(client, old_token)  # now also remembered by the server
        refused(client, new_token, "no key with kid 'new'")

        # Overlap: both keys are published, both verify.
        write_jwks(jwks_file, [jwk(old, "old"), jwk(new, "new")])
        wait_for_reload(client, caplog)
        assert accepted(client, new_token)
        assert accepted(client, old_token)
        assert accepted(client, token(old, algorithm, "old", user_id="carol"))

        # The old key is withdrawn: its tokens stop at once, even one verified before.
        write_jwks(jwks_file, [jwk(new, "new")])
        wait_for_reload(client, caplog)
        refused(client, old_token, "no key with kid 'old'")
        refused(client, token(old, algorithm, "old", user_id="dave"), "no key with kid 'old'")
        # A token naming no kid does not get around the withdrawal.
        refused(client, token(old, algorithm, None), "signature")
        assert accepted(client, new_token)


def test_a_broken_rewrite_keeps_the_previous_keys(tmp_path, keys, caplog):
    old, new, _ = keys["RS256"]
    jwks_file, settings = jwks_settings(tmp_path, [jwk(old, "old")])
    with running_server(settings) as (_, client):
        old_token = token(old, "RS256", "old")
        assert accepted(client, old_token)

        # A half-written file is not JSON: the keys loaded before stay in force.
        full = json.dumps({"keys": [jwk(new, "new")]})
        write_jwks(jwks_file, text=full[: len(full) // 2])
        wait_for_reload(client, caplog)
        assert accepted(client, old_token)
        assert accepted(client, token(old, "RS256", "old", user_id="bob"))  # not only the cached one
        refused(client, token(new, "RS256", "new"), "no key with kid 'new'")

        # Once the file is whole again it is taken.
        write_jwks(jwks_file, text=full)
        wait_for_reload(client, caplog)
        assert accepted(client, token(new, "RS256", "new"))
        refused(client, old_token, "no key with kid 'old'")


@pytest.mark.parametrize(
    "broken",
    [
        "[]",
        json.dumps({"keys": [{"kty": "RSA", "kid": "new"}]}),
    ],
    ids=["not-an-object", "key-without-its-numbers"],
)
def test_a_rewrite_that_is_json_but_not_a_usable_jwks_keeps_the_previous_keys(tmp_path, keys, broken, caplog):
    old = keys["RS256"][0]
    jwks_file, settings = jwks_settings(tmp_path, [jwk(old, "old")])
    with running_server(settings) as (_, client):
        old_token = token(old, "RS256", "old")
        assert accepted(client, old_token)
        write_jwks(jwks_file, text=broken)
        wait_for_reload(client, caplog)
        client.feedback.GetFeedbackStats(STATS, metadata=bearer(old_token), timeout=10)


# --- keys that must never verify --------------------------------------------------------


def test_hmac_keys_in_the_jwks_are_never_used(tmp_path, keys):
    rsa_key = keys["RS256"][0]
    hmac_secret = b"an-hmac-key-published-in-the-jwks-0123456789"
    oct_key = {
        "kty": "oct",
        "kid": "hmac",
        "alg": "HS256",
        "k": base64.urlsafe_b64encode(hmac_secret).rstrip(b"=").decode(),
    }
    encryption_key = jwk(keys["RS256"][1], "enc", use="enc")
    claims = {"sub": "alice", "exp": int(time.time()) + 600}
    forged = jwt.encode(claims, hmac_secret, algorithm="HS256", headers={"kid": "hmac"})

    _, settings = jwks_settings(tmp_path, [oct_key, jwk(rsa_key, "rsa"), encryption_key])
    with running_server(settings) as (_, client):
        assert accepted(client, token(rsa_key, "RS256", "rsa"))
        refused(client, forged, "algorithm 'HS256' is not accepted")
        # A key published for encryption does not verify signatures either.
        refused(client, token(keys["RS256"][1], "RS256", "enc"), "no key with kid 'enc'")

    # With an HS256 secret configured as well, HS256 verifies with that secret only.
    settings = server_settings(
        tmp_path / "with-secret", jwt_secret=JWT_SECRET, jwt_jwks_file=tmp_path / "jwks.json"
    )
    with running_server(settings) as (_, client):
        assert accepted(client, user_token("alice"))
        refused(client, forged, "signature")


def test_the_public_key_as_an_hmac_secret_is_refused(tmp_path, keys):
    rsa_key = keys["RS256"][0]
    _, settings = jwks_settings(tmp_path, [jwk(rsa_key, "rsa")])
    claims = {"sub": "alice", "exp": int(time.time()) + 600}
    jwk_json = json.dumps(jwk(rsa_key, "rsa")).encode()
    with running_server(settings) as (_, client):
        for secret in (public_pem(rsa_key), jwk_json):
            for kid in ("rsa", None):
                refused(client, hs256_by_hand(claims, secret, kid), "algorithm 'HS256' is not accepted")

    # Even where HS256 is accepted (a secret is configured), the public key is no secret.
    settings = server_settings(
        tmp_path / "with-secret", jwt_secret=JWT_SECRET, jwt_jwks_file=tmp_path / "jwks.json"
    )
    with running_server(settings) as (_, client):
        for kid in ("rsa", None):
            refused(client, hs256_by_hand(claims, public_pem(rsa_key), kid), "signature")


# --- leeway -----------------------------------------------------------------------------


def bearer_token(**claims) -> str:
    return jwt.encode({"sub": "alice", **claims}, JWT_SECRET, algorithm="HS256")


def test_leeway_of_30_seconds(tmp_path, keys):
    rsa_key = keys["RS256"][0]
    _, settings = jwks_settings(tmp_path, [jwk(rsa_key, "rsa")], jwt_leeway_s=30)
    now = int(time.time())
    with running_server(settings) as (_, client):
        assert accepted(client, token(rsa_key, "RS256", "rsa", exp=now - 10))
        refused(client, token(rsa_key, "RS256", "rsa", exp=now - 60), "expired")
        assert accepted(client, token(rsa_key, "RS256", "rsa", nbf=now + 10, iat=now))
        refused(client, token(rsa_key, "RS256", "rsa", nbf=now + 60), "not valid yet")
        assert accepted(client, token(rsa_key, "RS256", "rsa", iat=now + 10))
        refused(client, token(rsa_key, "RS256", "rsa", iat=now + 60), "not valid yet")


def test_no_leeway(tmp_path):
    now = int(time.time())
    with running_server(server_settings(tmp_path, jwt_leeway_s=0)) as (_, client):
        refused(client, bearer_token(exp=now - 1), "expired")
        refused(client, bearer_token(exp=now + 600, nbf=now + 10), "not valid yet")
        assert accepted(client, bearer_token(exp=now + 600, nbf=now - 1))


def test_a_remembered_token_still_expires(tmp_path):
    with running_server(server_settings(tmp_path, jwt_leeway_s=0)) as (_, client):
        short_lived = bearer_token(exp=math.ceil(time.time() + 0.5))  # at least 0.5 s to live
        assert accepted(client, short_lived)
        expires = jwt.decode(short_lived, options={"verify_signature": False})["exp"]
        # Time is the subject: the token is refused once its expiry has passed.
        time.sleep(max(0.0, expires - time.time()) + 0.2)
        refused(client, short_lived, "expired")

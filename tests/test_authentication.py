"""Credentials: JWT edge cases, service tokens and delegation, on a real server."""

import base64
import hashlib
import hmac
import json
import logging
import math
import time

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from feedback.v1 import feedback_pb2 as pb
from tests.harness import (
    JWT_SECRET,
    SERVICE_TOKEN,
    as_service,
    as_service_for,
    as_user,
    bad_fields,
    bearer,
    hand_signed,
    register,
    rpc_error,
    running_server,
    server_settings,
    user_token,
)

STATS = pb.GetFeedbackStatsRequest(thread_id="t-any", run_id="r-any")


def stats_error(client, metadata) -> grpc.RpcError:
    return rpc_error(client.feedback.GetFeedbackStats, STATS, metadata=metadata)


def assert_unauthenticated(client, metadata, reason: str) -> None:
    error = stats_error(client, metadata)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason in error.details()
    for _, value in metadata:  # never echo a credential
        secret = value.split()[-1] if value.strip() else ""
        assert len(secret) < 12 or secret not in error.details()


def test_a_valid_token_authenticates(sqlite_client):
    assert sqlite_client.feedback.GetFeedbackStats(STATS, metadata=as_user("alice")).run_id == "r-any"


def test_missing_credentials(sqlite_client):
    assert_unauthenticated(sqlite_client, [], "missing credentials")


def test_expired_token(sqlite_client):
    assert_unauthenticated(sqlite_client, bearer(user_token("alice", ttl_s=-5)), "expired")


def test_wrong_signature(sqlite_client):
    assert_unauthenticated(
        sqlite_client, bearer(user_token("alice", secret="another-secret-" * 3)), "signature"
    )


def test_alg_none_is_refused(sqlite_client):
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none")
    assert_unauthenticated(sqlite_client, bearer(token), "algorithm 'none' is not accepted")


def test_other_hmac_algorithms_are_refused(sqlite_client):
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS512")
    assert_unauthenticated(sqlite_client, bearer(token), "algorithm 'HS512' is not accepted")


def test_missing_sub(sqlite_client):
    assert_unauthenticated(sqlite_client, bearer(user_token(None)), "'sub'")


def test_missing_exp(sqlite_client):
    token = jwt.encode({"sub": "alice"}, JWT_SECRET, algorithm="HS256")
    assert_unauthenticated(sqlite_client, bearer(token), "'exp'")


def test_sub_must_be_a_valid_user_id(sqlite_client):
    assert_unauthenticated(sqlite_client, bearer(user_token("alice smith")), "sub must be a user id")


@pytest.mark.parametrize("header", ["Basic YWxpY2U6cHc=", "Bearer", "Bearer ", "eyJhbGciOi"])
def test_malformed_authorization_header(sqlite_client, header):
    assert_unauthenticated(sqlite_client, [("authorization", header)], "Bearer <JWT>")


def test_garbage_token(sqlite_client):
    assert_unauthenticated(sqlite_client, bearer("abc.def.ghi"), "malformed bearer token")


def test_unknown_service_token(sqlite_client):
    assert_unauthenticated(sqlite_client, [("x-service-token", SERVICE_TOKEN + "x")], "unknown service token")


def test_two_kinds_of_credentials_are_refused(sqlite_client):
    assert_unauthenticated(sqlite_client, [*as_user("alice"), *as_service()], "not both")


def test_users_cannot_claim_to_act_for_others(sqlite_client):
    error = stats_error(sqlite_client, [*as_user("alice"), ("x-on-behalf-of", "bob")])
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_on_behalf_of_must_be_a_valid_user_id(sqlite_client):
    error = stats_error(sqlite_client, as_service_for("bob smith"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["x-on-behalf-of"]


def test_a_token_without_scope_holds_every_permission(sqlite_client):
    register(sqlite_client, "t1", "alice", ["r1"])
    alice = as_user("alice")
    created = sqlite_client.feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1), metadata=alice
    )
    request = pb.DeleteFeedbackRequest(thread_id="t1", run_id="r1", feedback_id=created.feedback_id)
    assert sqlite_client.feedback.DeleteFeedback(request, metadata=alice).success


def test_a_scoped_token_holds_only_its_scopes(sqlite_client):
    register(sqlite_client, "t1", "alice", ["r1"])
    reader = as_user("alice", scope="threads:read")
    assert sqlite_client.feedback.GetFeedbackStats(STATS, metadata=reader).total == 0
    error = rpc_error(
        sqlite_client.feedback.CreateFeedback,
        pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1),
        metadata=reader,
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "threads:write" in error.details()
    assert stats_error(sqlite_client, as_user("alice", scope="")).code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("separator", ["\u00a0", "\u2003", "\t", "\n", "\r\n"])
def test_scope_tokens_are_separated_by_the_space_character_only(sqlite_client, separator):
    # RFC 6749 §3.3: anything but %x20 belongs to the token, so this is one unknown scope.
    register(sqlite_client, "t1", "alice", ["r1"])
    metadata = as_user("alice", scope=f"threads:read{separator}threads:write")
    error = rpc_error(
        sqlite_client.feedback.CreateFeedback,
        pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1),
        metadata=metadata,
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stats_error(sqlite_client, metadata).code() == grpc.StatusCode.PERMISSION_DENIED


def test_scope_tokens_may_be_separated_by_several_spaces(sqlite_client):
    register(sqlite_client, "t1", "alice", ["r1"])
    metadata = as_user("alice", scope="  threads:read   threads:write ")
    created = sqlite_client.feedback.CreateFeedback(
        pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1), metadata=metadata
    )
    assert created.rating == 1


# --- headers and claims of odd type or size ------------------------------------------

VALID_CLAIMS = {"sub": "alice", "exp": int(time.time()) + 3600}
# Each refused as UNAUTHENTICATED before the signature matters, whatever signs it.
ODD_HEADERS = [
    {"alg": "HS256", "kid": 1},
    {"alg": "HS256", "kid": ["a", "b"]},
    {"alg": "HS256", "kid": None},
    {"alg": "HS256", "crit": []},
    {"alg": "HS256", "crit": "b64"},
    {"alg": "HS256", "crit": [1]},
    {"alg": "HS256", "crit": ["exp"], "exp": 1},
    {"alg": "HS256", "crit": ["b64"], "b64": True},
    {"alg": "HS256", "crit": ["b64"], "b64": False},
    {"alg": "HS256", "crit": ["x\n2026-01-01 00:00:00,000 INFO 1 forged: {}"]},
    {"alg": 1},
    {"alg": ["HS256"]},
    {"alg": None},
    {"kid": "k"},
]
# Each validly signed with the server's secret.
ODD_CLAIMS = [
    {"exp": 10**400},
    {"exp": -(10**400)},
    {"exp": 1e300},
    {"exp": math.inf},
    {"exp": math.nan},
    {"exp": str(VALID_CLAIMS["exp"])},
    {"exp": [VALID_CLAIMS["exp"]]},
    {"exp": {"at": VALID_CLAIMS["exp"]}},
    {"exp": True},
    {"exp": None},
    {"nbf": "0"},
    {"nbf": 10**400},
    {"nbf": math.nan},
    {"nbf": [0]},
    {"iat": -math.inf},
    {"iat": 10**400},
    {"iat": "0"},
    {"iat": {}},
    {"sub": 1},
    {"sub": ["alice"]},
    {"sub": {"id": "alice"}},
    {"sub": None},
    {"sub": "a" * 10_000},
    {"scope": None},
    {"scope": 1},
    {"scope": ["threads:read"]},
    {"aud": 1},
    {"aud": [1, None]},
    {"aud": {"x": 1}},
    {"jti": 1},
]


def short_id(value: object) -> str:
    return repr(value)[:40]


@pytest.fixture
def no_traceback(caplog):
    """Fails the test if the server logged an exception (an INTERNAL's traceback)."""
    yield
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def assert_refused_briefly(client, token: str) -> None:
    error = stats_error(client, bearer(token))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (error.code(), error.details())
    assert len(error.details()) < 200


@pytest.mark.parametrize("header", ODD_HEADERS, ids=short_id)
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "badly-signed"])
def test_headers_of_odd_type_are_unauthenticated(sqlite_client, no_traceback, header, signed):
    token = hand_signed(header, VALID_CLAIMS, secret=JWT_SECRET if signed else "another-secret")
    assert_refused_briefly(sqlite_client, token)


@pytest.mark.parametrize("claims", ODD_CLAIMS, ids=short_id)
def test_claims_of_odd_type_or_size_are_unauthenticated(sqlite_client, no_traceback, claims):
    assert_refused_briefly(sqlite_client, hand_signed({"alg": "HS256"}, {**VALID_CLAIMS, **claims}))


def test_a_token_with_numeric_dates_and_unknown_fields_is_accepted(sqlite_client):
    # The checks above are about types, not about fields this server ignores.
    header = {"alg": "HS256", "typ": "JWT", "kid": "any", "x-extra": [1, {"a": None}]}
    now = time.time()
    claims = {**VALID_CLAIMS, "exp": now + 60.5, "nbf": now - 1.5, "iat": int(now), "extra": {"b": [2]}}
    assert sqlite_client.feedback.GetFeedbackStats(STATS, metadata=bearer(hand_signed(header, claims)))


@pytest.mark.parametrize(
    ("algorithm", "shown"),
    [
        ("A" * 8000, "'" + "A" * 64 + "\u2026'"),
        (
            "HS256\n2026-01-01 00:00:00,000 INFO 1 forged: {}",
            "'HS256\\n2026-01-01 00:00:00,000 INFO 1 forged: {}'",
        ),
        ("\x1b[2J\x00\x85\u2028\x7f", "'\\x1b[2J\\x00\\x85\\u2028\\x7f'"),
    ],
    ids=["long", "newline", "controls"],
)
def test_an_unaccepted_algorithm_is_echoed_cut_and_escaped(sqlite_client, algorithm, shown):
    error = stats_error(sqlite_client, bearer(hand_signed({"alg": algorithm}, VALID_CLAIMS)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert f"token algorithm {shown} is not accepted" in error.details()
    assert len(error.details()) < 120
    assert error.details().isprintable()


# --- credentials sent twice ------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [
        [*as_user("alice"), *as_user("alice")],
        [*as_user("alice"), *as_user("bob")],
        [*as_service(), *as_service()],
        [*as_service(), ("x-service-token", "another-token")],
    ],
    ids=["same-jwt", "two-jwts", "same-service-token", "two-service-tokens"],
)
def test_a_repeated_credential_is_refused(sqlite_client, metadata):
    assert_unauthenticated(sqlite_client, metadata, "only once")


@pytest.mark.parametrize("second", ["alice", "bob"])
def test_a_repeated_on_behalf_of_is_invalid(sqlite_client, second):
    error = stats_error(sqlite_client, [*as_service_for("alice"), ("x-on-behalf-of", second)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["x-on-behalf-of"]


# --- issuer and audience -------------------------------------------------------------


@pytest.fixture
def strict_client(tmp_path):
    settings = server_settings(tmp_path, jwt_issuer="https://issuer.example", jwt_audience="feedback")
    with running_server(settings) as (_, client):
        yield client


def test_issuer_and_audience_are_enforced_when_configured(strict_client):
    good = {"iss": "https://issuer.example", "aud": "feedback"}
    assert (
        strict_client.feedback.GetFeedbackStats(STATS, metadata=bearer(user_token("alice", **good))).total
        == 0
    )
    assert_unauthenticated(
        strict_client, bearer(user_token("alice", **{**good, "iss": "https://evil.example"})), "issuer"
    )
    assert_unauthenticated(strict_client, bearer(user_token("alice", **{**good, "aud": "other"})), "audience")
    assert_unauthenticated(strict_client, bearer(user_token("alice", aud="feedback")), "'iss'")
    assert_unauthenticated(strict_client, bearer(user_token("alice", iss="https://issuer.example")), "'aud'")


def test_audience_is_refused_when_none_is_configured(sqlite_client):
    assert_unauthenticated(sqlite_client, bearer(user_token("alice", aud="someone-else")), "audience")


# --- asymmetric keys -----------------------------------------------------------------


def hs256_with_raw_key(claims: dict, key: bytes) -> str:
    """An HS256 JWT signed by hand, as an attacker holding the public key would."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


def public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("algorithm", "make_key"),
    [
        ("RS256", lambda: rsa.generate_private_key(65537, 2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    ],
)
def test_public_key_tokens_and_algorithm_confusion(tmp_path, algorithm, make_key):
    key, stranger = make_key(), make_key()
    key_file = tmp_path / "jwt.pub"
    key_file.write_bytes(public_pem(key))
    settings = server_settings(tmp_path, jwt_secret=None, jwt_public_key_file=key_file)
    claims = {"sub": "alice", "exp": int(time.time()) + 60}
    with running_server(settings) as (_, client):
        token = jwt.encode(claims, key, algorithm=algorithm)
        assert client.feedback.GetFeedbackStats(STATS, metadata=bearer(token)).run_id == "r-any"
        assert_unauthenticated(client, bearer(jwt.encode(claims, stranger, algorithm=algorithm)), "signature")
        # The public key used as an HMAC secret must never verify.
        token = hs256_with_raw_key(claims, public_pem(key))
        assert_unauthenticated(client, bearer(token), "algorithm 'HS256' is not accepted")

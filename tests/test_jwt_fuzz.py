"""JWT fuzzing through a real channel: headers and claims whose values are of
every JSON type and size, signed with the server's own secret, another key,
or a broken signature. Tokens are built by hand, so fields like alg, kid and
crit are exactly what was drawn.

Every answer must be UNAUTHENTICATED, or, only for a token that really is
valid, OK (PERMISSION_DENIED when its scope lacks threads:read). The reason is
short and printable, and the server never logs an error or a traceback.
"""

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import assume, example, given, note, settings
from hypothesis import strategies as st

from feedback.v1 import feedback_pb2 as pb
from tests.harness import JWT_SECRET, Client, bearer, hand_signed, running_server, server_settings

Code = grpc.StatusCode
STATS = pb.GetFeedbackStatsRequest(thread_id="t-any", run_id="r-any")
# Small: the suite runs in CI. One server serves every example of a property.
EXAMPLES = 120
FUZZ = settings(max_examples=EXAMPLES, deadline=None)
MAX_REASON = 200
MAX_TOKEN = 12_000  # the server takes 16 KiB of metadata
# C0, DEL, C1, and the Unicode line and paragraph separators.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
USER_ID = re.compile(r"[A-Za-z0-9._:@|-]{1,128}")  # the README's id rule, not the server's code
LATEST_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z
NOW = int(time.time())
# Header fields and claims that the server or PyJWT reads: extras avoid them.
READ_HEADER = {"alg", "kid", "crit", "b64"}
READ_CLAIMS = {"sub", "exp", "nbf", "iat", "scope", "aud", "iss", "jti"}


class ErrorRecords(logging.Handler):
    """Collects what the in-process server logs at ERROR: an INTERNAL's traceback."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[Client, ErrorRecords]]:
    errors = ErrorRecords()
    logging.getLogger().addHandler(errors)
    try:
        with running_server(server_settings(tmp_path_factory.mktemp("jwt-fuzz"))) as (_, client):
            yield client, errors
    finally:
        logging.getLogger().removeHandler(errors)


# --- JSON values of every type -------------------------------------------------------------

integers = st.one_of(
    st.integers(),
    st.integers(NOW - 10**6, NOW + 10**6),
    st.sampled_from([0, -1, 2**31, 2**63, 2**64, LATEST_NUMERIC_DATE + 1, 10**400, -(10**400)]),
)
texts = st.one_of(
    st.text(max_size=12),
    st.text(st.sampled_from("\n\r\t\x00\x1b\x7f\x85\u2028\u2029 a{}\"'\\"), max_size=12),
    st.integers(65, 1500).map(lambda n: "k" * n),
)
scalars = st.one_of(st.none(), st.booleans(), integers, st.floats(), texts)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


def extras(reserved: set[str]) -> st.SearchStrategy[dict]:
    return st.dictionaries(
        st.text(max_size=8).filter(lambda name: name not in reserved), json_values, max_size=3
    )


def mostly(usual: st.SearchStrategy) -> st.SearchStrategy:
    """Usual values three times in four, any JSON value otherwise."""
    return st.one_of(usual, usual, usual, json_values)


def json_object(fields: dict, required: tuple[str, ...], reserved: set[str]) -> st.SearchStrategy[dict]:
    """Objects with the required fields, any of the others, and a few extras."""
    named = st.fixed_dictionaries(
        {name: fields[name] for name in required},
        optional={name: value for name, value in fields.items() if name not in required},
    )
    return st.builds(lambda fields, extra: {**extra, **fields}, named, extras(reserved))


# --- headers, claims and signatures ----------------------------------------------------------

HEADER_FIELDS = {
    "alg": mostly(st.sampled_from(["HS256", "none", "HS512", "RS256", "ES256", "hs256", ""])),
    "kid": texts | json_values,
    "typ": st.just("JWT") | json_values,
    "crit": st.lists(st.sampled_from(["b64", "exp", "kid", "x\ny"]), max_size=2) | json_values,
    "b64": st.booleans() | json_values,
}
CLAIMS = {  # mostly well-formed, so that the later checks are reached too
    "sub": mostly(st.sampled_from(["alice", "bob"])),
    "exp": mostly(st.integers(NOW + 60, NOW + 10**6) | st.floats(NOW + 60, NOW + 10**6)),
    "nbf": mostly(st.integers(0, NOW - 60)),
    "iat": mostly(st.integers(0, NOW - 60)),
    "scope": mostly(st.sampled_from(["threads:read", "threads:write", "", "threads:read\tthreads:write"])),
    "aud": mostly(st.sampled_from(["", []])),
    "iss": json_values,
    "jti": mostly(texts),
}
signings = st.sampled_from(["secret", "secret", "wrong-key", "broken", "none"])


def token_for(header: object, payload: object, signing: str) -> str:
    if signing == "wrong-key":
        return hand_signed(header, payload, secret=JWT_SECRET + "x")
    token = hand_signed(header, payload)
    if signing == "broken":  # another signature of the right length
        head, _, signature = token.rpartition(".")
        return f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    if signing == "none":
        return token.rpartition(".")[0] + "."
    return token


# --- what a valid token needs ------------------------------------------------------------------


def is_numeric_date(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0 <= value <= LATEST_NUMERIC_DATE


def may_be_valid(header: object, payload: object, signing: str) -> bool:
    """Conditions every valid token meets (False: the server must refuse it)."""
    if signing != "secret" or not isinstance(header, dict) or not isinstance(payload, dict):
        return False
    if header.get("alg") != "HS256" or "crit" in header or header.get("b64") is False:
        return False
    if "kid" in header and not isinstance(header["kid"], str):
        return False
    sub, exp = payload.get("sub"), payload.get("exp")
    if (
        not (isinstance(sub, str) and USER_ID.fullmatch(sub))
        or not is_numeric_date(exp)
        or exp <= time.time()
    ):
        return False
    for name in ("nbf", "iat"):
        if name in payload and not (is_numeric_date(payload[name]) and payload[name] <= time.time()):
            return False
    if "scope" in payload and not isinstance(payload["scope"], str):
        return False
    if "jti" in payload and not isinstance(payload["jti"], str):
        return False
    return not payload.get("aud")  # no audience is configured: a token naming one is not for us


def reads(payload: dict) -> bool:
    return "scope" not in payload or "threads:read" in payload["scope"].split(" ")


def call(client: Client, token: str) -> tuple[Code, str]:
    try:
        client.feedback.GetFeedbackStats(STATS, metadata=bearer(token), timeout=10)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return Code.OK, ""


def check(server, header: object, payload: object, signing: str, seen: Counter) -> None:
    client, errors = server
    before = len(errors.records)
    token = token_for(header, payload, signing)
    assume(len(token) < MAX_TOKEN)  # larger metadata is RESOURCE_EXHAUSTED, tested elsewhere
    code, reason = call(client, token)
    note(f"{signing} {header!r:.500} {payload!r:.500} -> {code.name}: {reason!r}")
    seen[code.name] += 1
    if code == Code.UNAUTHENTICATED:
        assert reason and len(reason) < MAX_REASON and not CONTROL.search(reason), reason
    else:
        assert code in (Code.OK, Code.PERMISSION_DENIED), (code, reason)
        assert may_be_valid(header, payload, signing), f"{code.name} for a token that is not valid"
        assert (code == Code.OK) == reads(payload)
    assert len(errors.records) == before, errors.records[before].getMessage()


# --- the properties ------------------------------------------------------------------------------


def test_fuzzed_headers_are_refused_cleanly(server):
    seen: Counter = Counter()
    valid = {"sub": "alice", "exp": NOW + 3600}

    @FUZZ
    @given(header=mostly(json_object(HEADER_FIELDS, ("alg",), READ_HEADER)), signing=signings)
    @example(header={"alg": "HS256", "kid": 1}, signing="none")  # each was INTERNAL once
    @example(header={"alg": "HS256", "crit": []}, signing="wrong-key")
    @example(header={"alg": "k" * 3000}, signing="secret")  # and this was echoed whole
    def property_(header, signing):
        check(server, header, valid, signing, seen)

    property_()
    print(f"\nstatuses: {dict(seen)}")
    assert seen[Code.UNAUTHENTICATED.name] > EXAMPLES // 2, seen


def test_fuzzed_claims_are_refused_cleanly(server):
    seen: Counter = Counter()

    @FUZZ
    @given(payload=mostly(json_object(CLAIMS, ("sub", "exp"), READ_CLAIMS)), signing=signings)
    @example(payload={"sub": "alice", "exp": 10**400}, signing="secret")  # was INTERNAL once
    def property_(payload, signing):
        check(server, {"alg": "HS256", "typ": "JWT"}, payload, signing, seen)

    property_()
    print(f"\nstatuses: {dict(seen)}")
    assert seen[Code.UNAUTHENTICATED.name] > EXAMPLES // 2, seen


def test_fuzzed_headers_and_claims_together(server):
    seen: Counter = Counter()

    @FUZZ
    @given(
        header=json_object(HEADER_FIELDS, (), READ_HEADER),
        payload=json_object(CLAIMS, (), READ_CLAIMS),
        signing=signings,
    )
    def property_(header, payload, signing):
        check(server, header, payload, signing, seen)

    property_()
    print(f"\nstatuses: {dict(seen)}")


@FUZZ
@given(header_extra=extras(READ_HEADER), claims_extra=extras(READ_CLAIMS))
def test_fields_the_server_does_not_read_never_refuse_a_valid_token(server, header_extra, claims_extra):
    header = {**header_extra, "alg": "HS256"}
    payload = {**claims_extra, "sub": "alice", "exp": NOW + 3600}
    assert call(server[0], hand_signed(header, payload)) == (Code.OK, "")

"""Hostile input through a real channel: arbitrary field values and credentials
sent to every RPC, oversize messages and metadata, and a flood of concurrent
calls. Every answer must be OK or a documented client error, and nothing a
refused call does may change the database.

Requests are built from the message descriptors and the RPC list from the
service descriptors, so a new RPC or a new field is covered without changes
here (a field of a type not handled below fails the test loudly).
"""

import base64
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from feedback.v1 import feedback_pb2 as pb
from feedback_service.config import Settings
from feedback_service.domain.pagination import encode_page_token
from feedback_service.domain.validation import DEFAULT_TAGS
from tests.harness import (
    CLIENT_ERRORS,
    JWT_SECRET,
    METHODS,
    READ_ONLY,
    SEED_PAIRS,
    SEED_RUNS,
    SEED_THREADS,
    SERVICE_TOKEN,
    USERS,
    SeededWorld,
    ServerThread,
    as_service,
    as_service_for,
    as_user,
    bad_fields,
    bearer,
    caller_for,
    finish_stream,
    inspect_database,
    running_server,
    server_settings,
    user_token,
)

Code = grpc.StatusCode
CALL_TIMEOUT_S = 20

KNOWN_IDS = [*SEED_THREADS, *SEED_RUNS, *USERS, "m-1", "m-2", "t-nobody", "r-nobody"]


@dataclass
class World(SeededWorld):
    server: ServerThread
    settings: Settings


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One server on SQLite for the whole module, seeded."""
    data_dir: Path = tmp_path_factory.mktemp("hostile")
    settings_ = server_settings(data_dir)
    with running_server(settings_) as (server, client):
        db = inspect_database(settings_.effective_database_url())
        try:
            world = World(client, db, server, settings_)
            world.reseed()
            change_log_id[:] = [db.execute_sql("SELECT log_id FROM feedback_change_log").fetchone()[0]]
            yield world
        finally:
            db.close()


# --- calling any RPC by path -----------------------------------------------------------

_stubs: dict[tuple[grpc.Channel, str], grpc.UnaryUnaryMultiCallable | grpc.UnaryStreamMultiCallable] = {}


def stub(channel: grpc.Channel, path: str) -> grpc.UnaryUnaryMultiCallable | grpc.UnaryStreamMultiCallable:
    key = (channel, path)
    if key not in _stubs:
        method = METHODS[path]
        kind = channel.unary_stream if method.server_streaming else channel.unary_unary
        _stubs[key] = kind(
            path,
            request_serializer=GetMessageClass(method.input_type).SerializeToString,
            response_deserializer=GetMessageClass(method.output_type).FromString,
        )
    return _stubs[key]


def invoke(channel: grpc.Channel, path: str, request: Message, metadata) -> tuple[Code, grpc.RpcError | None]:
    """Calls any RPC; a server stream is read to its end (a following one for
    FOLLOW_SETTLE_S, then cancelled: still open counts as OK)."""
    try:
        response = stub(channel, path)(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
        if METHODS[path].server_streaming:
            finish_stream(response, getattr(request, "follow", False))
    except grpc.RpcError as error:
        return error.code(), error
    return Code.OK, None


def named_fields(error: grpc.RpcError) -> list[str]:
    """The BadRequest field names, with list indexes (`run_ids[3]`) dropped."""
    return [name.split("[", 1)[0] for name in bad_fields(error)]


# --- strategies ------------------------------------------------------------------------------


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the strategies, each picked in proportion to its weight."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(lambda s: s)


ODD_PIECES = [
    "\x00",
    "\x01",
    "\x08",
    "\x1b[31m",
    "\x7f",
    "\x85",
    "\n",
    "\r\n",
    "\t",
    " ",
    "\u200b",  # zero width space
    "\u200e",  # left-to-right mark
    "\u200f",  # right-to-left mark
    "\u202e",  # right-to-left override
    "\u2066",  # left-to-right isolate
    "\u0301",  # combining acute accent, alone
    "\u0300\u0301\u0302",
    "\u20dd",  # combining enclosing circle
    "\ufeff",
    "\ufffd",
    "\uffff",
    "\U0001f44d",
    "\U0001f469\u200d\U0001f4bb",
    "\U0010ffff",
    "%",
    "_",
    "*",
    "|",
    "'",
    '"',
    "\\",
    ";--",
    "../",
    "' OR '1'='1",
    "\U0001d552\U0001d553",  # mathematical double-struck a b
    "٣",
    "²",
]
# Lone surrogates cannot be sent at all: protobuf strings are UTF-8.
odd_char = st.one_of(st.characters(codec="utf-8"), st.sampled_from(ODD_PIECES))
arbitrary_text = st.lists(odd_char, max_size=40).map("".join)
# Up to ~10 KB, built by repetition (drawing 10 KB char by char is slow).
long_text = st.builds(
    lambda unit, n: (unit * n)[:10_240], arbitrary_text.filter(bool), st.integers(1, 10_240)
)
valid_id = st.from_regex(r"[A-Za-z0-9._:@|-]{1,128}", fullmatch=True)
edge_length_id = st.builds(
    lambda c, n: c * n, st.sampled_from(["a", "é", "👍", "|", "-"]), st.integers(126, 130)
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)


# Feedback changes as it is deleted and written again; a drawn slot names
# whichever row holds it now, so the draws never depend on the database.
FEEDBACK_SLOTS = 8
current_feedback: list[tuple[str, str, str, str, str]] = []


def feedback_in_slot(slot: int) -> tuple[str, str, str, str, str]:
    if not current_feedback:
        return ("f-none", "t-nobody", "r-nobody", "nobody", "")
    return current_feedback[slot % len(current_feedback)]


def known_id(index: int) -> str:
    if index < len(KNOWN_IDS):
        return KNOWN_IDS[index]
    return feedback_in_slot(index - len(KNOWN_IDS))[0]


known_ids = st.integers(0, len(KNOWN_IDS) + FEEDBACK_SLOTS - 1).map(known_id)
_hostile_text = [(2, arbitrary_text), (1, long_text), (1, edge_length_id), (1, st.just(""))]
# Ids (`*_id`, `*_ids`) mostly name seeded threads, runs, users and feedback.
id_text = weighted((8, known_ids), (2, valid_id), *_hostile_text)
other_text = weighted((2, valid_id), (2, known_ids), *_hostile_text)


plausible_text = weighted((3, known_ids), (1, st.just("")))
# Tags (`tags`, `tag`) mostly come from the vocabulary.
known_tags = st.sampled_from(DEFAULT_TAGS)
tag_text = weighted((6, known_tags), (1, st.just("")), (1, valid_id), *_hostile_text)
TAG_FIELDS = ("tags", "tag")
# Timestamps a client might send: bucket boundaries around the seeded
# feedback's time, and a few that are not.
DAY_S = 86_400
plausible_times = st.builds(
    lambda day, hour, nanos: Timestamp(seconds=day * DAY_S + hour * 3600, nanos=nanos),
    st.integers(20_400, 20_800),
    st.sampled_from([0, 0, 0, 1, 23]),
    st.sampled_from([0, 0, 0, 1, 999_999_999]),
)


# Run labels (map fields): mostly a few plausible ones, so that selections
# match seeded runs, else keys and values around and past the rules.
LABEL_KEYS = ["release", "model", "agent", "prompt", "a" * 32]
label_keys = weighted(
    (6, st.sampled_from(LABEL_KEYS)),
    (1, st.from_regex(r"[a-z][a-z0-9_]{0,33}", fullmatch=True)),
    *_hostile_text,
)
label_values = weighted(
    (6, st.sampled_from(["1", "2", "gpt-5.1", "v" * 128])),
    (1, st.text(max_size=130)),
    *_hostile_text,
)


def map_value(data: st.DataObject, fd: FieldDescriptor, plausible: bool) -> dict[str, str]:
    if fd.message_type.fields_by_name["value"].type != FieldDescriptor.TYPE_STRING:
        pytest.fail(f"no strategy for map field {fd.full_name}: add one")
    size = data.draw(st.one_of(st.integers(0, 3), st.integers(7, 10), st.integers(0, 200)), label=fd.name)
    if plausible:
        size = min(size, 3)
    keys = data.draw(st.lists(label_keys, max_size=size, unique=True), label=f"{fd.name} keys")
    return {key: data.draw(label_values, label=f"{fd.name}[{key!r:.40}]") for key in keys}


def string_value(name: str) -> st.SearchStrategy[str]:
    if name in TAG_FIELDS:
        return tag_text
    return id_text if name.endswith(("_id", "_ids")) else other_text


def int_value(bits: int, signed: bool) -> st.SearchStrategy[int]:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    edges = [v for v in (0, 1, -1, 2, -2, 100, 1000, 1001, low, high, low + 1, high - 1) if low <= v <= high]
    small = st.integers(max(low, -2), min(high, 2))
    return weighted((3, small), (2, st.sampled_from(edges)), (1, st.integers(low, high)))


INT_TYPES = {
    FieldDescriptor.TYPE_INT32: (32, True),
    FieldDescriptor.TYPE_SINT32: (32, True),
    FieldDescriptor.TYPE_SFIXED32: (32, True),
    FieldDescriptor.TYPE_INT64: (64, True),
    FieldDescriptor.TYPE_SINT64: (64, True),
    FieldDescriptor.TYPE_SFIXED64: (64, True),
    FieldDescriptor.TYPE_UINT32: (32, False),
    FieldDescriptor.TYPE_FIXED32: (32, False),
    FieldDescriptor.TYPE_UINT64: (64, False),
    FieldDescriptor.TYPE_FIXED64: (64, False),
}


def plausible_value(fd: FieldDescriptor) -> st.SearchStrategy | None:
    """A value a well-behaved client might send, for fields of these types."""
    if fd.type == FieldDescriptor.TYPE_STRING:
        return known_tags if fd.name in TAG_FIELDS else plausible_text
    if fd.message_type is Timestamp.DESCRIPTOR:
        return plausible_times
    if fd.type in INT_TYPES:
        return st.sampled_from([1, -1, 0] if INT_TYPES[fd.type][1] else [1, 0])
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    return None


def scalar_value(data: st.DataObject, fd: FieldDescriptor, depth: int, plausible: bool = False) -> object:
    """Mostly plausible values in a plausible request, else hostile ones."""
    if plausible and data.draw(st.integers(0, 3), label=f"{fd.name} plausible") > 0:
        strategy = plausible_value(fd)
        if strategy is not None:
            return data.draw(strategy, label=fd.name)
    if fd.type == FieldDescriptor.TYPE_STRING:
        return data.draw(string_value(fd.name), label=fd.name)
    if fd.type in INT_TYPES:
        return data.draw(int_value(*INT_TYPES[fd.type]), label=fd.name)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return data.draw(st.booleans(), label=fd.name)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return data.draw(st.binary(max_size=512), label=fd.name)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        numbers = [value.number for value in fd.enum_type.values]
        return data.draw(st.one_of(st.sampled_from(numbers), int_value(32, True)), label=fd.name)
    if fd.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return data.draw(st.floats(width=32 if fd.type == FieldDescriptor.TYPE_FLOAT else 64), label=fd.name)
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return build_message(data, fd.message_type, depth + 1, plausible)
    pytest.fail(f"no strategy for field {fd.full_name} of type {fd.type}: add one")


def repeated_value(data: st.DataObject, fd: FieldDescriptor, depth: int, plausible: bool) -> list:
    """0 to ~200 entries: a few arbitrary ones, or many cheap ones around the limits."""
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return [
            build_message(data, fd.message_type, depth + 1, plausible)
            for _ in range(data.draw(st.integers(0, 3)))
        ]
    shape = data.draw(st.sampled_from(["few", "same", "numbered", "known"]), label=f"{fd.name} shape")
    if shape == "few":
        return [scalar_value(data, fd, depth, plausible) for _ in range(data.draw(st.integers(0, 6)))]
    count = data.draw(st.one_of(st.integers(95, 105), st.integers(0, 200)), label=f"{fd.name} count")
    if shape == "same":
        return [scalar_value(data, fd, depth)] * count
    if shape == "numbered" and fd.type == FieldDescriptor.TYPE_STRING:
        stem = data.draw(st.one_of(known_ids, arbitrary_text), label=f"{fd.name} stem")
        return [f"{stem}{i}" for i in range(count)]
    if fd.type == FieldDescriptor.TYPE_STRING:
        return data.draw(st.lists(known_ids, min_size=count, max_size=count), label=fd.name)
    return [scalar_value(data, fd, depth) for _ in range(min(count, 20))]


def build_message(
    data: st.DataObject, descriptor: Descriptor, depth: int = 0, plausible: bool = False
) -> Message:
    message = GetMessageClass(descriptor)()
    if depth > 3:
        return message
    for fd in descriptor.fields:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            getattr(message, fd.name).update(map_value(data, fd, plausible))
        elif fd.is_repeated:
            getattr(message, fd.name).extend(repeated_value(data, fd, depth, plausible))
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if data.draw(st.booleans(), label=f"has {fd.name}"):
                getattr(message, fd.name).CopyFrom(scalar_value(data, fd, depth, plausible))
        else:
            setattr(message, fd.name, scalar_value(data, fd, depth, plausible))
    return message


@dataclass(frozen=True)
class Caller:
    kind: str
    metadata: list[tuple[str, str]]
    # Whose feedback the call sees: a user id, or None for a service as itself.
    viewer: str | None = None


user_ids = weighted((6, st.sampled_from(USERS)), (1, valid_id), (1, arbitrary_text))
scopes = weighted(
    (6, st.none()),
    (
        2,
        st.lists(st.sampled_from(["threads:read", "threads:write", "threads:delete", "admin", ""])).map(
            " ".join
        ),
    ),
    (1, arbitrary_text),
    (1, st.lists(st.sampled_from(["threads:read", "threads:write"]), max_size=2)),  # not a string
)


def user_caller(user: str, scope: object) -> Caller:
    claims = {} if scope is None else {"scope": scope}
    return Caller("user", bearer(user_token(user, **claims)), user)


callers = weighted(
    (16, st.builds(user_caller, user_ids, scopes)),
    (6, st.just(Caller("service", as_service()))),
    (
        10,
        st.builds(
            lambda u: Caller("service-for", as_service_for(u), u),
            weighted((4, st.sampled_from(USERS)), (1, header_text)),
        ),
    ),
    (1, st.just(Caller("none", []))),
    (1, header_text.map(lambda t: Caller("garbage-bearer", [("authorization", t)]))),
    (1, header_text.map(lambda t: Caller("garbage-bearer", bearer(t)))),
    (1, header_text.map(lambda t: Caller("garbage-service", [("x-service-token", t)]))),
    (1, st.builds(lambda u: Caller("expired", bearer(user_token(u, ttl_s=-60))), user_ids)),
    (1, st.builds(lambda u: Caller("wrong-key", bearer(user_token(u, secret=JWT_SECRET[::-1]))), user_ids)),
    (1, st.just(Caller("no-sub", bearer(user_token(None))))),
    (1, st.builds(lambda u: Caller("both", [*as_user(u), ("x-service-token", SERVICE_TOKEN)]), user_ids)),
    (
        1,
        st.builds(
            lambda u: Caller("user-for", [*as_user("alice"), ("x-on-behalf-of", u)]), st.sampled_from(USERS)
        ),
    ),
)

# Row ids a forged page token may name, past the 64-bit range too.
FORGED_ROW_IDS = st.one_of(st.integers(min_value=0), st.sampled_from([0, 1, 2**31, 2**63 - 1, 2**63]))


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# The filters of the list requests; page_scope() is the scope of a list without them.
LIST_FILTERS = ("rating", "has_comment", "tag", "created_after", "created_before", "user_id")


def page_scope(thread_id: str, run_id: str | None, viewer: str | None) -> str:
    """The query scope a page token of an unfiltered list is bound to, as
    domain/pagination.py's query_scope builds it
    (test_forged_page_tokens_use_the_service_scope checks that it agrees).
    The encoding is spelled out here, not imported, so that a change to it,
    which would refuse every live token, fails that test. Its version is v2:
    tokens from before it (bound to the repr() of the filter) are refused
    with the usual INVALID_ARGUMENT, once, by the deploy that brought it."""
    fields = {"thread_id": thread_id}
    if run_id is not None:
        fields["run_id"] = run_id
    if viewer is not None:  # a user lists their own feedback only
        fields["user_id"] = viewer
    encoded = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return "\n".join(("v2", "list", viewer or "", encoded))


def fingerprint(scope: str) -> str:
    """The query fingerprint inside a page token for the scope."""
    token = encode_page_token(scope, 0)
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split(".", 1)[1]


def page_token(data: st.DataObject, request: Message, caller: Caller) -> str:
    """Arbitrary text, base64 garbage, tokens with a bad fingerprint or a bad
    row id, tokens for another query, and well-formed tokens for this one."""
    scope = page_scope(getattr(request, "thread_id", ""), getattr(request, "run_id", None), caller.viewer)
    odd_ids = st.sampled_from(["", "-1", "1e3", "٣", "²", " 1", "0x10", "1.2", "9" * 5000, "00"])
    return data.draw(
        weighted(
            (1, st.just("")),
            (2, arbitrary_text),
            (1, long_text),
            (1, st.binary(max_size=64).map(lambda b: base64.urlsafe_b64encode(b).decode())),
            (
                1,
                st.builds(
                    lambda n, f: b64(f"{n}.{f}"),
                    FORGED_ROW_IDS,
                    st.from_regex(r"[0-9a-f]{16}", fullmatch=True),
                ),
            ),
            (1, st.builds(lambda s, n: encode_page_token(s, n), arbitrary_text, FORGED_ROW_IDS)),
            (2, odd_ids.map(lambda n: b64(f"{n}.{fingerprint(scope)}"))),
            (5, FORGED_ROW_IDS.map(lambda n: encode_page_token(scope, n))),
        ),
        label="page_token",
    )


def hostile_request(data: st.DataObject, path: str, caller: Caller) -> tuple[Message, Caller]:
    """A request of the RPC, and the caller that sends it.

    Half the requests are mostly plausible, so that the deeper paths run; and
    many aim at a seeded thread and one of its runs, or at existing feedback
    (then often as the user who gave it).
    """
    plausible = data.draw(st.booleans(), label="plausible")
    request = build_message(data, METHODS[path].input_type, plausible=plausible)
    fields = request.DESCRIPTOR.fields_by_name
    aim = data.draw(st.sampled_from(["none", "seeded pair", "feedback"]), label="aim")
    if aim == "seeded pair":
        thread, run = data.draw(st.sampled_from(SEED_PAIRS), label="seeded pair")
        aimed = {"thread_id": thread, "run_id": run}
    elif aim == "feedback":
        slot = data.draw(st.integers(0, FEEDBACK_SLOTS - 1), label="feedback slot")
        feedback_id, thread, run, user, message = feedback_in_slot(slot)
        aimed = {"thread_id": thread, "run_id": run, "feedback_id": feedback_id, "message_id": message}
        as_giver = data.draw(st.sampled_from(["no", "user", "service-for"]), label="as its giver")
        if as_giver == "user":
            caller = Caller("user", as_user(user), user)
        elif as_giver == "service-for":
            caller = Caller("service-for", as_service_for(user), user)
    else:
        aimed = {}
    for name, value in aimed.items():
        if name in fields and not fields[name].is_repeated:
            setattr(request, name, value)
    if "page_token" in fields:
        if data.draw(st.booleans(), label="no filters"):
            # Unfiltered, so that the well-formed tokens below continue it.
            for name in LIST_FILTERS:
                if name in fields:
                    request.ClearField(name)
        request.page_token = page_token(data, request, caller)
    if "request_id" in fields:
        request.request_id = data.draw(request_ids, label="request_id")
    if "after_cursor" in fields:
        request.after_cursor = data.draw(change_cursors(), label="after_cursor")
    return request, caller


# A few request ids, so that repeats (same and different requests) happen, in
# any case; and malformed ones.
REQUEST_IDS = [str(uuid.UUID(int=n * 0x1111_1111_1111_1111)) for n in range(1, 5)]
request_ids = weighted(
    (2, st.just("")),
    (4, st.sampled_from(REQUEST_IDS)),
    (1, st.sampled_from(REQUEST_IDS).map(str.upper)),
    (1, st.uuids().map(str)),
    (1, st.sampled_from(REQUEST_IDS).map(lambda r: r.replace("-", ""))),
    (1, st.sampled_from(REQUEST_IDS).map(lambda r: "{" + r + "}")),
    (1, arbitrary_text),
    (1, id_text),
)
# The id of the module's change log, which real cursors carry (read once).
change_log_id: list[str] = []


def change_cursors() -> st.SearchStrategy[str]:
    """Empty, garbage, and well-formed cursors of this log and of others, at
    positions before, inside and past the log (forged like page tokens)."""
    positions = st.one_of(st.integers(0, 300), FORGED_ROW_IDS)
    log_ids = weighted(
        (4, st.sampled_from(change_log_id)), (1, st.from_regex(r"[0-9a-f]{16}", fullmatch=True))
    )
    return weighted(
        (2, st.just("")),
        (1, arbitrary_text),
        (1, st.binary(max_size=64).map(lambda b: base64.urlsafe_b64encode(b).decode())),
        (
            1,
            st.builds(
                lambda n, i: b64(f"{n}.{i}"), st.sampled_from(["", "-1", "1e3", "٣", " 1", "00"]), log_ids
            ),
        ),
        (4, st.builds(lambda n, i: b64(f"{n}.{i}"), positions, log_ids)),
    )


# --- 1 and 2: arbitrary requests to every RPC ----------------------------------------------------

MAX_EXAMPLES = 1000
# What a message past the receive limit may be answered with.
OVERSIZE_ANSWERS = {
    Code.RESOURCE_EXHAUSTED,
    Code.UNAUTHENTICATED,
    Code.PERMISSION_DENIED,
    Code.INVALID_ARGUMENT,
}


def test_hostile_requests_get_client_errors_and_refusals_change_nothing(world: World):
    calls: Counter = Counter()
    statuses: Counter = Counter()
    limit = world.settings.max_message_bytes

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        if not world.seed_intact():
            world.reseed()
        current_feedback[:] = world.feedback_rows()
        path = data.draw(st.sampled_from(sorted(METHODS)), label="rpc")
        caller = data.draw(callers, label="caller")
        request, caller = hostile_request(data, path, caller)
        note(f"{path} as {caller.kind} {caller.metadata!r}\n{request!r:.3000}")

        before = world.snapshot()
        code, error = invoke(world.client.channel, path, request, caller.metadata)
        after = world.snapshot()
        calls[path] += 1
        note(f"-> {code.name}: {error.details() if error else ''}")

        status = code.name
        if request.ByteSize() > limit:
            # Credentials are checked before the message is read: a refusal
            # they decide (a bad x-on-behalf-of included) comes first.
            assert code in OVERSIZE_ANSWERS, f"{code.name}: {error.details()}"
            if code == Code.INVALID_ARGUMENT:
                assert named_fields(error) == ["x-on-behalf-of"]
        else:
            assert code == Code.OK or code in CLIENT_ERRORS, f"{code.name}: {error.details()}"
        statuses[status] += 1
        if code == Code.INVALID_ARGUMENT:
            named = named_fields(error)
            assert named, "INVALID_ARGUMENT names no field"
            assert set(named) <= {*request.DESCRIPTOR.fields_by_name, "x-on-behalf-of"}, named
        if code != Code.OK or path in READ_ONLY:
            assert after == before, f"{path} answered {code.name} and changed the database"

    check()
    assert set(calls) == set(METHODS), f"RPCs never called: {set(METHODS) - set(calls)}"
    summary = f"{sum(calls.values())} calls to {len(calls)} RPCs, statuses {dict(statuses.most_common())}"
    print(f"\nhostile input: {summary}")


def test_many_malformed_run_ids_get_a_readable_invalid_argument(world: World):
    request = pb.BatchGetFeedbackStatsRequest(thread_id="t-shared", run_ids=["!"] * 100)
    before = world.snapshot()
    code, error = invoke(
        world.client.channel, "/feedback.v1.FeedbackService/BatchGetFeedbackStats", request, as_service()
    )
    assert world.snapshot() == before
    assert code == Code.INVALID_ARGUMENT, f"{code.name}: {error.details() if error else ''}"
    assert set(named_fields(error)) == {"run_ids"}


@pytest.mark.parametrize("tag", ["é" * 100, "\U0001f44d" * 100, "\U0010ffff" * 100, "\x00" * 100])
def test_many_long_unknown_tags_get_a_readable_invalid_argument(world: World, tag):
    """Each unknown tag is quoted in at most 40 bytes, escapes included, and
    the vocabulary named once: the details still fit the 8 KB of trailers a
    client accepts."""
    request = pb.UpsertFeedbackRequest(thread_id="t-alice", run_id="r-a1", rating=1, tags=[tag] * 100)
    before = world.snapshot()
    code, error = invoke(
        world.client.channel, "/feedback.v1.FeedbackService/UpsertFeedback", request, as_user("alice")
    )
    assert world.snapshot() == before
    assert code == Code.INVALID_ARGUMENT, f"{code.name}: {error.details() if error else ''}"
    assert set(named_fields(error)) == {"tags"}
    listing = pb.ListThreadFeedbackRequest(thread_id="t-alice", tag=tag)
    code, error = invoke(
        world.client.channel, "/feedback.v1.FeedbackService/ListThreadFeedback", listing, as_user("alice")
    )
    assert code == Code.INVALID_ARGUMENT, f"{code.name}: {error.details() if error else ''}"
    assert named_fields(error) == ["tag"]


def test_forged_page_tokens_use_the_service_scope(world: World):
    """The property test forges well-formed page tokens with page_scope(); a
    token the service hands out must be exactly what it forges."""
    if not world.seed_intact():
        world.reseed()
    for thread, run, caller in (
        ("t-shared", "r-s1", Caller("service", as_service())),
        ("t-alice", None, Caller("user", as_user("alice"), "alice")),
    ):
        if run is None:
            request = pb.ListThreadFeedbackRequest(thread_id=thread, page_size=1)
            response = world.client.feedback.ListThreadFeedback(request, metadata=caller.metadata)
        else:
            request = pb.ListFeedbackRequest(thread_id=thread, run_id=run, page_size=1)
            response = world.client.feedback.ListFeedback(request, metadata=caller.metadata)
        assert response.next_page_token, "the seeded thread should have two pages"
        (row_id,) = world.db.execute_sql(
            'SELECT id FROM "feedback" WHERE feedback_id = ?', (response.feedback[0].feedback_id,)
        ).fetchone()
        assert response.next_page_token == encode_page_token(page_scope(thread, run, caller.viewer), row_id)


@pytest.mark.parametrize(
    "row_id", [str(2**63), str(10**30), "9" * 5000], ids=["2^63", "10^30", "5000 digits"]
)
@pytest.mark.parametrize("run_id", ["r-s1", None], ids=["ListFeedback", "ListThreadFeedback"])
def test_a_page_token_past_64_bit_row_ids_is_invalid_argument(world: World, run_id, row_id):
    token = b64(f"{row_id}.{fingerprint(page_scope('t-shared', run_id, None))}")
    if run_id is None:
        path = "/feedback.v1.FeedbackService/ListThreadFeedback"
        request = pb.ListThreadFeedbackRequest(thread_id="t-shared", page_token=token)
    else:
        path = "/feedback.v1.FeedbackService/ListFeedback"
        request = pb.ListFeedbackRequest(thread_id="t-shared", run_id=run_id, page_token=token)
    before = world.snapshot()
    code, error = invoke(world.client.channel, path, request, as_service())
    assert world.snapshot() == before
    assert code == Code.INVALID_ARGUMENT, f"{code.name}: {error.details() if error else ''}"
    assert named_fields(error) == ["page_token"]


# --- 3: oversize messages and metadata ------------------------------------------------------------


def padded(path: str, size: int) -> Message:
    """A request of the RPC, aimed at a seeded thread and run, whose first
    string field is padded so that the serialized message is `size` bytes."""
    request = GetMessageClass(METHODS[path].input_type)()
    fields = request.DESCRIPTOR.fields_by_name
    if "thread_id" in fields:
        request.thread_id = "t-alice"
    if "run_id" in fields:
        request.run_id = "r-a1"
    if "rating" in fields:
        request.rating = 1
    pad = next(
        fd
        for fd in request.DESCRIPTOR.fields
        if fd.type == FieldDescriptor.TYPE_STRING and not fd.is_repeated
    )
    setattr(request, pad.name, "")
    base = request.ByteSize()
    # tag (1 byte) + length varint + payload == size - base
    for length_bytes in range(1, 6):
        payload = size - base - 1 - length_bytes
        setattr(request, pad.name, "x" * payload)
        if request.ByteSize() == size:
            return request
    raise AssertionError(f"cannot pad {path} to {size} bytes")


def stats_call(world: World) -> pb.FeedbackStats:
    request = pb.GetFeedbackStatsRequest(thread_id="t-shared", run_id="r-s1")
    return world.client.feedback.GetFeedbackStats(request, metadata=as_service(), timeout=CALL_TIMEOUT_S)


@pytest.mark.parametrize("path", sorted(METHODS))
def test_a_message_past_the_receive_limit_is_resource_exhausted_and_changes_nothing(world: World, path):
    limit = world.settings.max_message_bytes
    assert limit < 4 * 1024 * 1024, "the server should set a limit below gRPC's 4 MB default"
    if not world.seed_intact():
        world.reseed()
    expected, before = stats_call(world), world.snapshot()
    for size in (limit + 1, 2 * limit, 4 * 1024 * 1024 + 1):
        code, _ = invoke(world.client.channel, path, padded(path, size), caller_for(path))
        assert code == Code.RESOURCE_EXHAUSTED, f"{size} bytes: {code.name}"
        assert world.snapshot() == before
    # At the limit the message is read, and the field rules answer.
    code, _ = invoke(world.client.channel, path, padded(path, limit), caller_for(path))
    assert code == Code.INVALID_ARGUMENT
    assert world.snapshot() == before
    assert stats_call(world) == expected


OVERSIZE_METADATA = {
    "extra header": [*as_service_for("alice"), ("x-padding", "x" * 65536)],
    "bearer token": bearer("x" * 65536),
    "service token": [("x-service-token", "x" * 65536)],
    "on behalf of": [("x-service-token", SERVICE_TOKEN), ("x-on-behalf-of", "a" * 65536)],
    "many headers": [*as_service_for("alice"), *((f"x-h{i}", "v" * 40) for i in range(2000))],
}


@pytest.mark.parametrize("name", OVERSIZE_METADATA)
def test_oversize_metadata_is_refused_and_the_server_still_answers(world: World, name):
    if not world.seed_intact():
        world.reseed()
    expected, before = stats_call(world), world.snapshot()
    write = pb.UpsertFeedbackRequest(thread_id="t-alice", run_id="r-a2", rating=1, comment="oversize")
    for path, request in (
        ("/feedback.v1.FeedbackService/UpsertFeedback", write),
        (
            "/feedback.v1.FeedbackService/GetFeedbackStats",
            pb.GetFeedbackStatsRequest(thread_id="t-alice", run_id="r-a1"),
        ),
    ):
        code, error = invoke(world.client.channel, path, request, OVERSIZE_METADATA[name])
        # gRPC refuses headers past the server's hard limit with RESOURCE_EXHAUSTED.
        assert code == Code.RESOURCE_EXHAUSTED, f"{code.name}: {error.details() if error else ''}"
        assert world.snapshot() == before
    assert stats_call(world) == expected


# --- 4: many concurrent calls --------------------------------------------------------------------

CALLS_ON_ONE_CHANNEL = 500
CHANNELS = 50
CALLS_PER_CHANNEL = 10


def test_a_flood_of_concurrent_calls_ends_cleanly_and_the_server_still_answers(world: World):
    if not world.seed_intact():
        world.reseed()
    expected = stats_call(world)
    request = pb.GetFeedbackStatsRequest(thread_id="t-shared", run_id="r-s1")
    channels = [grpc.insecure_channel(world.server.address) for _ in range(CHANNELS)]
    try:
        futures = [
            world.client.feedback.GetFeedbackStats.future(request, metadata=as_service(), timeout=60)
            for _ in range(CALLS_ON_ONE_CHANNEL)
        ]
        for channel in channels:
            stats = stub(channel, "/feedback.v1.FeedbackService/GetFeedbackStats")
            futures += [
                stats.future(request, metadata=as_service_for("alice"), timeout=60)
                for _ in range(CALLS_PER_CHANNEL)
            ]
        codes: Counter = Counter()
        for future in futures:
            code = future.code()
            codes[code.name] += 1
            assert code in (Code.OK, Code.RESOURCE_EXHAUSTED, Code.UNAVAILABLE), (
                f"{code.name}: {future.details()}"
            )
            if code == Code.OK:
                assert future.result() == expected
    finally:
        for channel in channels:
            channel.close()
    print(f"\nconcurrent flood: {len(futures)} calls, statuses {dict(codes.most_common())}")
    assert codes["OK"] > 0
    assert stats_call(world) == expected

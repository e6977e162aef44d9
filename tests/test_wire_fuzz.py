"""Raw bytes on the wire: every method of both services, and Health/Check, is
sent request bytes the client never serialized — random bytes, and valid
requests damaged the ways a broken or hostile client damages them. The server
must answer with a documented status (never UNKNOWN, INTERNAL or
UNIMPLEMENTED), and a refused call must leave the database as it was.

Bytes that do not decode are INVALID_ARGUMENT saying so, with one access-log
line and no traceback; a caller without credentials may be told
UNAUTHENTICATED first instead.
"""

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from feedback_service.domain.validation import DEFAULT_TAGS
from tests.harness import (
    CLIENT_ERRORS,
    JWT_SECRET,
    METHODS,
    READ_ONLY,
    SEED_PAIRS,
    USERS,
    SeededWorld,
    ServiceProcess,
    as_service,
    as_service_for,
    as_user,
    backend_url,
    caller_for,
    finish_stream,
    inspect_database,
    running_server,
    server_settings,
    wait_until,
)

Code = grpc.StatusCode
CALL_TIMEOUT_S = 20
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# What each path reads its request as.
REQUEST_TYPES: dict[str, Descriptor] = {
    **{path: method.input_type for path, method in METHODS.items()},
    HEALTH_CHECK: health_pb2.HealthCheckRequest.DESCRIPTOR,
}
PATHS = sorted(REQUEST_TYPES)
READS = READ_ONLY | {HEALTH_CHECK}
ANSWERS = {Code.OK, *CLIENT_ERRORS}
# For bytes that do not decode: INVALID_ARGUMENT, or a refusal the headers
# alone decide. Anything else means the server acted on a request it cannot read.
UNREADABLE_ANSWERS = {
    Code.INVALID_ARGUMENT,
    Code.UNAUTHENTICATED,
    Code.PERMISSION_DENIED,
    Code.FAILED_PRECONDITION,
}


def callers() -> dict[str, list[tuple[str, str]]]:
    """Fresh credentials (user tokens expire): valid ones of each kind, and none."""
    return {
        "service": as_service(),
        "user alice": as_user("alice"),
        "service for alice": as_service_for("alice"),
        "none": [],
    }


def send(channel: grpc.Channel, path: str, body: bytes, metadata) -> tuple[Code, str]:
    """Sends the bytes as they are, with no client-side serialization. A
    server stream is read to its end (one that decodes as a following change
    stream for FOLLOW_SETTLE_S, then cancelled: still open counts as OK)."""
    streaming = path in METHODS and METHODS[path].server_streaming
    kind = channel.unary_stream if streaming else channel.unary_unary
    call = kind(path, request_serializer=None, response_deserializer=None)
    try:
        response = call(body, metadata=metadata, timeout=CALL_TIMEOUT_S)
        if streaming:
            finish_stream(response, follows(REQUEST_TYPES[path], body))
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return Code.OK, ""


def follows(descriptor: Descriptor, body: bytes) -> bool:
    """Whether the bytes decode as a request with `follow` set."""
    try:
        return bool(getattr(GetMessageClass(descriptor).FromString(body), "follow", False))
    except DecodeError:
        return False


# --- the protobuf wire format, by hand --------------------------------------------------

VARINT, I64, LEN, SGROUP, EGROUP, I32 = range(6)
WIRE_TYPES = range(8)  # 6 and 7 are not wire types at all


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def overlong_varint(value: int, size: int) -> bytes:
    """The value in `size` bytes, padded with empty continuation groups.
    Parsers accept up to ten bytes; an eleventh makes it corrupt."""
    groups = []
    while True:
        groups.append(value & 0x7F)
        value >>= 7
        if not value:
            break
    groups += [0] * max(0, size - len(groups))
    return bytes([g | 0x80 for g in groups[:-1]] + [groups[-1]])


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


@dataclass(frozen=True)
class Field:
    """One field as it is on the wire. The payload of a LEN field is its
    content without the length; of any other, its encoded value."""

    number: int
    wire_type: int
    payload: bytes

    def encode(self) -> bytes:
        length = varint(len(self.payload)) if self.wire_type == LEN else b""
        return tag(self.number, self.wire_type) + length + self.payload


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def fields_of(data: bytes) -> list[Field]:
    """The fields of a well-formed message (ours have no groups)."""
    fields, pos = [], 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            _, end = read_varint(data, pos)
        elif wire_type == LEN:
            size, pos = read_varint(data, pos)
            end = pos + size
        else:
            end = pos + (8 if wire_type == I64 else 4)
        fields.append(Field(number, wire_type, data[pos:end]))
        pos = end
    return fields


def encode(fields: list[Field]) -> bytes:
    return b"".join(f.encode() for f in fields)


def decodes(descriptor: Descriptor, body: bytes) -> bool:
    try:
        GetMessageClass(descriptor).FromString(body)
    except DecodeError:
        return False
    return True


# --- valid requests, aimed at the seeded world ------------------------------------------

# Feedback comes and goes as calls succeed; a drawn slot names whichever row holds it now.
FEEDBACK_SLOTS = 8
current_feedback: list[tuple[str, str, str, str, str]] = []
COMMENTS = ["", "fine", "é" * 20, "👍 agreed", "日本語のコメント"]
REQUEST_IDS = ["0f4c3b9e-39a1-4d27-9d49-0c7f1e4a6b21", "7d1c2e3f-4a5b-4c6d-8e9f-a0b1c2d3e4f5"]


LABEL_KEYS = ["release", "model"]
label_maps = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(["1", "2", "gpt-5.1"]), max_size=2)


def valid_request(data: st.DataObject, path: str) -> Message:
    """A request a well-behaved client might send: seeded ids, plausible values."""
    descriptor = REQUEST_TYPES[path]
    thread, run = data.draw(st.sampled_from(SEED_PAIRS), label="seeded pair")
    feedback_id = message_id = ""
    aim_at_feedback = data.draw(st.booleans(), label="aim at feedback")
    slot = data.draw(st.integers(0, FEEDBACK_SLOTS - 1), label="feedback slot")
    if aim_at_feedback and current_feedback:
        row = current_feedback[slot % len(current_feedback)]
        feedback_id, thread, run, _, message_id = row
    values = {
        "thread_id": thread,
        "run_id": run,
        "feedback_id": feedback_id,
        "message_id": message_id,
        "run_ids": [run, *data.draw(st.lists(st.sampled_from([r for _, r in SEED_PAIRS]), max_size=3))],
        "owner_user_id": data.draw(st.sampled_from(["", *USERS]), label="owner"),
        "rating": data.draw(st.sampled_from([1, -1]), label="rating"),
        "comment": data.draw(st.sampled_from(COMMENTS), label="comment"),
        "page_size": data.draw(st.integers(0, 3), label="page_size"),
        "service": data.draw(st.sampled_from(["", "feedback.v1.FeedbackService"]), label="service"),
        "tags": data.draw(st.lists(st.sampled_from(DEFAULT_TAGS), max_size=3, unique=True), label="tags"),
        "tag": data.draw(st.sampled_from(["", *DEFAULT_TAGS]), label="tag"),
        "user_id": data.draw(st.sampled_from(["", *USERS]), label="user_id"),
        "request_id": data.draw(st.sampled_from(["", *REQUEST_IDS]), label="request_id"),
        "after_cursor": "",
        "follow": data.draw(st.booleans(), label="follow"),
        "label_key": data.draw(st.sampled_from(LABEL_KEYS), label="label_key"),
        "confidence": data.draw(st.sampled_from([0.0, 0.9, 0.95, 0.99]), label="confidence"),
        **{
            name: data.draw(label_maps, label=name)
            for name in ("labels", "run_labels", "baseline_labels", "candidate_labels")
        },
    }
    message = GetMessageClass(descriptor)()
    for fd in descriptor.fields:
        if fd.name in values:
            value = values[fd.name]
        elif fd.type == FieldDescriptor.TYPE_STRING:  # a field added since: still sent
            value = ["x"] if fd.is_repeated else "x"
        else:
            continue
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            getattr(message, fd.name).update(value)
        elif fd.is_repeated:
            getattr(message, fd.name).extend(value)
        else:
            setattr(message, fd.name, value)
    return message


# --- damage -------------------------------------------------------------------------------

INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\x80",  # a continuation byte alone
    b"\xc3\x28",  # a lead byte, then no continuation
    b"\xe2\x82",  # three-byte sequence cut short
    b"\xc0\xaf",  # overlong '/'
    b"\xe0\x80\xaf",  # overlong, three bytes
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xf8\x88\x80\x80\x80",  # five-byte form
]


def position(data: st.DataObject, size: int, label: str) -> int:
    """0..size-1. Sizes depend on the rows in the database, so the draw itself
    must not (hypothesis replays draws against a database that has moved on)."""
    return data.draw(st.integers(0, 2**16), label=label) % size


def pick(data: st.DataObject, items: list, label: str):
    return items[position(data, len(items), label)]


def string_numbers(descriptor: Descriptor) -> list[int]:
    return [fd.number for fd in descriptor.fields if fd.type == FieldDescriptor.TYPE_STRING] or [1]


def with_field(fields: list[Field], wanted: Field) -> tuple[list[Field], int]:
    """The fields and the index of one with wanted's number and wire type
    (added as wanted when there is none)."""
    for i, f in enumerate(fields):
        if (f.number, f.wire_type) == (wanted.number, wanted.wire_type):
            return fields, i
    return [*fields, wanted], len(fields)


def bit_flips(data, fields, descriptor) -> bytes:
    body = bytearray(encode(fields) or b"\x00")
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        bit = position(data, len(body) * 8, "bit")
        body[bit // 8] ^= 1 << (bit % 8)
    return bytes(body)


def truncated(data, fields, descriptor) -> bytes:
    body = encode(fields)
    return body[: position(data, max(1, len(body)), "cut at")]


def inserted(data, fields, descriptor) -> bytes:
    body = encode(fields)
    at = position(data, len(body) + 1, "at")
    return body[:at] + data.draw(st.binary(min_size=1, max_size=8), label="bytes") + body[at:]


def duplicated(data, fields, descriptor) -> bytes:
    body = encode(fields) or b"\x0a\x00"
    start = position(data, len(body), "from")
    end = start + 1 + position(data, len(body) - start, "length")
    at = position(data, len(body) + 1, "at")
    return body[:at] + body[start:end] + body[at:]


def invalid_utf8(data, fields, descriptor) -> bytes:
    """A string field whose bytes are not UTF-8; its length still right."""
    number = pick(data, string_numbers(descriptor), "string field")
    fields, i = with_field(fields, Field(number, LEN, b"x"))
    payload = fields[i].payload
    at = position(data, len(payload) + 1, "at")
    bad = payload[:at] + data.draw(st.sampled_from(INVALID_UTF8), label="bad utf-8") + payload[at:]
    return encode([*fields[:i], replace(fields[i], payload=bad), *fields[i + 1 :]])


def overlong(data, fields, descriptor) -> bytes:
    """A tag, length or value varint padded to 2..12 bytes (past 10 is corrupt)."""
    fields = fields or [Field(1, LEN, b"x")]
    i = position(data, len(fields), "field")
    f = fields[i]
    size = data.draw(st.integers(2, 12), label="varint bytes")
    part = data.draw(st.sampled_from(["tag", "length or value"]), label="part")
    key = tag(f.number, f.wire_type)
    if part == "tag":
        key = overlong_varint(f.number << 3 | f.wire_type, size)
    if f.wire_type == LEN:
        rest = (
            overlong_varint(len(f.payload), size) if part != "tag" else varint(len(f.payload))
        ) + f.payload
    elif f.wire_type == VARINT and part != "tag":
        rest = overlong_varint(read_varint(f.payload, 0)[0], size)
    else:
        rest = f.payload
    return encode(fields[:i]) + key + rest + encode(fields[i + 1 :])


def field_zero(data, fields, descriptor) -> bytes:
    wire_type = data.draw(st.sampled_from([VARINT, I64, LEN, I32]), label="wire type")
    payload = {VARINT: b"\x01", I64: bytes(8), LEN: b"\x01x", I32: bytes(4)}[wire_type]
    at = position(data, len(fields) + 1, "before field")
    return encode(fields[:at]) + tag(0, wire_type) + payload + encode(fields[at:])


def wrong_wire_type(data, fields, descriptor) -> bytes:
    """A field's tag with another wire type, its bytes unchanged."""
    fields = fields or [Field(1, LEN, b"x")]
    i = position(data, len(fields), "field")
    f = fields[i]
    wire_type = data.draw(st.sampled_from(WIRE_TYPES), label="wire type")
    if wire_type == f.wire_type:
        wire_type = (wire_type + 1) % len(WIRE_TYPES)
    rest = f.encode()[len(tag(f.number, f.wire_type)) :]
    return encode(fields[:i]) + tag(f.number, wire_type) + rest + encode(fields[i + 1 :])


def length_past_the_end(data, fields, descriptor) -> bytes:
    """The last field is length-delimited and its length runs past the end."""
    number = pick(data, string_numbers(descriptor), "string field")
    fields, i = with_field(fields, Field(number, LEN, b"x"))
    last = fields[i]
    extra = data.draw(st.one_of(st.integers(1, 16), st.integers(1, 2**63)), label="extra length")
    rest = [*fields[:i], *fields[i + 1 :]]
    return encode(rest) + tag(last.number, LEN) + varint(len(last.payload) + extra) + last.payload


def truncated_varint(data, fields, descriptor) -> bytes:
    """The message ends inside a varint: every byte says another follows."""
    number = data.draw(st.sampled_from([fd.number for fd in descriptor.fields] or [1]), label="field")
    cut = b"\x80" * data.draw(st.integers(0, 9), label="continuation bytes")
    ending = data.draw(st.sampled_from(["tag", "value"]), label="ends in")
    tail = (b"\x80" + cut) if ending == "tag" else tag(number, VARINT) + b"\xff" + cut
    return encode(fields) + tail


def unchanged(data, fields, descriptor) -> bytes:
    return encode(fields)


DAMAGE = {
    f.__name__: f
    for f in (
        bit_flips,
        truncated,
        inserted,
        duplicated,
        invalid_utf8,
        overlong,
        field_zero,
        wrong_wire_type,
        length_past_the_end,
        truncated_varint,
        unchanged,
    )
}


def request_bytes(data: st.DataObject, path: str) -> tuple[str, bytes]:
    """Random bytes, or a valid request of the path, damaged (or not)."""
    how = data.draw(st.sampled_from(["random bytes", *DAMAGE]), label="bytes")
    if how == "random bytes":
        return how, data.draw(st.binary(max_size=200), label="random bytes")
    valid = valid_request(data, path)
    return how, DAMAGE[how](data, fields_of(valid.SerializeToString()), REQUEST_TYPES[path])


# --- the property, on every backend -------------------------------------------------------

EXAMPLES = {"sqlite": 500, "postgres": 300, "mysql": 300}


@dataclass
class World(SeededWorld):
    backend: str


@pytest.fixture(scope="module", params=["sqlite", "postgres", "mysql"])
def world(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One seeded server per backend for the whole property."""
    data_dir: Path = tmp_path_factory.mktemp(f"wire-{request.param}")
    url = backend_url(request.param, data_dir)
    with running_server(server_settings(data_dir, database_url=url)) as (_, client):
        db = inspect_database(url)
        try:
            world = World(client, db, request.param)
            world.reseed()
            yield world
        finally:
            db.close()


def test_raw_request_bytes_get_documented_statuses_and_refusals_change_nothing(world: World):
    statuses: Counter = Counter()
    damage: Counter = Counter()
    metadata = callers()

    @settings(
        max_examples=EXAMPLES[world.backend],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        if not world.seed_intact():
            world.reseed()
        current_feedback[:] = world.feedback_rows()
        path = data.draw(st.sampled_from(PATHS), label="path")
        caller = data.draw(st.sampled_from(sorted(metadata)), label="caller")
        how, body = request_bytes(data, path)
        note(f"{path} as {caller}, {how}: {body!r}")

        before = world.snapshot()
        code, details = send(world.client.channel, path, body, metadata[caller])
        after = world.snapshot()
        note(f"-> {code.name}: {details}")
        statuses[code.name] += 1
        damage[how] += 1

        assert code in ANSWERS, f"{path} answered {code.name}: {details}"
        if not decodes(REQUEST_TYPES[path], body):
            assert code in UNREADABLE_ANSWERS, f"{path} acted on bytes it cannot read: {code.name}"
        if code != Code.OK or path in READS:
            assert after == before, f"{path} answered {code.name} and changed the database"

    check()
    print(f"\nwire fuzz on {world.backend}: statuses {dict(statuses.most_common())}, bytes {dict(damage)}")


# --- named cases: each kind of undecodable request ----------------------------------------

# A valid start (thread_id, field 1 of every request, and `service` of
# HealthCheckRequest), then the defect.
START = Field(1, LEN, b"t-alice").encode()
UNDECODABLE = {
    "invalid UTF-8 in a string field": Field(1, LEN, b"t-\xffalice").encode(),
    "a truncated varint": START + tag(3, VARINT) + b"\x81\x80",
    "a length running past the end": START + tag(2, LEN) + varint(16) + b"r-a1",
    "field number 0": tag(0, VARINT) + b"\x01" + START,
    "wire type 7, which does not exist": START + tag(2, 7) + b"\x01",
    "an end-group tag with no group open": START + tag(2, EGROUP),
    "a varint of eleven bytes": START + tag(3, VARINT) + overlong_varint(1, 11),
}


@pytest.mark.parametrize("defect", UNDECODABLE)
def test_the_bytes_of_each_named_case_do_not_decode(defect):
    body = UNDECODABLE[defect]
    assert not [path for path in PATHS if decodes(REQUEST_TYPES[path], body)]


@pytest.fixture(scope="module")
def logged_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A real service process, logging JSON lines."""
    service = ServiceProcess(
        tmp_path_factory.mktemp("wire-log") / "data", jwt_secret=JWT_SECRET, log_format="json"
    )
    try:
        yield service
    finally:
        service.terminate()


sentinels = itertools.count()


def sentinel(service: ServiceProcess, channel: grpc.Channel) -> str:
    """Makes a call whose access line is known by its caller, and waits for
    that line: every call that ended before it has its line written by then."""
    user = f"sentinel-{next(sentinels)}"
    path = "/feedback.v1.FeedbackService/ListThreadFeedback"
    assert send(channel, path, Field(1, LEN, b"t-sentinel").encode(), as_user(user))[0] == Code.OK
    wait_until(lambda: any(e.get("principal_id") == user for e in service.access_lines()))
    return user


def access_lines_between(service: ServiceProcess, first: str, last: str) -> list[dict]:
    lines = service.access_lines()
    ids = [e.get("principal_id") for e in lines]
    return lines[ids.index(first) + 1 : ids.index(last)]


@pytest.mark.parametrize("defect", UNDECODABLE)
def test_an_undecodable_request_is_invalid_argument_with_one_access_line_and_no_traceback(
    logged_service: ServiceProcess, defect
):
    body = UNDECODABLE[defect]
    since = len(logged_service.log)
    with grpc.insecure_channel(logged_service.address) as channel:
        first = sentinel(logged_service, channel)
        answers = {path: send(channel, path, body, caller_for(path)) for path in PATHS}
        access = access_lines_between(logged_service, first, sentinel(logged_service, channel))
        anonymous = {path: send(channel, path, body, [])[0] for path in PATHS}

    wrong = {
        path: f"{code.name}: {details}"
        for path, (code, details) in answers.items()
        if code != Code.INVALID_ARGUMENT
    }
    assert not wrong, f"with credentials, not INVALID_ARGUMENT: {json.dumps(wrong, indent=1)}"
    vague = {path: details for path, (_, details) in answers.items() if "decod" not in details.lower()}
    assert not vague, f"the message does not say the request could not be decoded: {vague}"
    logged = Counter((e["method"], e["code"]) for e in access if e["method"] in METHODS)
    assert logged == Counter((path, "INVALID_ARGUMENT") for path in METHODS), "one access line per call"
    assert "Traceback" not in "".join(logged_service.log[since:])
    refused = {Code.INVALID_ARGUMENT, Code.UNAUTHENTICATED}
    assert {path: code.name for path, code in anonymous.items() if code not in refused} == {}

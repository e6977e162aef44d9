"""Opaque page tokens (AIP-158) for keyset pagination.

A token holds the last row id of the page and a fingerprint of the query it
came from, so it stays correct while rows are inserted and cannot be replayed
against a different query. The change feed's cursors use the same encoding
(`pack_token`, `unpack_numbers`): a position (one number or two) and the
log's id.
"""

import base64
import binascii
import dataclasses
import hashlib
import json

from feedback_service.core.errors import FieldViolation, InvalidArgument
from feedback_service.core.records import ListQuery

MAX_ROW_ID = 2**63 - 1  # row ids and log positions are signed 64-bit on every backend
MAX_DIGITS = len(str(MAX_ROW_ID))

# A page stops before its feedback would pass this many bytes serialized, so
# that it always fits a default gRPC client's 4 MiB receive limit; it holds at
# least one feedback whatever its size.
PAGE_BYTE_BUDGET = 1024 * 1024

# What one Feedback adds to a list response beyond its comment's UTF-8 bytes,
# at most: five ASCII ids of up to 128 characters (tag, 2-byte length, 128
# bytes each: 655), the rating (-1 is a 10-byte varint, plus its tag: 11),
# two Timestamps (tag, length, 11-byte seconds, 6-byte nanos: 38), the
# comment's tag and length (4), the repeated field's tag and length (4), and
# six tags of up to 32 ASCII characters (tag, length, 32 bytes each: 204).
FEEDBACK_OVERHEAD_BYTES = 655 + 11 + 38 + 4 + 4 + 204


def within_budget(comments: list[str], budget: int = PAGE_BYTE_BUDGET) -> int:
    """How many of the leading feedback, given their comments, fit the byte
    budget: at least one (when there is one). An upper-bound estimate, cheap
    enough for every row: an ASCII comment's length is its size in bytes."""
    for count, comment in enumerate(comments):
        budget -= FEEDBACK_OVERHEAD_BYTES + (len(comment) if comment.isascii() else len(comment.encode()))
        if budget < 0:
            return max(count, 1)
    return len(comments)


def _fingerprint(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:16]


def pack_token(number: int | tuple[int, ...], tag: str) -> str:
    """An opaque token: base64url of "<number>.<tag>" (numbers joined by
    dots when there are several), unpadded."""
    numbers = number if isinstance(number, tuple) else (number,)
    text = ".".join(str(n) for n in numbers)
    return base64.urlsafe_b64encode(f"{text}.{tag}".encode()).decode().rstrip("=")


def unpack_numbers(token: str, most: int) -> tuple[tuple[int, ...], str] | None:
    """(numbers, tag) of a token from pack_token with 1 to `most` numbers;
    None for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    *numbers, tag = raw.split(".")
    if not 1 <= len(numbers) <= most or not tag:
        return None
    # The length is checked first: int() refuses strings past 4,300 digits.
    if not all(
        n.isascii() and n.isdigit() and len(n) <= MAX_DIGITS and int(n) <= MAX_ROW_ID for n in numbers
    ):
        return None
    return tuple(int(n) for n in numbers), tag


def unpack_token(token: str) -> tuple[int, str] | None:
    """(number, tag) of a token from pack_token; None for anything else."""
    unpacked = unpack_numbers(token, 1)
    return None if unpacked is None else (unpacked[0][0], unpacked[1])


# The version of query_scope's encoding. A token carries a fingerprint of
# its scope, so a new encoding refuses the tokens of the old one; the first,
# unversioned, was the repr() of the filter, and its tokens are refused with
# INVALID_ARGUMENT ("start with an empty token"), once, by the deploy that
# brought this one.
SCOPE_VERSION = "v2"


def query_scope(kind: str, query: ListQuery, viewer: str | None = None) -> str:
    """The scope a page token of a list ("list") or an export ("export") is
    bound to: the version, the kind, the user the call acts for (a user's
    token is theirs, not a service's filtering on them), and the canonical
    JSON of the query's fields that differ from their defaults, sorted by
    name. A field added later, whose default keeps everything, leaves every
    live token valid. Newlines cannot occur in ids, so distinct queries never
    share a scope."""
    changed = {
        field.name: getattr(query, field.name)
        for field in dataclasses.fields(query)
        if getattr(query, field.name) != field.default
    }
    fields = json.dumps(changed, sort_keys=True, separators=(",", ":"))
    return "\n".join((SCOPE_VERSION, kind, viewer or "", fields))


def encode_page_token(scope: str, last_id: int) -> str:
    return pack_token(last_id, _fingerprint(scope))


def decode_page_token(scope: str, token: str) -> int:
    """The row id to continue after; 0 for the first page."""
    if not token:
        return 0
    unpacked = unpack_token(token)
    if unpacked is not None and unpacked[1] == _fingerprint(scope):
        return unpacked[0]
    raise InvalidArgument(
        [FieldViolation("page_token", "is not a token returned by this query; start with an empty token")]
    )

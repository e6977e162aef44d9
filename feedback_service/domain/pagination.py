"""Opaque page tokens (AIP-158) for keyset pagination.

A token holds the last row id of the page and a fingerprint of the query it
came from, so it stays correct while rows are inserted and cannot be replayed
against a different query.
"""

import base64
import binascii
import hashlib

from feedback_service.domain.errors import FieldViolation, InvalidArgument

MAX_ROW_ID = 2**63 - 1  # row ids are signed 64-bit on every backend


def _fingerprint(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:16]


def encode_page_token(scope: str, last_id: int) -> str:
    raw = f"{last_id}.{_fingerprint(scope)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(scope: str, token: str) -> int:
    """The row id to continue after; 0 for the first page."""
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        last_id, fingerprint = raw.split(".")
        if fingerprint == _fingerprint(scope) and last_id.isdigit() and int(last_id) <= MAX_ROW_ID:
            return int(last_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidArgument(
        [FieldViolation("page_token", "is not a token returned by this query; start with an empty token")]
    )

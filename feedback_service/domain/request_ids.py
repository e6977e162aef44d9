"""Request ids: the claim a write sent with a request_id makes, so that a
retry returns the first call's outcome and a reused id is caught."""

import hashlib
import json

from feedback_service.core.records import RequestClaim
from feedback_service.domain.access import Access


def request_claim(access: Access, request_id: str, method: str, *fields: object) -> RequestClaim | None:
    """The claim of a request sent with a (validated) request_id; None without
    one. A request id is the caller's own: the same id from another caller is
    another request. The fingerprint covers the method and every field the
    request's outcome depends on, so reusing an id for anything else is caught."""
    if not request_id:
        return None
    key = hashlib.sha256(f"{access.caller}\n{request_id}".encode()).hexdigest()
    fingerprint = hashlib.sha256(json.dumps([method, *fields]).encode()).hexdigest()
    return RequestClaim(key, fingerprint, access.acting_user())

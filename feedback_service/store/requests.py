"""Requests sent with a request_id (AIP-155): each is claimed in the
transaction of the write it asks for, so that

- the claim and the write commit together, or neither does: a call that
  fails leaves nothing behind, and its retry runs afresh;
- duplicates sent at once, to one replica or several, queue on the claim's
  unique key: the first runs, the others wait for it to commit and then
  answer with its response;
- a unit of work the Store runs again (after a deadlock or a serialisation
  failure) was rolled back whole, claim included, so it simply claims again.

A claim older than REQUEST_WINDOW_US is ignored (the request counts as new)
and pruned.
"""

from feedback_service.core.errors import FieldViolation, InvalidArgument, Unavailable
from feedback_service.core.records import RequestClaim
from feedback_service.store.models import IdempotentRequest, database
from feedback_service.store.prepared import Prepared

REQUEST_WINDOW_US = 24 * 3600 * 1_000_000
# A claim found, then gone (pruned, or just expired) before it could be read:
# each attempt starts afresh; two in a row take a prune racing this call twice.
CLAIM_ATTEMPTS = 3

_CLAIM = Prepared(
    lambda key, user_id, fingerprint, response, created_at: (
        IdempotentRequest.insert(
            key=key, user_id=user_id, fingerprint=fingerprint, response=response, created_at=created_at
        )
        .on_conflict_ignore()
        .returning()
    )
)
_CLAIMED = Prepared(
    lambda key: IdempotentRequest.select(
        IdempotentRequest.fingerprint, IdempotentRequest.response, IdempotentRequest.created_at
    ).where(IdempotentRequest.key == key)
)
_EXPIRE = Prepared(
    lambda key, created_at: IdempotentRequest.delete().where(
        (IdempotentRequest.key == key) & (IdempotentRequest.created_at == created_at)
    )
)


def claim(request: RequestClaim, response: str, now: int) -> str | None:
    """Claims the request for the calling transaction, recording `response`
    as its answer: None when it is claimed (the write follows, in the same
    transaction), or the first call's response when this is a repeat. A
    claim still in flight elsewhere makes this wait until it commits or
    rolls back. The same request id with another fingerprint is
    INVALID_ARGUMENT."""
    for _ in range(CLAIM_ATTEMPTS):
        values = (request.key, request.user_id, request.fingerprint, response, now)
        if database.execute_sql(*_CLAIM(*values)).rowcount:
            return None
        found = database.execute_sql(*_CLAIMED(request.key)).fetchone()
        if found is None:
            continue  # pruned since: claim it again
        fingerprint, earlier, created_at = found
        if created_at < now - REQUEST_WINDOW_US:
            database.execute_sql(*_EXPIRE(request.key, created_at))
            continue
        if fingerprint != request.fingerprint:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "request_id",
                        "was already used for a different request; use a new request_id for a new request",
                    )
                ]
            )
        first_response: str = earlier
        return first_response
    raise Unavailable("the request id is being claimed and expired concurrently; retry")


_PRUNE = Prepared(lambda cutoff: IdempotentRequest.delete().where(IdempotentRequest.created_at < cutoff))
_FORGET_USER = Prepared(
    lambda user_id: IdempotentRequest.delete().where(IdempotentRequest.user_id == user_id)
)


def prune_requests(now: int) -> int:
    """Deletes the claims older than the window; returns how many."""
    pruned: int = database.execute_sql(*_PRUNE(now - REQUEST_WINDOW_US)).rowcount
    return pruned


def forget_user(user_id: str) -> None:
    """Deletes a user's claims, and the responses they keep (in the caller's transaction)."""
    database.execute_sql(*_FORGET_USER(user_id))

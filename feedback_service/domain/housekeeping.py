"""Pruning in the background: changes past their retention (the change
feed's), and request ids past their window (safe retries'). Every replica
runs it; a prune finds nothing that another has just pruned, so replicas need
no coordination."""

import asyncio
import logging

from feedback_service.core.clock import now_us
from feedback_service.core.errors import ServiceError
from feedback_service.domain.changes import ChangeFeed
from feedback_service.store import requests
from feedback_service.store.database import Store

log = logging.getLogger(__name__)


async def prune(store: Store, changes: ChangeFeed) -> int:
    """Prunes once; returns how many changes were deleted."""
    pruned = await changes.prune()
    await store.write(requests.prune_requests, now_us())
    return pruned


async def prune_every(store: Store, changes: ChangeFeed, interval_s: float) -> None:
    """Prunes now and then every interval, until cancelled."""
    while True:
        try:
            pruned = await prune(store, changes)
            if pruned:
                log.info("pruned %d changes older than %s", pruned, changes.retention)
        except ServiceError as error:  # the database is unavailable: next time
            log.warning("pruning failed: %s", error)
        except Exception:  # a bug must not stop pruning for good
            log.exception("pruning failed")
        await asyncio.sleep(interval_s)

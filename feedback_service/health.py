"""Health statuses that follow the database: NOT_SERVING while it is
unreachable, SERVING again once it answers, with no restart."""

import asyncio
import logging

from feedback_service.servicers.health import HealthServicer
from feedback_service.store.database import Store

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0
FAILURES_TO_NOT_SERVING = 2


class DatabaseHealth:
    def __init__(self, store: Store, servicer: HealthServicer, interval_s: float) -> None:
        self._store = store
        self._servicer = servicer
        self._interval_s = interval_s
        self._serving: bool | None = None

    async def watch(self) -> None:
        """Probes the database every interval until cancelled; two failed
        probes in a row report NOT_SERVING, one good probe SERVING."""
        failures = 0
        while True:
            try:
                answered = await self._store.probe(timeout_s=PROBE_TIMEOUT_S)
            except Exception:  # a bug must not freeze health at its last status
                log.exception("the database probe failed")
                answered = False
            failures = 0 if answered else failures + 1
            serving = failures < FAILURES_TO_NOT_SERVING
            if serving != self._serving:
                if self._serving is not None:
                    log.warning(
                        "database %s", "reachable again: SERVING" if serving else "unreachable: NOT_SERVING"
                    )
                self._serving = serving
                self._servicer.set(serving)
            await asyncio.sleep(self._interval_s)

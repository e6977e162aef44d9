"""grpc.health.v1.Health: Check, List and Watch, with Watch streams that end
at once when the server shuts down."""

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from feedback_service.core.errors import echoed

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
_END = None  # queued to a watcher: the stream is over
# A health status (health_pb2.HealthCheckResponse.ServingStatus), or _END.
Update = int | None
Context: TypeAlias = "grpc.aio.ServicerContext[object, health_pb2.HealthCheckResponse]"


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Check, List and Watch over a fixed set of service names ("" is the
    whole server). After `shut_down` every status is NOT_SERVING for good and
    every Watch stream is sent that, then ended."""

    def __init__(self, service_names: Sequence[str]) -> None:
        self._statuses: dict[str, int] = dict.fromkeys(("", *service_names), SERVING)
        self._watchers: defaultdict[str, set[asyncio.Queue[Update]]] = defaultdict(set)
        self._shut_down = False

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {echoed(request.service)}")
        return health_pb2.HealthCheckResponse(status=status)

    # types-grpcio-health-checking predates Health/List: its messages are unknown to it.
    async def List(
        self,
        request: health_pb2.HealthListRequest,  # type: ignore[name-defined]  # see above
        context: Context,
    ) -> health_pb2.HealthListResponse:  # type: ignore[name-defined]  # see above
        return health_pb2.HealthListResponse(  # type: ignore[attr-defined]  # see above
            statuses={name: health_pb2.HealthCheckResponse(status=s) for name, s in self._statuses.items()}
        )

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Context) -> None:
        """Sends the current status, then each change, until shutdown."""
        updates: asyncio.Queue[Update] = asyncio.Queue()
        if self._shut_down:
            updates.put_nowait(_END)
        watchers = self._watchers[request.service]
        watchers.add(updates)
        try:
            status: Update = self._statuses.get(request.service, SERVICE_UNKNOWN)
            last: Update = None
            while status is not _END:
                if status != last:
                    await context.write(health_pb2.HealthCheckResponse(status=status))
                    last = status
                status = await updates.get()
        finally:
            watchers.discard(updates)
            if not watchers:
                self._watchers.pop(request.service, None)

    def set(self, serving: bool) -> None:
        """Sets every service's status (ignored once shut down)."""
        if self._shut_down:
            return
        status: int = SERVING if serving else NOT_SERVING
        for name in self._statuses:
            self._statuses[name] = status
        self._notify(status)

    async def shut_down(self, timeout_s: float = 1.0) -> None:
        """NOT_SERVING for good; open Watch streams are sent it and end (this
        waits up to timeout_s for them to)."""
        self.set(False)
        self._shut_down = True
        self._notify(_END)
        async with asyncio.timeout(timeout_s):
            while self._watchers:
                await asyncio.sleep(0.01)

    def _notify(self, update: Update) -> None:
        for watchers in self._watchers.values():
            for queue in watchers:
                queue.put_nowait(update)

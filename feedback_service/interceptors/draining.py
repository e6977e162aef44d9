"""Calls that wait on their caller, not on us: a request message that has not
arrived, an open health or reflection stream. At shutdown they are ended at
once with UNAVAILABLE instead of holding the grace period (and being cancelled
with a traceback at its end). A request message also has a time limit."""

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from feedback_service.core.errors import Unavailable

T = TypeVar("T")


class ShuttingDown(Unavailable):
    """Raised in a waiting call when the server begins to shut down."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down; retry on another instance")


class CallerWaits:
    """Tracks the calls waiting on their callers.

    Time limits are kept by one sweeper task, not a timer per call: with
    thousands of calls a second, a timer each (asyncio.timeout) left a heap
    of cancelled timers that cost more CPU than the rest of a small call's
    interceptors. A limit therefore fires up to a quarter of itself late."""

    def __init__(self, limit_s: float) -> None:
        self._limit_s = limit_s
        self._waiting: set[asyncio.Task[object]] = set()
        # Oldest first: every limited wait has the same limit, so insertion
        # order is the order in which they expire.
        self._limited: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def limit_s(self) -> float:
        return self._limit_s

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Awaits what the caller owes us; ShuttingDown if shutdown comes first."""
        return await self._wait(awaitable, limited=False)

    async def wait_limited(self, awaitable: Awaitable[T]) -> T:
        """As wait, but TimeoutError once the limit has passed."""
        return await self._wait(awaitable, limited=True)

    async def _wait(self, awaitable: Awaitable[T], *, limited: bool) -> T:
        if self._closing:
            raise ShuttingDown
        task = asyncio.current_task()
        assert task is not None, "a call is served in a task"
        self._waiting.add(task)
        if limited:
            self._limited[task] = asyncio.get_running_loop().time() + self._limit_s
            self._start_sweeper()
        try:
            return await awaitable
        except asyncio.CancelledError:
            if not task.cancelling() or not (self._closing or task in self._expired):
                raise
            task.uncancel()
            if self._closing:
                raise ShuttingDown from None
            raise TimeoutError from None
        finally:
            self._waiting.discard(task)
            self._limited.pop(task, None)
            self._expired.discard(task)

    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="request time limits")

    async def _sweep(self) -> None:
        """Cancels the limited waits past their limit; ends when none is left."""
        loop = asyncio.get_running_loop()
        period = min(1.0, self._limit_s / 4)
        while self._limited:
            await asyncio.sleep(period)
            now = loop.time()
            for task, expires in self._limited.items():
                if expires > now:
                    break
                if task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    def end_all(self) -> None:
        """Interrupts every waiting call; later waits fail at once."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in self._waiting:
            task.cancel()

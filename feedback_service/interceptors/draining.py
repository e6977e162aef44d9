"""Calls that wait on their caller, not on us: a request message that has not
arrived, an open health or reflection stream. At shutdown they are ended at
once with UNAVAILABLE instead of holding the grace period (and being cancelled
with a traceback at its end)."""

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
    def __init__(self) -> None:
        self._waiting: set[asyncio.Task[object]] = set()
        self._closing = False

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Awaits what the caller owes us; ShuttingDown if shutdown comes first."""
        if self._closing:
            raise ShuttingDown
        task = asyncio.current_task()
        assert task is not None, "a call is served in a task"
        self._waiting.add(task)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if not self._closing or not task.cancelling():
                raise
            task.uncancel()
            raise ShuttingDown from None
        finally:
            self._waiting.discard(task)

    def end_all(self) -> None:
        """Interrupts every waiting call; later waits fail at once."""
        self._closing = True
        for task in self._waiting:
            task.cancel()

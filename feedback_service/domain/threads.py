"""Registering threads and runs, as told by the agent platform (a service
acting as itself: the access rule lets nobody else call these)."""

from collections.abc import Mapping

from feedback_service.core.records import RunRecord, ThreadRecord
from feedback_service.domain.validation import Checker
from feedback_service.store import deletes, threads
from feedback_service.store.database import Store


class ThreadRules:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def register_thread(
        self, *, thread_id: str, owner_user_id: str, deadline: float | None
    ) -> ThreadRecord:
        """Idempotent; FAILED_PRECONDITION if the thread has another owner."""
        check = Checker()
        check.id("thread_id", thread_id)
        check.id("owner_user_id", owner_user_id, required=False)
        check.done()
        return await self._store.write(threads.register_thread, thread_id, owner_user_id, deadline=deadline)

    async def register_run(
        self, *, thread_id: str, run_id: str, labels: Mapping[str, str] | None = None, deadline: float | None
    ) -> RunRecord:
        """Idempotent; NOT_FOUND for an unregistered thread, FAILED_PRECONDITION
        if the run belongs to another thread or has other labels."""
        check = Checker()
        check.id("thread_id", thread_id)
        check.id("run_id", run_id)
        checked = check.labels("labels", labels or {})
        check.done()
        return await self._store.write(threads.register_run, thread_id, run_id, checked, deadline=deadline)

    async def delete_thread(self, *, thread_id: str, deadline: float | None) -> tuple[int, int]:
        """Deletes a thread with its runs and feedback; returns (runs, feedback) deleted."""
        check = Checker()
        check.id("thread_id", thread_id)
        check.done()
        return await self._store.write(deletes.delete_thread, thread_id, deadline=deadline)

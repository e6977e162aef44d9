"""Registering threads and runs, as told by the agent platform."""

from feedback_service.domain.validation import Checker
from feedback_service.store import queries
from feedback_service.store.database import Store
from feedback_service.store.models import Run, Thread


class ThreadRules:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def register_thread(self, thread_id: str, owner_user_id: str) -> Thread:
        check = Checker()
        check.id("thread_id", thread_id)
        check.id("owner_user_id", owner_user_id, required=False)
        check.done()
        return await self._store.write(queries.register_thread, thread_id, owner_user_id)

    async def register_run(self, thread_id: str, run_id: str) -> Run:
        check = Checker()
        check.id("thread_id", thread_id)
        check.id("run_id", run_id)
        check.done()
        return await self._store.write(queries.register_run, thread_id, run_id)

    async def delete_thread(self, thread_id: str) -> tuple[int, int]:
        check = Checker()
        check.id("thread_id", thread_id)
        check.done()
        return await self._store.write(queries.delete_thread, thread_id)

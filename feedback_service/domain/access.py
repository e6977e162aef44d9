"""What a call may touch once its declared access rule has let it in, and the
thread ownership rule. The transport decides the Access; the domain applies it
to the thread the request names."""

from dataclasses import dataclass
from enum import Enum

from feedback_service.core.errors import FailedPrecondition, NotFound
from feedback_service.core.records import may_use_thread


class ThreadCheck(Enum):
    NONE = "none"  # no ownership check: the RPC names no thread, or a service acts as itself
    READ = "read"  # an owned, shared or unregistered thread passes
    WRITE = "write"  # the thread must be registered, and owned by the user or shared


@dataclass(frozen=True, slots=True)
class Access:
    # The user the call acts for; None for a service acting as itself, which
    # sees every user's feedback.
    user_id: str | None
    thread_check: ThreadCheck
    # Who is calling, printable: the user, the service, or service/user when a
    # service acts for a user. Request ids are the caller's own; logs name it.
    caller: str = ""

    @property
    def checks_thread(self) -> bool:
        return self.thread_check is not ThreadCheck.NONE

    def acting_user(self) -> str:
        """The user a write is attributed to."""
        if self.user_id is None:
            raise FailedPrecondition("this call acts for a user: a service must name one with x-on-behalf-of")
        return self.user_id

    def check_thread(self, thread_id: str, owner: str | None) -> None:
        """NOT_FOUND unless the caller may see (and, for writes, use) the
        thread; `owner` is None when the thread is not registered, '' when it
        is shared."""
        if not self.checks_thread:
            return
        if owner is None:
            if self.thread_check is ThreadCheck.WRITE:
                raise NotFound(f"thread {thread_id} not found")
            return  # reads on a thread that is not registered see nothing
        if not may_use_thread(owner, self.user_id):
            raise NotFound(f"thread {thread_id} not found")

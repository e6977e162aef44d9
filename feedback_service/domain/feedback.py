"""The feedback operations: validate the request once, apply the thread rule
the caller's Access names, then run one unit of work in the store.

`deadline` is the caller's, as a time.monotonic() value (None: no deadline);
work still queued when it passes is dropped. The operations live by concern:
writes (feedback_writes.py), lists and the export (feedback_lists.py), and
counts (feedback_counts.py); FeedbackRules is all of them over one store.
"""

from collections.abc import Sequence

from feedback_service.domain.feedback_counts import FeedbackCounts
from feedback_service.domain.feedback_lists import FeedbackLists
from feedback_service.domain.feedback_writes import FeedbackWrites
from feedback_service.domain.validation import DEFAULT_TAGS
from feedback_service.store.database import Store


class FeedbackRules(FeedbackWrites, FeedbackLists, FeedbackCounts):
    def __init__(self, store: Store, tags: Sequence[str] = DEFAULT_TAGS) -> None:
        self._store = store
        self._tags = tuple(tags)  # the vocabulary of tags, in its configured order

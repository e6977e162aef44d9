"""The columns every feedback read selects, in FeedbackRow's order, and the
decoding of a row as stored."""

from collections.abc import Sequence
from typing import Any

from feedback_service.core.records import FeedbackRow
from feedback_service.store.models import Feedback, split_tags

# Every feedback read selects these columns, in FeedbackRow's order.
FEEDBACK_COLUMNS = (
    Feedback.id,
    Feedback.feedback_id,
    Feedback.thread_id,
    Feedback.run,
    Feedback.user_id,
    Feedback.message_id,
    Feedback.rating,
    Feedback.comment,
    Feedback.created_at,
    Feedback.updated_at,
    Feedback.tags,
)
assert tuple(c.column_name for c in FEEDBACK_COLUMNS) == FeedbackRow._fields


def decode_row(values: Sequence[Any]) -> FeedbackRow:
    """A FeedbackRow from FEEDBACK_COLUMNS' values as stored."""
    *fields, tags = values
    return FeedbackRow._make((*fields, split_tags(tags)))

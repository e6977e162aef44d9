"""Domain records -> protobuf messages, and the call's deadline."""

import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from feedback.v1 import feedback_pb2, thread_registry_pb2
from feedback_service.domain.changes import Change
from feedback_service.domain.records import FeedbackRow, RunRecord, RunStats, ThreadRecord


def deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline as a time.monotonic() value; None without one."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def timestamp(micros: int) -> Timestamp:
    seconds, remainder = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=remainder * 1000)


def _fill(message: feedback_pb2.Feedback, row: FeedbackRow) -> feedback_pb2.Feedback:
    """Sets the fields of a Feedback in place from a row. Timestamps are set
    field by field, a quarter faster than from dicts (a list pays it 200 times)."""
    _, feedback_id, thread_id, run_id, user_id, message_id, rating, comment, created, updated = row
    message.feedback_id = feedback_id
    message.thread_id = thread_id
    message.run_id = run_id
    message.user_id = user_id
    message.message_id = message_id
    message.rating = rating
    message.comment = comment
    at = message.created_at
    at.seconds, micros = divmod(created, 1_000_000)
    at.nanos = micros * 1000
    at = message.updated_at
    at.seconds, micros = divmod(updated, 1_000_000)
    at.nanos = micros * 1000
    return message


def feedback_message(row: FeedbackRow) -> feedback_pb2.Feedback:
    return _fill(feedback_pb2.Feedback(), row)


def feedback_page(response, rows: list[FeedbackRow]):
    """Fills a List*Response's repeated `feedback` field in place (cheaper than
    building messages and copying them in); returns the response."""
    add = response.feedback.add
    for row in rows:
        _fill(add(), row)
    return response


def stats_message(stats: RunStats) -> feedback_pb2.FeedbackStats:
    return feedback_pb2.FeedbackStats(
        run_id=stats.run_id, total=stats.total, positive=stats.positive, negative=stats.negative
    )


def thread_message(record: ThreadRecord) -> thread_registry_pb2.Thread:
    return thread_registry_pb2.Thread(
        thread_id=record.thread_id,
        owner_user_id=record.owner_user_id,
        created_at=timestamp(record.created_at),
    )


def run_message(record: RunRecord) -> thread_registry_pb2.Run:
    return thread_registry_pb2.Run(
        run_id=record.run_id, thread_id=record.thread_id, created_at=timestamp(record.created_at)
    )


def change_message(change: Change) -> feedback_pb2.FeedbackChange:
    """A FeedbackChange: the feedback with every field while it exists, only
    its ids and key once it is gone."""
    row = change.row
    feedback = {
        "feedback_id": row.feedback_id,
        "thread_id": row.thread_id,
        "run_id": row.run_id,
        "user_id": row.user_id,
        "message_id": row.message_id,
    }
    if row.rating is not None:
        feedback.update(
            rating=row.rating,
            comment=row.comment,
            created_at=timestamp(row.created_at),
            updated_at=timestamp(row.updated_at),
        )
    return feedback_pb2.FeedbackChange(
        cursor=change.cursor,
        kind=row.kind,
        feedback=feedback,
        changed_at=timestamp(row.changed_at),
    )

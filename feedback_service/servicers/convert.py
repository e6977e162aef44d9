"""Store rows -> protobuf messages."""

from google.protobuf.timestamp_pb2 import Timestamp

from feedback.v1 import feedback_pb2, thread_registry_pb2
from feedback_service.store.models import Feedback, Run, Thread
from feedback_service.store.queries import RunStats


def timestamp(micros: int) -> Timestamp:
    seconds, remainder = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=remainder * 1000)


def feedback_message(row: Feedback) -> feedback_pb2.Feedback:
    return feedback_pb2.Feedback(
        feedback_id=row.feedback_id,
        thread_id=row.thread_id,
        run_id=row.run_id,
        user_id=row.user_id,
        message_id=row.message_id,
        rating=row.rating,
        comment=row.comment,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )


def stats_message(stats: RunStats) -> feedback_pb2.FeedbackStats:
    return feedback_pb2.FeedbackStats(
        run_id=stats.run_id, total=stats.total, positive=stats.positive, negative=stats.negative
    )


def thread_message(row: Thread) -> thread_registry_pb2.Thread:
    return thread_registry_pb2.Thread(
        thread_id=row.thread_id, owner_user_id=row.owner_user_id, created_at=timestamp(row.created_at)
    )


def run_message(row: Run) -> thread_registry_pb2.Run:
    return thread_registry_pb2.Run(
        run_id=row.run_id, thread_id=row.thread_id, created_at=timestamp(row.created_at)
    )

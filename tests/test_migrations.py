"""Schema versions move an existing database forward without losing rows."""

from feedback.v1 import feedback_pb2 as pb
from feedback_service.store.database import open_database
from feedback_service.store.migrations import SCHEMA_VERSION, STATS_INDEX, current_version, migrate
from feedback_service.store.models import Feedback, Run, Thread
from feedback_service.store.queries import now_us
from tests.harness import as_service, reset_database, running_server, server_settings


def fill_version_1(url: str) -> list[str]:
    """A database as version 1 of the schema left it, with feedback in it."""
    reset_database(url)
    db = open_database(url)
    assert migrate(db, target=1) == 1
    now = now_us()
    with db.connection_context(), db.atomic():
        Thread.create(thread_id="t1", owner_user_id="alice", created_at=now)
        Run.create(run_id="r1", thread="t1", created_at=now)
        ids = []
        for i, rating in enumerate((1, -1, 1)):
            ids.append(f"f{i}")
            Feedback.create(
                feedback_id=f"f{i}",
                thread_id="t1",
                run="r1",
                user_id=f"u{i}",
                message_id="",
                rating=rating,
                comment=f"comment {i}",
                created_at=now + i,
                updated_at=now + i,
            )
    db.close()
    return ids


def test_migrating_a_version_1_database_keeps_every_row(database_url, tmp_path):
    ids = fill_version_1(database_url)
    db = open_database(database_url)
    with db.connection_context():
        assert current_version(db) == 1
        assert STATS_INDEX not in {index.name for index in db.get_indexes("feedback")}
    assert migrate(db) == SCHEMA_VERSION
    assert migrate(db) == SCHEMA_VERSION  # idempotent
    with db.connection_context():
        assert STATS_INDEX in {index.name for index in db.get_indexes("feedback")}
    db.close()
    # The service starts on the migrated database and serves the old rows.
    with running_server(server_settings(tmp_path, database_url=database_url)) as (_, client):
        listed = client.feedback.ListFeedback(
            pb.ListFeedbackRequest(thread_id="t1", run_id="r1"), metadata=as_service()
        )
        assert [f.feedback_id for f in listed.feedback] == ids
        assert [f.comment for f in listed.feedback] == ["comment 0", "comment 1", "comment 2"]
        stats = client.feedback.GetFeedbackStats(
            pb.GetFeedbackStatsRequest(thread_id="t1", run_id="r1"), metadata=as_service()
        )
        assert (stats.total, stats.positive, stats.negative) == (3, 2, 1)

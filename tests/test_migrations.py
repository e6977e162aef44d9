"""Schema versions move an existing database forward without losing rows, and
end at the schema models.py describes."""

import base64

from feedback.v1 import feedback_pb2 as pb
from feedback_service.store.database import open_database
from feedback_service.store.migrations import SCHEMA_VERSION, current_version, migrate
from feedback_service.store.models import MODELS, STATS_INDEX, THREAD_VOTES_INDEX, VOTES_BY_TIME_INDEX
from tests.harness import as_service, as_service_for, reset_database, running_server, server_settings

NOW = 1_700_000_000_000_000


def insert(db, table_and_columns: str, values: tuple) -> None:
    marks = ", ".join([db.param] * len(values))
    db.execute_sql(f"INSERT INTO {table_and_columns} VALUES ({marks})", values)  # noqa: S608 - our literals


def fill_version_1(url: str) -> list[str]:
    """A database made by the schema's version 1 step, with feedback in it,
    written as plain SQL so that nothing of today's models is involved."""
    reset_database(url)
    db = open_database(url)
    assert migrate(db, target=1) == 1
    with db.connection_context(), db.atomic():
        insert(db, "thread (thread_id, owner_user_id, created_at)", ("t1", "", NOW))  # shared
        insert(db, "run (run_id, thread_id, created_at)", ("r1", "t1", NOW))
        ids = []
        # Three votes, then a message-level feedback (which stats no longer count).
        for i, (rating, message) in enumerate(((1, ""), (-1, ""), (1, ""), (1, "m1"))):
            ids.append(f"f{i}")
            insert(
                db,
                "feedback (feedback_id, thread_id, run_id, user_id, message_id, rating, comment,"
                " created_at, updated_at)",
                (f"f{i}", "t1", "r1", f"u{i}", message, rating, f"comment {i}", NOW + i, NOW + i),
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
        indexes = {index.name for index in db.get_indexes("feedback")}
        assert {STATS_INDEX, THREAD_VOTES_INDEX, VOTES_BY_TIME_INDEX} <= indexes
        assert "feedback_stats_covering" not in indexes  # version 2's, replaced by version 4's
        assert [tags for (tags,) in db.execute_sql("SELECT tags FROM feedback")] == [""] * len(ids)
    db.close()
    # The service starts on the migrated database and serves the old rows.
    with running_server(server_settings(tmp_path, database_url=database_url)) as (_, client):
        listed = client.feedback.ListFeedback(
            pb.ListFeedbackRequest(thread_id="t1", run_id="r1"), metadata=as_service()
        )
        assert [f.feedback_id for f in listed.feedback] == ids
        assert [f.comment for f in listed.feedback] == [f"comment {i}" for i in range(4)]
        assert all(list(f.tags) == [] for f in listed.feedback)
        # The rows stay as they are; stats count the votes, and the message apart.
        stats = client.feedback.GetFeedbackStats(
            pb.GetFeedbackStatsRequest(thread_id="t1", run_id="r1", include_messages=True),
            metadata=as_service(),
        )
        assert (stats.total, stats.positive, stats.negative) == (3, 2, 1)
        assert [(m.message_id, m.total, m.positive) for m in stats.messages] == [("m1", 1, 1)]
        thread = client.feedback.GetThreadFeedbackStats(
            pb.GetThreadFeedbackStatsRequest(thread_id="t1"), metadata=as_service()
        )
        assert (thread.total, thread.runs_with_feedback, list(thread.tags)) == (3, 1, [])
        # Old feedback takes tags from its next upsert.
        upserted = client.feedback.UpsertFeedback(
            pb.UpsertFeedbackRequest(thread_id="t1", run_id="r1", rating=-1, tags=["slow"]),
            metadata=as_service_for("u0"),
        )
        assert (upserted.feedback_id, list(upserted.tags)) == ("f0", ["slow"])


def test_a_migrated_database_has_the_schema_the_models_describe(database_url):
    reset_database(database_url)
    db = open_database(database_url)
    migrate(db)
    with db.connection_context():
        for model in MODELS:
            table = model._meta.table_name
            columns = {column.name for column in db.get_columns(table)}
            assert columns == {field.column_name for field in model._meta.sorted_fields}, table
            indexed = {tuple(index.columns) for index in db.get_indexes(table)}
            for index in model._meta.fields_to_index():
                wanted = tuple(getattr(f, "column_name", f) for f in index._expressions)
                assert wanted in indexed, (table, wanted)
    db.close()


def test_the_change_log_starts_with_the_feedback_already_stored(database_url, tmp_path):
    """A consumer reading the change feed from its start after an upgrade gets
    every feedback stored before it, oldest first, then the new changes."""
    ids = fill_version_1(database_url)
    db = open_database(database_url)
    assert migrate(db) == SCHEMA_VERSION
    db.close()
    with running_server(server_settings(tmp_path, database_url=database_url)) as (_, client):
        client.feedback.DeleteUserFeedback(pb.DeleteUserFeedbackRequest(user_id="u1"), metadata=as_service())
        changes = list(
            client.feedback.StreamFeedbackChanges(pb.StreamFeedbackChangesRequest(), metadata=as_service())
        )
    assert [(c.kind, c.feedback.feedback_id) for c in changes] == [
        *((pb.CHANGE_KIND_CREATED, feedback_id) for feedback_id in ids),
        (pb.CHANGE_KIND_DELETED, ids[1]),
    ]
    assert [c.feedback.comment for c in changes] == ["comment 0", "", "comment 2", "comment 3", ""]


def test_a_cursor_handed_out_before_version_6_resumes_after_the_upgrade(database_url, tmp_path):
    """Version 6 gives positions a transaction: a cursor of version 5's log
    ("<position>.<log id>") still names the same change, and resumes after it
    with no gap and no repeat."""
    ids = fill_version_1(database_url)
    db = open_database(database_url)
    assert migrate(db, target=5) == 5
    with db.connection_context():
        (log_id,) = db.execute_sql("SELECT log_id FROM feedback_change_log").fetchone()
        assert migrate(db) == SCHEMA_VERSION
    db.close()
    old_cursor = base64.urlsafe_b64encode(f"2.{log_id}".encode()).decode().rstrip("=")  # after ids[1]
    with running_server(server_settings(tmp_path, database_url=database_url)) as (_, client):
        new = client.feedback.CreateFeedback(
            pb.CreateFeedbackRequest(thread_id="t1", run_id="r1", rating=1, message_id="m9"),
            metadata=as_service_for("u9"),
        )
        after = list(
            client.feedback.StreamFeedbackChanges(
                pb.StreamFeedbackChangesRequest(after_cursor=old_cursor), metadata=as_service()
            )
        )
    assert [c.feedback.feedback_id for c in after] == [*ids[2:], new.feedback_id]

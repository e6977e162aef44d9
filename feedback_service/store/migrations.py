"""Schema versions. Each step moves the schema forward one version without
losing rows; `migrate()` applies the steps a database has not seen yet, on
`feedback-service migrate` and at every start.

Each step is frozen: it declares the tables it creates as they were at that
version, so an old database and a new one end up alike whatever models.py
says today. Append new steps; never edit one that has shipped.
"""

import logging
import secrets
import time
from collections.abc import Callable

from peewee import (
    BigAutoField,
    BigIntegerField,
    CharField,
    Check,
    CompositeKey,
    Database,
    ForeignKeyField,
    IntegerField,
    Model,
    SmallIntegerField,
    TextField,
    Value,
    fn,
)
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as apply_operations

from feedback_service.store.dialects import Dialect
from feedback_service.store.models import SchemaVersion

log = logging.getLogger(__name__)


def _v1_create_tables(db: Dialect) -> None:
    """Registered threads and runs, and the feedback on runs."""

    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False
            table_settings = db.table_settings

    class Thread(Base):
        thread_id = CharField(128, primary_key=True)
        owner_user_id = CharField(128, default="")
        created_at = BigIntegerField()

    class Run(Base):
        run_id = CharField(128, primary_key=True)
        thread = ForeignKeyField(Thread, column_name="thread_id", on_delete="CASCADE")
        created_at = BigIntegerField()

    class Feedback(Base):
        id = BigAutoField()
        feedback_id = CharField(128, unique=True)
        thread_id = CharField(128)
        run = ForeignKeyField(Run, column_name="run_id", on_delete="CASCADE")
        user_id = CharField(128)
        message_id = CharField(128, default="")
        rating = SmallIntegerField(constraints=[Check("rating IN (-1, 1)")])
        comment = TextField(default="")
        created_at = BigIntegerField()
        updated_at = BigIntegerField()

        class Meta:
            indexes = (
                (("thread_id", "run_id", "user_id", "message_id"), True),
                (("thread_id", "run_id", "id"), False),
                (("thread_id", "user_id", "id"), False),
            )

    db.create_tables([Thread, Run, Feedback], safe=True)


def _v2_add_stats_index(db: Dialect) -> None:
    """A covering index for stats: (thread_id, run_id, rating)."""
    if "feedback_stats_covering" not in {index.name for index in db.get_indexes("feedback")}:
        migrator = SchemaMigrator.from_database(db)
        apply_operations(
            migrator.add_index("feedback", ("thread_id", "run_id", "rating"), name="feedback_stats_covering")
        )


def _quoted(db: Dialect, name: str) -> str:
    return f"{db.quote[0]}{name}{db.quote[1]}"


def _v3_tags_and_votes(db: Dialect) -> None:
    """Tags: a `tags` column on feedback (comma-separated, '' for the rows
    already there), and the feedback_tag table, one row per tag, that the tag
    filter and the tag counts read. Votes: stats now count run-level feedback
    (message_id '') apart from message-level feedback, so the stats index of
    version 2, (thread_id, run_id, rating), which cannot tell them apart, is
    replaced by a covering (thread_id, run_id, message_id, rating)."""
    if "tags" not in {column.name for column in db.get_columns("feedback")}:
        # NOT NULL with a constant default: no rewrite of existing rows on
        # PostgreSQL 11+, MariaDB 10.3+ and SQLite.
        db.execute_sql(
            f"ALTER TABLE {_quoted(db, 'feedback')} ADD COLUMN {_quoted(db, 'tags')} "
            "VARCHAR(198) NOT NULL DEFAULT ''"
        )

    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False
            table_settings = db.table_settings

    class Feedback(Base):  # only what the foreign key refers to
        id = BigAutoField()

    class FeedbackTag(Base):
        feedback_row = ForeignKeyField(
            Feedback, column_name="feedback_row_id", on_delete="CASCADE", index=False
        )
        tag = CharField(32)
        thread_id = CharField(128)
        run_id = CharField(128)
        message_id = CharField(128)

        class Meta:
            table_name = "feedback_tag"
            primary_key = CompositeKey("feedback_row", "tag")
            indexes = (
                (("thread_id", "tag", "feedback_row_id"), False),
                (("thread_id", "message_id", "run_id", "tag"), False),
            )

    db.create_tables([FeedbackTag], safe=True)
    existing = {index.name for index in db.get_indexes("feedback")}
    migrator = SchemaMigrator.from_database(db)
    operations = []
    if "feedback_run_stats" not in existing:
        columns = ("thread_id", "run_id", "message_id", "rating")
        operations.append(migrator.add_index("feedback", columns, name="feedback_run_stats"))
    if "feedback_stats_covering" in existing:
        operations.append(migrator.drop_index("feedback", "feedback_stats_covering"))
    apply_operations(*operations)


def _v4_thread_vote_indexes(db: Dialect) -> None:
    """Covering indexes for a thread's votes (its stats, and its time series:
    votes in a range of created_at), and for the votes of every thread in a
    range of created_at."""
    existing = {index.name for index in db.get_indexes("feedback")}
    migrator = SchemaMigrator.from_database(db)
    operations = [
        migrator.add_index("feedback", columns, name=name)
        for name, columns in (
            ("feedback_thread_votes", ("thread_id", "message_id", "created_at", "rating", "run_id")),
            ("feedback_votes_by_time", ("message_id", "created_at", "rating")),
        )
        if name not in existing
    ]
    apply_operations(*operations)


def _v5_change_log_and_request_ids(db: Dialect) -> None:
    """The change log behind StreamFeedbackChanges (feedback_change, and its
    one-row head feedback_change_log), the requests sent with a request_id
    (idempotent_request), and an index to erase a user's feedback.

    The log starts with a CREATED change for every feedback already stored,
    oldest first and dated now, so that a consumer reading the log from its
    start gets every feedback, not only those written after the upgrade."""

    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False
            table_settings = db.table_settings

    class Feedback(Base):  # the columns this step reads
        id = BigAutoField()
        feedback_id = CharField(128)
        thread_id = CharField(128)
        run_id = CharField(128)
        user_id = CharField(128)
        message_id = CharField(128)

    class FeedbackChange(Base):
        id = BigIntegerField(primary_key=True)
        kind = SmallIntegerField()
        feedback_id = CharField(128)
        thread_id = CharField(128)
        run_id = CharField(128)
        user_id = CharField(128)
        message_id = CharField(128, default="")
        changed_at = BigIntegerField()

        class Meta:
            indexes = ((("thread_id", "id"), False),)

    class FeedbackChangeLog(Base):
        id = IntegerField(primary_key=True)
        log_id = CharField(32)
        last_change = BigIntegerField(default=0)
        pruned_through = BigIntegerField(default=0)

    class IdempotentRequest(Base):
        key = CharField(64, primary_key=True)
        user_id = CharField(128)
        fingerprint = CharField(64)
        response = TextField()
        created_at = BigIntegerField()

        class Meta:
            indexes = ((("created_at",), False), (("user_id",), False))

    db.create_tables([FeedbackChange, FeedbackChangeLog, IdempotentRequest], safe=True)
    # MySQL commits DDL at once: a run that failed after this may be repeated.
    if not FeedbackChangeLog.select().exists():
        existing = Feedback.select(
            fn.ROW_NUMBER().over(order_by=[Feedback.id]),
            Value(1),  # CREATED
            Feedback.feedback_id,
            Feedback.thread_id,
            Feedback.run_id,
            Feedback.user_id,
            Feedback.message_id,
            Value(time.time_ns() // 1000),
        )
        fields = ["id", "kind", "feedback_id", "thread_id", "run_id", "user_id", "message_id", "changed_at"]
        FeedbackChange.insert_from(existing, [FeedbackChange._meta.fields[name] for name in fields]).execute()
        # The log's id, carried by every cursor: a cursor of another database's
        # log (a restored copy, another deployment) is recognised as such.
        last = FeedbackChange.select(fn.COUNT(FeedbackChange.id)).scalar()
        FeedbackChangeLog.insert(id=1, log_id=secrets.token_hex(8), last_change=last).execute()
    if "feedback_user_id" not in {index.name for index in db.get_indexes("feedback")}:
        migrator = SchemaMigrator.from_database(db)
        apply_operations(migrator.add_index("feedback", ("user_id",), name="feedback_user_id"))


def _v6_change_log_by_transaction(db: Dialect) -> None:
    """The change log's position becomes (xact_id, id): a `xact_id` column on
    feedback_change (0 for the rows already there), indexes in that order,
    and the newest position pruned as (pruned_xact, pruned_through).

    Where the dialect orders changes by transaction (PostgreSQL), `id` now
    comes from a sequence that starts after every position handed out, and
    each change records its transaction's id. A cursor handed out before,
    position p, is (0, p) now: the same change, with every later one after it."""
    for table, column in (("feedback_change", "xact_id"), ("feedback_change_log", "pruned_xact")):
        if column not in {c.name for c in db.get_columns(table)}:
            db.execute_sql(
                f"ALTER TABLE {_quoted(db, table)} ADD COLUMN {_quoted(db, column)} BIGINT NOT NULL DEFAULT 0"
            )
    existing = {index.name for index in db.get_indexes("feedback_change")}
    migrator = SchemaMigrator.from_database(db)
    operations = [
        migrator.add_index("feedback_change", columns, name=name)
        for name, columns in (
            ("feedback_change_xact_id_id", ("xact_id", "id")),
            ("feedback_change_thread_id_xact_id_id", ("thread_id", "xact_id", "id")),
        )
        if name not in existing
    ]
    if "feedback_change_thread_id_id" in existing:
        operations.append(migrator.drop_index("feedback_change", "feedback_change_thread_id_id"))
    apply_operations(*operations)
    if db.change_xact is not None:
        # Past every position handed out, pruned ones included (the head's last_change).
        start = db.execute_sql(
            "SELECT GREATEST(COALESCE((SELECT MAX(id) FROM feedback_change), 0), "
            "COALESCE((SELECT MAX(last_change) FROM feedback_change_log), 0)) + 1"
        ).fetchone()[0]
        db.execute_sql(
            "ALTER TABLE feedback_change ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY "
            f"(START WITH {int(start)})"
        )


def _v7_run_labels(db: Dialect) -> None:
    """Run labels: the run_label table, one row per label of a run, keyed
    by (run_id, key), with an index on (key, value, run_id) to select runs
    by a label. Runs registered before it have no labels."""

    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False
            table_settings = db.table_settings

    class Run(Base):  # only what the foreign key refers to
        run_id = CharField(128, primary_key=True)

    class RunLabel(Base):
        run = ForeignKeyField(Run, column_name="run_id", on_delete="CASCADE", index=False)
        key = CharField(32)
        value = CharField(128)

        class Meta:
            table_name = "run_label"
            primary_key = CompositeKey("run", "key")
            indexes = ((("key", "value", "run_id"), False),)

    db.create_tables([RunLabel], safe=True)


# (version, step): append new steps, never edit applied ones.
MIGRATIONS: list[tuple[int, Callable[[Dialect], None]]] = [
    (1, _v1_create_tables),
    (2, _v2_add_stats_index),
    (3, _v3_tags_and_votes),
    (4, _v4_thread_vote_indexes),
    (5, _v5_change_log_and_request_ids),
    (6, _v6_change_log_by_transaction),
    (7, _v7_run_labels),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def current_version(db: Database) -> int:
    if not db.table_exists(SchemaVersion._meta.table_name):
        return 0
    return SchemaVersion.select(fn.MAX(SchemaVersion.version)).scalar() or 0


def migrate(db: Dialect, target: int = SCHEMA_VERSION) -> int:
    """Brings the schema to `target` (default: the newest); returns the version
    reached. Replicas starting together take turns through the dialect's
    migration lock, held for the whole run (MySQL) or by each step's
    transaction, which then checks the version again (PostgreSQL, which
    may sit behind a transaction-pooling PgBouncer); SQLite serialises on its
    own write lock."""
    with db.connection_context(), db.migration_lock():
        with db.atomic():
            db.lock_migration_step()
            db.create_tables([SchemaVersion], safe=True)
        version = current_version(db)
        for step_version, step in MIGRATIONS:
            if version < step_version <= target:
                with db.atomic():
                    db.lock_migration_step()
                    if current_version(db) < step_version:  # not done meanwhile by another replica
                        step(db)
                        SchemaVersion.create(version=step_version)
                        log.info("migrated schema to version %d", step_version)
                version = step_version
    return version

"""Schema versions. Each step moves the schema forward one version without
losing rows; `migrate()` applies the steps a database has not seen yet, on
`feedback-service migrate` and at every start.

Models describe the tables as first created (version 1); what later versions
add is declared here, so that an old database and a new one end up alike.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from peewee import Database, MySQLDatabase, PostgresqlDatabase, fn
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as apply_operations

from feedback_service.store.models import MODELS, Feedback, SchemaVersion

log = logging.getLogger(__name__)

STATS_INDEX = "feedback_stats_covering"


MYSQL_TABLE_SETTINGS = ["DEFAULT CHARSET=utf8mb4", "COLLATE=utf8mb4_bin"]


def _create_tables(db: Database) -> None:
    if not isinstance(db, MySQLDatabase):
        db.create_tables(MODELS, safe=True)
        return
    # Ids are case-sensitive and comments hold any Unicode: MySQL's default
    # *_ci collation would make "Alice" and "alice" the same user.
    for model in MODELS:
        model._meta.table_settings = MYSQL_TABLE_SETTINGS
    try:
        db.create_tables(MODELS, safe=True)
    finally:
        for model in MODELS:
            model._meta.table_settings = []


def _add_stats_index(db: Database) -> None:
    # Stats read (thread_id, run_id, rating) from the index alone: no table
    # rows are touched, however many feedback rows a run has.
    if STATS_INDEX not in {index.name for index in db.get_indexes(Feedback._meta.table_name)}:
        migrator = SchemaMigrator.from_database(db)
        apply_operations(
            migrator.add_index(Feedback._meta.table_name, ("thread_id", "run_id", "rating"), name=STATS_INDEX)
        )


# (version, step): append new steps, never edit applied ones.
MIGRATIONS: list[tuple[int, Callable[[Database], None]]] = [
    (1, _create_tables),
    (2, _add_stats_index),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def current_version(db: Database) -> int:
    if not db.table_exists(SchemaVersion._meta.table_name):
        return 0
    return SchemaVersion.select(fn.MAX(SchemaVersion.version)).scalar() or 0


MIGRATION_LOCK = 0x6665_6564  # an arbitrary, fixed advisory lock id


@contextmanager
def _migration_lock(db: Database) -> Iterator[None]:
    """Serialises replicas that start together against one server database
    (SQLite serialises on its own write lock)."""
    if isinstance(db, PostgresqlDatabase):
        db.execute_sql("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            yield
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    elif isinstance(db, MySQLDatabase):
        db.execute_sql("SELECT GET_LOCK('feedback_service_migrate', 60)")
        try:
            yield
        finally:
            db.execute_sql("SELECT RELEASE_LOCK('feedback_service_migrate')")
    else:
        yield


def migrate(db: Database, target: int = SCHEMA_VERSION) -> int:
    """Brings the schema to `target` (default: the newest); returns the version reached."""
    with db.connection_context(), _migration_lock(db):
        db.create_tables([SchemaVersion], safe=True)
        version = current_version(db)
        for step_version, step in MIGRATIONS:
            if version < step_version <= target:
                with db.atomic():
                    step(db)
                    SchemaVersion.create(version=step_version)
                log.info("migrated schema to version %d", step_version)
                version = step_version
    return version

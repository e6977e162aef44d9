"""Schema versions. Each step moves the schema forward one version without
losing rows; `migrate()` applies the steps a database has not seen yet."""

import logging
from collections.abc import Callable

from peewee import Database, fn

from feedback_service.store.models import MODELS, SchemaVersion

log = logging.getLogger(__name__)


def _create_initial_tables(db: Database) -> None:
    db.create_tables(MODELS, safe=True)


# (version, step): append new steps, never edit applied ones.
MIGRATIONS: list[tuple[int, Callable[[Database], None]]] = [
    (1, _create_initial_tables),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def current_version(db: Database) -> int:
    if not db.table_exists(SchemaVersion._meta.table_name):
        return 0
    return SchemaVersion.select(fn.MAX(SchemaVersion.version)).scalar() or 0


def migrate(db: Database) -> int:
    """Brings the schema to SCHEMA_VERSION; returns the version reached."""
    with db.connection_context():
        db.create_tables([SchemaVersion], safe=True)
        version = current_version(db)
        for target, step in MIGRATIONS:
            if target <= version:
                continue
            with db.atomic():
                step(db)
                SchemaVersion.create(version=target)
            log.info("migrated schema to version %d", target)
            version = target
    return version

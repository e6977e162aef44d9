"""PostgreSQL, directly or through Peewee's pool (or a PgBouncer in
transaction pooling in front of it)."""

from peewee import SQL, PostgresqlDatabase
from playhouse.pool import PooledPostgresqlDatabase

from feedback_service.store.dialects.base import Dialect

MIGRATION_LOCK = 0x6665_6564  # an arbitrary, fixed advisory lock id


class PostgresDialect(Dialect, PostgresqlDatabase):
    system = "postgresql"
    transient_codes = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
    # xid8, 64 bits with its epoch, so it never wraps around.
    change_xact = SQL("pg_current_xact_id()::text::bigint")
    one_round_trip_writes = True
    # The oldest transaction running in the reader's snapshot that may have
    # written to this database, else the snapshot's first unassigned id
    # (xmax). Transaction ids are cluster-wide: one that pg_stat_activity
    # shows running in another database cannot write our log, so it does not
    # hold the feed back. One not found there (ended since the snapshot, or
    # a prepared transaction) counts, which only delays.
    change_horizon = SQL(
        "(SELECT COALESCE(MIN(x::text::bigint), pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"
        " FROM pg_snapshot_xip(pg_current_snapshot()) AS x WHERE NOT EXISTS (SELECT 1 FROM"
        " pg_stat_activity AS a WHERE a.datname <> current_database()"
        " AND a.backend_xid::text::bigint = mod(x::text::bigint, 4294967296)))"
    )

    def lock_migration_step(self) -> None:
        # A transaction's advisory lock, not a session's: through PgBouncer in
        # transaction pooling, a session's statements may run on different
        # server connections, and a session lock would be released on the
        # wrong one (and stay held on its own).
        self.execute_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))


class PooledPostgresDialect(PostgresDialect, PooledPostgresqlDatabase):  # type: ignore[misc]  # playhouse is untyped
    """PostgreSQL through Peewee's connection pool."""

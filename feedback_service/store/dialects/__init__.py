"""One class per database dialect, chosen once from the URL: everything that
differs between SQLite, PostgreSQL and MySQL/MariaDB lives here, and no other
module asks which database it is talking to.

Each class is the Peewee database itself with our dialect mixed in, in the way
playhouse/pool.py builds its pooled databases. A dialect holds:
- how to connect (options, session settings) and its table settings;
- the migration lock that serialises replicas starting together;
- the statement shapes that differ (an upsert that returns the stored row,
  a counter that returns its new value, a delete that returns what it
  deleted);
- its execution policy: whether work is first tried on the event loop
  without waiting, whether writes queue on one writer thread, and which
  errors mean "nothing was committed, run it again".

base.py holds the mixin and its defaults; sqlite.py, postgres.py and
mysql.py one dialect each. This module chooses one from a URL.
"""

from urllib.parse import urlparse

from playhouse import db_url

from feedback_service.store.dialects.base import Dialect
from feedback_service.store.dialects.mysql import MySQLDialect, PooledMySQLDialect
from feedback_service.store.dialects.postgres import PooledPostgresDialect, PostgresDialect
from feedback_service.store.dialects.sqlite import SqliteDialect

__all__ = [
    "DIALECTS",
    "Dialect",
    "MySQLDialect",
    "PooledMySQLDialect",
    "PooledPostgresDialect",
    "PostgresDialect",
    "SqliteDialect",
    "describe_url",
    "dialect_database",
]

DIALECTS: dict[str, type[Dialect]] = {
    "sqlite": SqliteDialect,
    "postgres": PostgresDialect,
    "postgresql": PostgresDialect,
    "postgres+pool": PooledPostgresDialect,
    "postgresql+pool": PooledPostgresDialect,
    "mysql": MySQLDialect,
    "mysql+pool": PooledMySQLDialect,
}


def dialect_database(url: str, connect_timeout_s: float = 5) -> Dialect:
    """The database of a URL, as the dialect class its scheme names."""
    scheme = urlparse(url).scheme
    dialect = DIALECTS.get(scheme)
    if dialect is None:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r} (expected one of {', '.join(DIALECTS)})"
        )
    options = db_url.parse(url)
    if not options.get("database"):
        raise ValueError(f"the database URL {describe_url(url)} names no database")
    return dialect(**options, **dialect.connect_options(url, connect_timeout_s))


def describe_url(url: str) -> str:
    """The URL without its password, for logs."""
    password = urlparse(url).password
    return url.replace(f":{password}@", ":***@") if password else url

"""The PostgreSQL and MariaDB/MySQL databases of a benchmark run: each target
gets its own, created (and loaded) by the run and dropped at its end.

Names are `bench_<pid>_<scale>_<target>`, the pid being the benchmark's own:
a run that was killed before it could drop its databases leaves names whose
pid is gone, and the next run drops those (and only those) when it starts.
"""

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import procstat

PREFIX = "bench_"
NAME = re.compile(r"^bench_[a-z0-9_]+$")
STALE = re.compile(r"^bench_(\d+)_")
KINDS = {"postgresql": "PostgreSQL", "mysql": "MariaDB/MySQL"}


class DatabaseError(RuntimeError):
    """A database server that cannot be reached or refuses what the run needs."""


@dataclass(frozen=True)
class ServerURL:
    kind: str  # "postgresql" or "mysql"
    url: str  # the server, without a database: postgresql://postgres@127.0.0.1:5432

    def database_url(self, name: str) -> str:
        """The service's FEEDBACK_DATABASE_URL for one database on this server."""
        return f"{self.url.rstrip('/')}/{name}"

    def params(self) -> dict:
        parts = urlparse(self.url)
        params = {"host": parts.hostname or "127.0.0.1", "user": unquote(parts.username or "")}
        if parts.port:
            params["port"] = parts.port
        if parts.password:
            params["password"] = unquote(parts.password)
        return params


def database_name(scale: str, suffix: str) -> str:
    name = f"{PREFIX}{os.getpid()}_{scale.lower()}_{suffix.replace('-', '_')}"
    if not NAME.match(name):
        raise ValueError(f"unexpected database name {name!r}")
    return name


class Databases:
    """Creates and drops the run's databases; remembers every one it created
    so that drop_all() (called however the run ends) leaves none behind."""

    def __init__(self, servers: dict[str, ServerURL]) -> None:
        self.servers = servers
        self.created: list[tuple[str, str]] = []

    # --- connections -------------------------------------------------------------

    def _connect(self, kind: str):
        server = self.servers[kind]
        try:
            if kind == "postgresql":
                import psycopg2

                connection = psycopg2.connect(dbname="postgres", connect_timeout=5, **server.params())
                connection.autocommit = True
                return connection
            import pymysql

            connection = pymysql.connect(connect_timeout=5, autocommit=True, **server.params())
            with connection.cursor() as cursor:
                # Never wait long on a lock held by a server still shutting down.
                cursor.execute("SET SESSION lock_wait_timeout = 20")
            return connection
        except Exception as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DatabaseError(f"cannot connect to {KINDS[kind]} at {server.url}: {reason}") from error

    def _execute(self, kind: str, sql: str, params: tuple = ()) -> list[tuple]:
        connection = self._connect(kind)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params or None)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            connection.close()

    # --- databases ---------------------------------------------------------------

    def create(self, kind: str, name: str, template: str | None = None) -> str:
        """Creates an empty database, or on PostgreSQL a copy of `template`;
        returns the service's URL for it."""
        if not NAME.match(name):
            raise ValueError(f"refusing database name {name!r}")
        self.drop(kind, name)
        if kind == "postgresql":
            sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
            # A template must have no connections; the loader's may take a moment to go.
            deadline = time.monotonic() + 20
            while True:
                try:
                    self._execute(kind, sql)
                    break
                except Exception as error:
                    if "being accessed by other users" not in str(error) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        else:
            if template:
                raise ValueError("MySQL has no template databases")
            self._execute(kind, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        self.created.append((kind, name))
        return self.servers[kind].database_url(name)

    def drop(self, kind: str, name: str) -> None:
        if not NAME.match(name):
            raise ValueError(f"refusing to drop {name!r}: not a benchmark database")
        if kind == "postgresql":
            # FORCE: a connection left by a killed server does not keep it alive.
            self._execute(kind, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            self._execute(kind, f"DROP DATABASE IF EXISTS `{name}`")
        if (kind, name) in self.created:
            self.created.remove((kind, name))

    def drop_all(self) -> list[str]:
        """Drops every database this run created; returns what it could not drop."""
        failed = []
        for kind, name in list(reversed(self.created)):
            try:
                self.drop(kind, name)
            except Exception as error:  # noqa: BLE001 - reported, then the others are still dropped
                failed.append(f"{KINDS[kind]} {name}: {error}")
        return failed

    def drop_stale(self, kind: str) -> list[str]:
        """Drops databases left by benchmark runs that are no longer running."""
        if kind == "postgresql":
            names = [row[0] for row in self._execute(kind, "SELECT datname FROM pg_database")]
        else:
            names = [row[0] for row in self._execute(kind, "SHOW DATABASES")]
        dropped = []
        for name in names:
            match = STALE.match(name)
            if match and NAME.match(name) and not benchmark_running(int(match.group(1))):
                self.drop(kind, name)
                dropped.append(name)
        return dropped

    # --- the server ----------------------------------------------------------------

    def describe(self, kind: str) -> dict:
        if kind == "postgresql":
            settings = ("server_version", "shared_buffers", "max_connections", "synchronous_commit",
                        "autovacuum", "max_wal_size")  # fmt: skip
            found = {name: self._execute(kind, f"SHOW {name}")[0][0] for name in settings}
            return {"product": "PostgreSQL", "version": found.pop("server_version"), "settings": found}
        rows = self._execute(
            kind,
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('version', 'innodb_buffer_pool_size', "
            "'innodb_flush_log_at_trx_commit', 'max_connections', 'local_infile', 'thread_handling')",
        )
        found = dict(rows)
        version = found.pop("version")
        return {
            "product": "MariaDB" if "MariaDB" in version else "MySQL",
            "version": version,
            "settings": found,
        }

    def server_process(self, kind: str, database: str) -> procstat.DatabaseServer | None:
        """The local server process whose CPU time is sampled, or None when the
        server is not on this machine (then DB CPU is not measured)."""
        # Looked up while the connection is open: its backend (or thread) still exists.
        connection = self._connect(kind)
        try:
            with connection.cursor() as cursor:
                if kind == "postgresql":
                    cursor.execute("SELECT pg_backend_pid()")
                    postmaster = procstat.parent(cursor.fetchone()[0])
                    if postmaster is None:
                        return None
                    return procstat.DatabaseServer("postgresql", postmaster, database)
                cursor.execute("SELECT TID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
                row = cursor.fetchone()
                process = procstat.thread_group(row[0]) if row and row[0] else None
                return procstat.DatabaseServer("mysql", process, database) if process else None
        finally:
            connection.close()


def benchmark_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        return b"bench.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False

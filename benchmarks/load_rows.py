"""Fills a feedback-service database with N feedback rows, fast, on SQLite,
PostgreSQL or MariaDB/MySQL: the same rows on each.

    .venv/bin/python benchmarks/load_rows.py --db PATH --rows 1000000
    .venv/bin/python benchmarks/load_rows.py --url postgresql://postgres@127.0.0.1:5432/bench_x --rows 1000000
    .venv/bin/python benchmarks/load_rows.py --url mysql://root@127.0.0.1:3306/bench_x --rows 1000000

The schema comes from the service itself (`migrate`, as `feedback-service
migrate` does), into an empty database. The rows are generated once here
(`tables()`), in the columns the service writes, and each backend takes them
through its own bulk path:

- SQLite: the Peewee models' own INSERT statements, executed in bulk
  (executemany) inside a few large transactions;
- PostgreSQL: `COPY ... FROM STDIN` (CSV generated in memory, chunk by chunk),
  then VACUUM ANALYZE so the planner and index-only scans see a settled table;
- MariaDB/MySQL: `LOAD DATA LOCAL INFILE` from CSV chunks in a temporary
  directory (or, when the server refuses local_infile, multi-row INSERTs),
  then ANALYZE TABLE.

Everywhere, the secondary indexes of feedback and feedback_tag are dropped
during the load and built again at the end (one sort instead of a million
index inserts), from the definitions migrate created. Feedback row ids are
written explicitly (1 to N, in load order), so that each feedback_tag row can
name its feedback's. The layout is described in benchmarks/workload.py: a
read thread and a write thread owned by the benchmark user, then filler
threads, runs and users up to N rows, with ratings and tags.
"""

import argparse
import csv
import io
import itertools
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload as w
from peewee import Database, Field, Model, MySQLDatabase, PostgresqlDatabase, SqliteDatabase

from feedback_service.config import sqlite_url
from feedback_service.store.database import open_database
from feedback_service.store.dialects import describe_url
from feedback_service.store.migrations import migrate
from feedback_service.store.models import TAG_SEPARATOR, Feedback, FeedbackTag, Run, Thread
from feedback_service.store.rows import FEEDBACK_COLUMNS
from feedback_service.store.writes import TAG_COLUMNS

CHUNK = 50_000  # rows per executemany, COPY or LOAD DATA
TRANSACTION = 250_000  # rows per SQLite transaction
FEEDBACK_FIELDS = FEEDBACK_COLUMNS  # every column, the row id too (feedback_tag refers to it)
# The tables whose secondary indexes are dropped during the load and rebuilt after.
INDEXED_TABLES = (Feedback._meta.table_name, FeedbackTag._meta.table_name)
COMMENTS = ("", "", "", "", "helpful", "", "wrong tool call", "", "", "answered the question, thanks")
SEED = 20_251_125  # the same feedback ids on every backend and every load


# --- the rows (one source for every backend) ---------------------------------------


class Clock:
    """Increasing microsecond timestamps ending now, one per row."""

    def __init__(self, rows: int) -> None:
        self.next = time.time_ns() // 1000 - rows * 1000

    def tick(self) -> int:
        self.next += 1000
        return self.next


class Ids:
    """Feedback ids: random-looking version-4 UUIDs, the same sequence every load."""

    def __init__(self) -> None:
        self.random = random.Random(SEED)  # noqa: S311 - not for security

    def next(self) -> str:
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))


def row_id(n: int) -> int:
    """The feedback row id of the n-th row loaded (from 0)."""
    return n + 1


def filler_layout(filler_rows: int) -> tuple[int, int]:
    runs = -(-filler_rows // w.FILLER_ROWS_PER_RUN)
    threads = -(-runs // w.FILLER_RUNS_PER_THREAD)
    return threads, runs


def filler_thread(t: int) -> str:
    return f"thread-{t:06d}"


def filler_run(r: int) -> str:
    return f"run-{r:07d}"


def threads_and_runs(filler_rows: int, now: int) -> tuple[list[tuple], list[tuple]]:
    threads = [(w.READ_THREAD, w.USER, now), (w.WRITE_THREAD, w.USER, now)]
    runs = [(run, w.READ_THREAD, now) for run in w.READ_RUNS]
    runs += [(run, w.WRITE_THREAD, now) for run in w.WRITE_RUNS]
    n_threads, n_runs = filler_layout(filler_rows)
    # One thread in ten is shared (no owner), as the platform registers some.
    threads += [(filler_thread(t), "" if t % 10 == 0 else w.other_user(t), now) for t in range(n_threads)]
    runs += [(filler_run(r), filler_thread(r // w.FILLER_RUNS_PER_THREAD), now) for r in range(n_runs)]
    return threads, runs


def layout(filler_rows: int) -> Iterator[tuple[str, str, str, str]]:
    """(thread, run, user, message) of every feedback row, in load order."""
    for i in range(w.HOT_RUN_USER_ROWS):
        yield w.READ_THREAD, w.HOT_RUN, w.USER, f"msg-{i:04d}"
    for i in range(w.HOT_RUN_OTHER_ROWS):
        yield w.READ_THREAD, w.HOT_RUN, w.other_user(i), ""
    for run in w.READ_RUNS[1:]:
        for i in range(w.OTHER_READ_RUN_ROWS):
            yield w.READ_THREAD, run, w.other_user(i), ""
        if run in w.USER_VOTED_RUNS:
            yield w.READ_THREAD, run, w.USER, ""
    for i in range(filler_rows):
        r, k = divmod(i, w.FILLER_ROWS_PER_RUN)
        # Distinct users within a run (the unique key), spread over the pool.
        user = w.other_user(r * 7 + k * 1009)
        yield filler_thread(r // w.FILLER_RUNS_PER_THREAD), filler_run(r), user, ""


def feedback_rows(filler_rows: int, clock: Clock) -> Iterator[tuple]:
    ids = Ids()
    for n, (thread, run, user, message) in enumerate(layout(filler_rows)):
        at = clock.tick()
        comment = COMMENTS[n % len(COMMENTS)]
        tags = TAG_SEPARATOR.join(w.tags_for(n))
        yield (row_id(n), ids.next(), thread, run, user, message, w.rating_for(n), comment, at, at, tags)


def tag_rows(filler_rows: int) -> Iterator[tuple]:
    """feedback_tag's rows: one per tag of each feedback row, in TAG_COLUMNS' order."""
    for n, (thread, run, _, message) in enumerate(layout(filler_rows)):
        for tag in w.tags_for(n):
            yield (row_id(n), tag, thread, run, message)


@dataclass
class Table:
    model: type[Model]
    fields: tuple[Field, ...]  # in the order of each row's values
    rows: Iterable[tuple]

    @property
    def name(self) -> str:
        return self.model._meta.table_name

    @property
    def columns(self) -> list[str]:
        return [field.column_name for field in self.fields]


def tables(rows: int) -> list[Table]:
    """Every row to load, table by table in foreign-key order: the layout of
    workload.py with `rows` feedback rows in all."""
    filler = rows - w.BENCH_ROWS
    threads, runs = threads_and_runs(filler, time.time_ns() // 1000)
    return [
        Table(Thread, (Thread.thread_id, Thread.owner_user_id, Thread.created_at), threads),
        Table(Run, (Run.run_id, Run.thread, Run.created_at), runs),
        Table(Feedback, FEEDBACK_FIELDS, feedback_rows(filler, Clock(rows))),
        Table(FeedbackTag, TAG_COLUMNS, tag_rows(filler)),
    ]


def chunks(rows: Iterable[tuple], size: int = CHUNK) -> Iterator[list[tuple]]:
    source = iter(rows)
    while chunk := list(itertools.islice(source, size)):
        yield chunk


def csv_text(rows: list[tuple]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def insert_sql(model, fields) -> str:
    """The model's own parameterised INSERT statement for these fields."""
    sql, _ = model.insert({field: None for field in fields}).sql()
    return sql


# --- the backends ------------------------------------------------------------------


def load_sqlite(db: Database, data: list[Table]) -> None:
    # A throwaway bulk load: no fsyncs, a big page cache.
    db.execute_sql("PRAGMA synchronous = OFF")
    db.execute_sql("PRAGMA cache_size = -400000")
    conn = db.connection()
    indexes = [index for table in INDEXED_TABLES for index in db.get_indexes(table) if index.sql]
    for index in indexes:
        db.execute_sql(f'DROP INDEX "{index.name}"')
    for table in data:
        sql = insert_sql(table.model, table.fields)
        batches = chunks(table.rows)
        while batch := list(itertools.islice(batches, TRANSACTION // CHUNK)):
            with db.atomic():
                for chunk in batch:
                    conn.executemany(sql, chunk)
    with db.atomic():
        for index in indexes:
            db.execute_sql(index.sql)
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def load_postgresql(db: Database, data: list[Table]) -> None:
    # Session settings only: a larger sort memory for the index builds.
    db.execute_sql("SET maintenance_work_mem = '256MB'")
    cursor = db.connection().cursor()
    with db.atomic():
        # Indexes that back no constraint (the primary key stays): dropped, then
        # built again from the definitions migrate created.
        indexes = db.execute_sql(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename IN %s AND indexname NOT IN (SELECT conname FROM pg_constraint)",
            (INDEXED_TABLES,),
        ).fetchall()
        for name, _ in indexes:
            db.execute_sql(f'DROP INDEX "{name}"')
        for table in data:
            columns = ", ".join(f'"{c}"' for c in table.columns)
            # NULL '\N': an empty field is the empty string, as the service stores it.
            sql = f"COPY \"{table.name}\" ({columns}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
            for chunk in chunks(table.rows):
                cursor.copy_expert(sql, io.StringIO(csv_text(chunk)))
        for _, definition in indexes:
            db.execute_sql(definition)
        # The row ids were given: the sequence continues after them.
        db.execute_sql(
            "SELECT setval(pg_get_serial_sequence('feedback', 'id'), (SELECT MAX(id) FROM feedback))"
        )
    for table in data:
        db.execute_sql(f'VACUUM ANALYZE "{table.name}"')


def load_mysql(db: Database, data: list[Table]) -> str:
    local_infile = server_allows_local_infile(db)
    # Session settings only: every key is unique and every run exists by construction.
    db.execute_sql("SET SESSION unique_checks = 0")
    db.execute_sql("SET SESSION foreign_key_checks = 0")
    method = "LOAD DATA LOCAL INFILE" if local_infile else "multi-row INSERT (server refuses local_infile)"
    # InnoDB needs an index under every foreign key: that one stays.
    indexes = {
        table: [
            index
            for index in db.get_indexes(table)
            if index.name != "PRIMARY" and index.columns[0] not in mysql_foreign_key_columns(db, table)
        ]
        for table in INDEXED_TABLES
    }
    for table, dropped in indexes.items():
        for index in dropped:
            db.execute_sql(f"ALTER TABLE `{table}` DROP INDEX `{index.name}`")
    try:
        with tempfile.TemporaryDirectory(prefix="load_rows-") as scratch:
            chunk_file = Path(scratch) / "chunk.csv"
            for table in data:
                columns = ", ".join(f"`{c}`" for c in table.columns)
                for chunk in chunks(table.rows):
                    if local_infile:
                        chunk_file.write_text(csv_text(chunk))
                        db.execute_sql(
                            f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table.name}` CHARACTER SET utf8mb4 "
                            "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
                            f"LINES TERMINATED BY '\\n' ({columns})",
                            (str(chunk_file),),
                        )
                    else:  # PyMySQL sends executemany of an INSERT as multi-row INSERTs
                        db.cursor().executemany(insert_sql(table.model, table.fields), chunk)
    finally:
        for table, dropped in indexes.items():
            if dropped:
                definitions = ", ".join(
                    f"ADD {'UNIQUE ' if index.unique else ''}INDEX `{index.name}` "
                    f"({', '.join(f'`{c}`' for c in index.columns)})"
                    for index in dropped
                )
                db.execute_sql(f"ALTER TABLE `{table}` {definitions}")
    for table in data:
        db.execute_sql(f"ANALYZE TABLE `{table.name}`").fetchall()
    return method


def server_allows_local_infile(db: Database) -> bool:
    return bool(db.execute_sql("SELECT @@GLOBAL.local_infile").fetchone()[0])


def mysql_foreign_key_columns(db: Database, table: str) -> set[str]:
    rows = db.execute_sql(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND REFERENCED_TABLE_NAME IS NOT NULL",
        (table,),
    ).fetchall()
    return {column for (column,) in rows}


# --- the load ----------------------------------------------------------------------


def load(url: str, rows: int) -> dict:
    if rows < w.BENCH_ROWS:
        raise SystemExit(f"--rows must be at least {w.BENCH_ROWS} (the benchmark's own rows)")
    started = time.monotonic()
    db = open_database(url)
    if isinstance(db, MySQLDatabase):
        db.connect_params["local_infile"] = True
    version = migrate(db)
    db.connect(reuse_if_open=True)
    if Feedback.select().limit(1).count() or Thread.select().limit(1).count():
        raise SystemExit(f"{describe_url(url)} already has rows: load into a new database")
    data = tables(rows)
    method = "executemany INSERT"
    if isinstance(db, SqliteDatabase):
        load_sqlite(db, data)
    elif isinstance(db, PostgresqlDatabase):
        load_postgresql(db, data)
        method = "COPY FROM STDIN"
    elif isinstance(db, MySQLDatabase):
        method = load_mysql(db, data)
    else:
        raise SystemExit(f"no bulk loader for {type(db).__name__}")
    count = Feedback.select().count()
    if count != rows:
        raise SystemExit(f"loaded {count} feedback rows, expected {rows}")
    db.close()
    return {
        "rows": count,
        "threads": len(data[0].rows),
        "runs": len(data[1].rows),
        "schema_version": version,
        "method": method,
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", type=Path, help="SQLite file to create")
    where.add_argument(
        "--url", help="an empty PostgreSQL or MySQL/MariaDB database, as FEEDBACK_DATABASE_URL"
    )
    parser.add_argument("--rows", type=int, required=True, help="feedback rows in total")
    args = parser.parse_args()
    url = sqlite_url(args.db) if args.db else args.url
    scheme = urlparse(url).scheme
    result = load(url, args.rows)
    size = f", {args.db.stat().st_size / 2**20:.0f} MiB" if args.db else ""
    print(
        f"{describe_url(url)}: {result['rows']} feedback rows, {result['runs']} runs, "
        f"{result['threads']} threads, schema v{result['schema_version']}{size}, "
        f"{scheme} by {result['method']} in {result['seconds']}s"
    )


if __name__ == "__main__":
    main()

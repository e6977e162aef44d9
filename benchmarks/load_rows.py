"""Fills a feedback-service SQLite database with N feedback rows, fast.

    .venv/bin/python benchmarks/load_rows.py --db PATH --rows 1000000

The schema comes from the service itself (`migrate`), and the rows go in
through the Peewee models' own INSERT statements, executed in bulk
(executemany) inside a few large transactions. The layout is described in
benchmarks/workload.py: a read thread and a write thread owned by the
benchmark user, then filler threads, runs and users up to N rows.
"""

import argparse
import itertools
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload as w

from feedback_service.config import sqlite_url
from feedback_service.store.database import open_database
from feedback_service.store.migrations import migrate
from feedback_service.store.models import Feedback, Run, Thread
from feedback_service.store.queries import FEEDBACK_COLUMNS

CHUNK = 50_000  # rows per executemany
TRANSACTION = 250_000  # rows per transaction
FEEDBACK_FIELDS = FEEDBACK_COLUMNS[1:]  # every column but the row id, as the service writes them
COMMENTS = ("", "", "", "", "helpful", "", "wrong tool call", "", "", "answered the question, thanks")


def insert_sql(model, fields) -> str:
    """The model's own parameterised INSERT statement for these fields."""
    sql, _ = model.insert({field: None for field in fields}).sql()
    return sql


class Clock:
    """Increasing microsecond timestamps ending now, one per row."""

    def __init__(self, rows: int) -> None:
        self.next = time.time_ns() // 1000 - rows * 1000

    def tick(self) -> int:
        self.next += 1000
        return self.next


def feedback_row(clock: Clock, thread: str, run: str, user: str, message: str, n: int) -> tuple:
    at = clock.tick()
    rating = -1 if n % 4 == 3 else 1
    return (str(uuid.uuid4()), thread, run, user, message, rating, COMMENTS[n % len(COMMENTS)], at, at)


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


def feedback_rows(filler_rows: int, clock: Clock) -> Iterator[tuple]:
    n = itertools.count()
    for i in range(w.HOT_RUN_USER_ROWS):
        yield feedback_row(clock, w.READ_THREAD, w.HOT_RUN, w.USER, f"msg-{i:04d}", next(n))
    for i in range(w.HOT_RUN_OTHER_ROWS):
        yield feedback_row(clock, w.READ_THREAD, w.HOT_RUN, w.other_user(i), "", next(n))
    for run in w.READ_RUNS[1:]:
        for i in range(w.OTHER_READ_RUN_ROWS):
            yield feedback_row(clock, w.READ_THREAD, run, w.other_user(i), "", next(n))
    for i in range(filler_rows):
        r, k = divmod(i, w.FILLER_ROWS_PER_RUN)
        # Distinct users within a run (the unique key), spread over the pool.
        user = w.other_user(r * 7 + k * 1009)
        thread = filler_thread(r // w.FILLER_RUNS_PER_THREAD)
        yield feedback_row(clock, thread, filler_run(r), user, "", next(n))


def load(db_path: Path, rows: int) -> dict:
    if rows < w.BENCH_ROWS:
        raise SystemExit(f"--rows must be at least {w.BENCH_ROWS} (the benchmark's own rows)")
    started = time.monotonic()
    db = open_database(sqlite_url(db_path))
    version = migrate(db)
    db.connect(reuse_if_open=True)
    if Feedback.select().limit(1).count() or Thread.select().limit(1).count():
        raise SystemExit(f"{db_path} already has rows: load into a new database")
    # A throwaway bulk load: no fsyncs, a big page cache.
    db.execute_sql("PRAGMA synchronous = OFF")
    db.execute_sql("PRAGMA cache_size = -400000")
    filler = rows - w.BENCH_ROWS
    now = time.time_ns() // 1000
    threads, runs = threads_and_runs(filler, now)
    conn = db.connection()
    with db.atomic():
        conn.executemany(
            insert_sql(Thread, (Thread.thread_id, Thread.owner_user_id, Thread.created_at)), threads
        )
        conn.executemany(insert_sql(Run, (Run.run_id, Run.thread, Run.created_at)), runs)
    # Build the secondary indexes once at the end (a sort) instead of row by
    # row: the same indexes, exactly as migrate created them.
    indexes = [index for index in db.get_indexes(Feedback._meta.table_name) if index.sql]
    for index in indexes:
        db.execute_sql(f'DROP INDEX "{index.name}"')
    sql = insert_sql(Feedback, FEEDBACK_FIELDS)
    source = feedback_rows(filler, Clock(rows))
    written = 0
    while written < rows:
        with db.atomic():
            in_transaction = 0
            while in_transaction < TRANSACTION:
                chunk = list(itertools.islice(source, CHUNK))
                if not chunk:
                    break
                conn.executemany(sql, chunk)
                in_transaction += len(chunk)
        written += in_transaction
        if in_transaction == 0:
            break
    with db.atomic():
        for index in indexes:
            db.execute_sql(index.sql)
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    count = Feedback.select().count()
    db.close()
    return {
        "rows": count,
        "threads": len(threads),
        "runs": len(runs),
        "schema_version": version,
        "seconds": round(time.monotonic() - started, 1),
        "bytes": db_path.stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", type=Path, required=True, help="SQLite file to create")
    parser.add_argument("--rows", type=int, required=True, help="feedback rows in total")
    args = parser.parse_args()
    result = load(args.db, args.rows)
    print(
        f"{args.db}: {result['rows']} feedback rows, {result['runs']} runs, {result['threads']} threads, "
        f"schema v{result['schema_version']}, {result['bytes'] / 2**20:.0f} MiB in {result['seconds']}s"
    )


if __name__ == "__main__":
    main()

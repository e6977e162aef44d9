"""What a SQLite read costs on database threads, by the number of threads.

    .venv/bin/python benchmarks/reader_threads.py --db COPY_OF_A_LOADED_DB [--threads 1 2 8]

A loaded database comes from benchmarks/load_rows.py (or the benchmark's
cache, benchmarks/.cache/); the copy given is migrated in place. The unit of
work is BatchGetFeedbackStats's (50 runs). It runs first on this thread in a
loop, then from an event loop on a pool of N threads, with 1, 8 and 64 calls
at a time, as the server runs reads it does not keep on its loop. It prints
the process's CPU (user + system) and the wall time per call: the figures
behind the single reader thread on SQLite (docs/concurrency-sqlite.md).
"""

import argparse
import asyncio
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload as w

from feedback_service.config import sqlite_url
from feedback_service.store import stats
from feedback_service.store.database import open_database
from feedback_service.store.migrations import migrate

CALLS = 600


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def batch() -> object:
    return stats.stats_for_runs(w.READ_THREAD, list(w.BATCH_RUNS), False, True)


async def on_threads(threads: int, at_once: int) -> tuple[float, float]:
    """CPU and wall µs per call, the second of two rounds."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(threads) as pool:

        async def caller() -> None:
            for _ in range(CALLS // at_once):
                await loop.run_in_executor(pool, batch)

        for _ in range(2):
            cpu, wall = cpu_s(), time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(at_once)))
            cpu, wall = cpu_s() - cpu, time.perf_counter() - wall
    return cpu / CALLS * 1e6, wall / CALLS * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="a copy of a loaded SQLite database")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 8])
    args = parser.parse_args()
    migrate(open_database(sqlite_url(args.db)))
    started = cpu_s()
    for _ in range(CALLS):
        batch()
    print(f"on this thread: {(cpu_s() - started) / CALLS * 1e6:.0f} µs of CPU per call")
    print("threads  at once  CPU µs/call  wall µs/call")
    for threads in args.threads:
        for at_once in (1, 8, 64):
            cpu, wall = await on_threads(threads, at_once)
            print(f"{threads:7d}  {at_once:7d}  {cpu:11.0f}  {wall:12.0f}")


if __name__ == "__main__":
    asyncio.run(main())

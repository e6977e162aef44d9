"""The data every benchmark scenario works on, shared by the loader, the load
clients, the orchestrator and the peer app. Plain Python, no dependencies: it
is imported from both the project's venv and benchmarks/.venv.

Layout of a loaded database (the same at every scale, so the read scenarios
ask the same question of a small and of a large table):

- READ_THREAD, owned by USER, with READ_RUNS (50 runs).
  READ_RUNS[0] (HOT_RUN) holds HOT_RUN_USER_ROWS message-level feedback rows
  by USER plus HOT_RUN_OTHER_ROWS by other users: ListFeedback (page of 100)
  and GetFeedbackStats read it. Every other read run holds
  OTHER_READ_RUN_ROWS rows by other users: BatchGetFeedbackStats reads all 50.
- WRITE_THREAD, owned by USER, with WRITE_RUNS (100 runs) and no feedback:
  CreateFeedback (a new message_id per call) and UpsertFeedback (one hot key)
  write there, so writes never change what the read scenarios read.
- Filler: the rest of the rows, FILLER_ROWS_PER_RUN per run, FILLER_RUNS_PER_THREAD
  runs per thread, spread over FILLER_USERS users.
"""

USER = "bench-user"

READ_THREAD = "bench-read"
READ_RUNS = [f"bench-read-run-{i:02d}" for i in range(50)]
HOT_RUN = READ_RUNS[0]
HOT_RUN_USER_ROWS = 150
HOT_RUN_OTHER_ROWS = 50
OTHER_READ_RUN_ROWS = 10

WRITE_THREAD = "bench-write"
WRITE_RUNS = [f"bench-write-run-{i:03d}" for i in range(100)]
UPSERT_RUN = WRITE_RUNS[0]

FILLER_ROWS_PER_RUN = 10
FILLER_RUNS_PER_THREAD = 10
FILLER_USERS = 10_000

BENCH_ROWS = HOT_RUN_USER_ROWS + HOT_RUN_OTHER_ROWS + (len(READ_RUNS) - 1) * OTHER_READ_RUN_ROWS

LIST_PAGE_SIZE = 100
BATCH_RUNS = READ_RUNS  # 50 runs

# The read-heavy mixed profile: weights of each call (90% reads, 10% writes).
MIX = (
    ("GetFeedbackStats", 40),
    ("ListFeedback", 25),
    ("BatchGetFeedbackStats", 25),
    ("CreateFeedback", 10),
)
# The peer has only create and stats routes: its reads are all stats.
PEER_MIX = (("GetFeedbackStats", 90), ("CreateFeedback", 10))


def other_user(n: int) -> str:
    return f"user-{n % FILLER_USERS:05d}"


def peer_paths() -> dict[str, str]:
    """The peer's REST paths for the scenarios it serves."""
    base = f"/api/threads/{READ_THREAD}/runs/{HOT_RUN}/feedback"
    return {"stats": f"{base}/stats", "create_base": f"/api/threads/{WRITE_THREAD}/runs"}

"""The data every benchmark scenario works on, shared by the loader, the load
clients, the orchestrator and the peer app. Plain Python, no dependencies: it
is imported from both the project's venv and benchmarks/.venv.

Layout of a loaded database (the same at every scale, so the read scenarios
ask the same question of a small and of a large table):

- READ_THREAD, owned by USER, with READ_RUNS (50 runs).
  READ_RUNS[0] (HOT_RUN) holds HOT_RUN_USER_ROWS message-level feedback rows
  by USER plus HOT_RUN_OTHER_ROWS votes (run-level feedback) by other users:
  ListFeedback (page of 100, and filtered) and GetFeedbackStats read it.
  Every other read run holds OTHER_READ_RUN_ROWS votes by other users, and
  every USER_VOTE_EVERY-th one a vote by USER too: BatchGetFeedbackStats and
  BatchGetCallerFeedback read all 50, GetThreadFeedbackStats the thread.
- WRITE_THREAD, owned by USER, with WRITE_RUNS (100 runs) and no feedback:
  CreateFeedback (a new message_id per call) and UpsertFeedback (one hot key)
  write there, so writes never change what the read scenarios read.
- Filler: the rest of the rows, FILLER_ROWS_PER_RUN per run, FILLER_RUNS_PER_THREAD
  runs per thread, spread over FILLER_USERS users.

Ratings and tags follow each row's sequence number n (tags_for): a quarter of
the rows are thumbs down, each with reasons; a fifth of the rest carry one.
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

# USER's votes: on every USER_VOTE_EVERY-th read run after the hot one.
USER_VOTE_EVERY = 3
USER_VOTED_RUNS = READ_RUNS[1::USER_VOTE_EVERY]

BENCH_ROWS = (
    HOT_RUN_USER_ROWS + HOT_RUN_OTHER_ROWS + (len(READ_RUNS) - 1) * OTHER_READ_RUN_ROWS + len(USER_VOTED_RUNS)
)

LIST_PAGE_SIZE = 100
BATCH_RUNS = READ_RUNS  # 50 runs
# The filtered ListFeedback: USER's thumbs down on the hot run tagged FILTER_TAG.
FILTER_RATING = -1
FILTER_TAG = "incorrect"


def rating_for(n: int) -> int:
    return -1 if n % 4 == 3 else 1


def tags_for(n: int) -> tuple[str, ...]:
    """The tags of the n-th row: every thumbs down has reasons, alternately
    FILTER_TAG and two others; one thumbs up in five has one."""
    if rating_for(n) == -1:
        return (FILTER_TAG,) if n % 8 == 3 else ("not_as_expected", "slow")
    return ("style_tone",) if n % 5 == 0 else ()


# The hot run's USER rows are the first HOT_RUN_USER_ROWS (n = 0, 1, ...).
FILTERED_ROWS = sum(
    1 for n in range(HOT_RUN_USER_ROWS) if rating_for(n) == FILTER_RATING and FILTER_TAG in tags_for(n)
)

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

"""The peer: the REST routes feedback-service replaces, as a minimal FastAPI +
SQLAlchemy (async, aiosqlite) app, served by uvicorn in one process.

    PEER_DB=/path/feedback.db PEER_JWT_SECRET=... \
        benchmarks/.venv/bin/python -m uvicorn --app-dir benchmarks peer_app:app \
        --host 127.0.0.1 --port PORT --loop asyncio --http httptools --no-access-log

It does what the original routes did, and the same work per call as the
service does for the matching RPC, so the two can be compared:

- POST /api/threads/{thread_id}/runs/{run_id}/feedback: the user from the
  bearer JWT (verified once per token, then cached, as the service does), the
  thread must be registered and owned by the user or shared, the run must
  belong to the thread (else 404), then one feedback row is inserted.
- GET /api/threads/{thread_id}/runs/{run_id}/feedback/stats: the user from
  the JWT, the thread must be owned by the user, shared or not registered
  (else 404), then total / positive / negative counts of the run.

It opens a copy of a database loaded for the service (same tables and rows)
with the service's SQLite settings (WAL, synchronous=NORMAL, busy_timeout).
"""

import os
import time
import uuid
from typing import Any

import jwt
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import BigInteger, Integer, String, Text, case, event, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DB_PATH = os.environ.get("PEER_DB", "peer.db")
JWT_SECRET = os.environ.get("PEER_JWT_SECRET", "")
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000")


class Base(DeclarativeBase):
    pass


class ThreadRow(Base):
    __tablename__ = "thread"
    thread_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner_user_id: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[int] = mapped_column(BigInteger)


class RunRow(Base):
    __tablename__ = "run"
    run_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    thread_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger)


class FeedbackRow(Base):
    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    feedback_id: Mapped[str] = mapped_column(String(128))
    thread_id: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    message_id: Mapped[str] = mapped_column(String(128), default="")
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


engine = create_async_engine(f"sqlite+aiosqlite:///{DB_PATH}")


@event.listens_for(engine.sync_engine, "connect")
def _pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


sessions = async_sessionmaker(engine, expire_on_commit=False)
app = FastAPI(title="feedback peer")


class FeedbackCreateRequest(BaseModel):
    rating: int = Field(..., description="Feedback rating: +1 (positive) or -1 (negative)")
    comment: str | None = Field(default=None, description="Optional text feedback")
    message_id: str | None = Field(default=None, description="Optional: scope feedback to a specific message")


class FeedbackResponse(BaseModel):
    feedback_id: str
    run_id: str
    thread_id: str
    user_id: str | None = None
    message_id: str | None = None
    rating: int
    comment: str | None = None
    created_at: str = ""


class FeedbackStatsResponse(BaseModel):
    run_id: str
    total: int = 0
    positive: int = 0
    negative: int = 0


_verified: dict[str, tuple[str, float]] = {}


def current_user(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(status_code=401, detail="missing bearer token")
    cached = _verified.get(token)
    if cached is not None and cached[1] > time.time():
        return cached[0]
    try:
        claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.InvalidTokenError:
        raise HTTPException(status_code=401, detail="invalid token") from None
    if len(_verified) >= 10_000:
        _verified.clear()
    _verified[token] = (claims["sub"], float(claims["exp"]))
    return claims["sub"]


async def check_thread(
    session: AsyncSession, thread_id: str, user_id: str, *, require_existing: bool
) -> None:
    thread = await session.get(ThreadRow, thread_id)
    if thread is None:
        if require_existing:
            raise HTTPException(status_code=404, detail=f"Thread {thread_id} not found")
        return
    if thread.owner_user_id not in ("", user_id):
        raise HTTPException(status_code=404, detail=f"Thread {thread_id} not found")


@app.post("/api/threads/{thread_id}/runs/{run_id}/feedback", response_model=FeedbackResponse)
async def create_feedback(
    thread_id: str, run_id: str, body: FeedbackCreateRequest, request: Request
) -> dict[str, Any]:
    """Submit feedback (thumbs-up/down) for a run."""
    if body.rating not in (1, -1):
        raise HTTPException(status_code=400, detail="rating must be +1 or -1")
    user_id = current_user(request)
    async with sessions() as session:
        await check_thread(session, thread_id, user_id, require_existing=True)
        run = await session.get(RunRow, run_id)
        if run is None:
            raise HTTPException(status_code=404, detail=f"Run {run_id} not found")
        if run.thread_id != thread_id:
            raise HTTPException(status_code=404, detail=f"Run {run_id} not found in thread {thread_id}")
        now = time.time_ns() // 1000
        row = FeedbackRow(
            feedback_id=str(uuid.uuid4()),
            thread_id=thread_id,
            run_id=run_id,
            user_id=user_id,
            message_id=body.message_id or "",
            rating=body.rating,
            comment=body.comment or "",
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        await session.commit()
    return {
        "feedback_id": row.feedback_id,
        "run_id": run_id,
        "thread_id": thread_id,
        "user_id": user_id,
        "message_id": body.message_id,
        "rating": body.rating,
        "comment": body.comment,
        "created_at": str(now),
    }


@app.get("/api/threads/{thread_id}/runs/{run_id}/feedback/stats", response_model=FeedbackStatsResponse)
async def feedback_stats(thread_id: str, run_id: str, request: Request) -> dict[str, Any]:
    """Aggregated feedback stats (positive/negative counts) for a run."""
    user_id = current_user(request)
    async with sessions() as session:
        await check_thread(session, thread_id, user_id, require_existing=False)
        total, positive, negative = (
            await session.execute(
                select(
                    func.count(FeedbackRow.id),
                    func.coalesce(func.sum(case((FeedbackRow.rating == 1, 1), else_=0)), 0),
                    func.coalesce(func.sum(case((FeedbackRow.rating == -1, 1), else_=0)), 0),
                ).where((FeedbackRow.thread_id == thread_id) & (FeedbackRow.run_id == run_id))
            )
        ).one()
    return {"run_id": run_id, "total": total, "positive": positive, "negative": negative}

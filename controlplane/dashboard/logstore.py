"""Service logs shipped by agents: parse a chunk batch, store it, keep a bounded tail.

Agents post `{"chunks": [{"service", "stream": "run"|"build", "commit", "data"}]}`; each
chunk becomes one `log_chunks` row. After the insert, the same transaction trims every
(instance, service, stream) it touched to its newest `TAIL_BYTES`, so storage per service
is bounded however chatty the service is. Rows keep their arrival `seq`, which is what the
live stream follows (`LiveHub` reads rows with a larger `seq` than it has seen).
"""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from agent.schema import ValidationError, report
from controlplane.db import Database
from controlplane.errors import Unprocessable
from controlplane.httpjson import batch_items
from controlplane.models import LogChunk, utcnow

TAIL_BYTES = 256 * 1024
MAX_CHUNKS_PER_BATCH = 500
MAX_CHUNK_CHARS = report.MAX_LOG_CHUNK_CHARS
STREAMS = report.LOG_STREAMS


IncomingChunk = report.LogChunk  # the return path's type (agent/schema/report.py)


def parse_chunks(body: Any) -> list[IncomingChunk]:
    try:
        chunks = [report.parse_log_chunk(ch, where) for where, ch in
                  batch_items(body, "chunks", MAX_CHUNKS_PER_BATCH)]  # fmt: skip
    except ValidationError as exc:
        raise Unprocessable(exc.detail, field=exc.field) from None
    return [c for c in chunks if c.data]


async def record_chunks(
    db: Database, instance_id: str, stack_id: str, chunks: list[IncomingChunk]
) -> int:
    """Store `chunks` and trim the touched tails; returns how many were stored."""
    if not chunks:
        return 0
    now = utcnow()
    async with db.write() as session:
        session.add_all(
            LogChunk(
                instance_id=instance_id,
                stack_id=stack_id,
                service=c.service,
                stream=c.stream,
                commit=c.commit,
                data=c.data,
                size=len(c.data.encode()),
                received_at=now,
            )
            for c in chunks
        )
        await session.flush()
        for service, stream in {(c.service, c.stream) for c in chunks}:
            rows = await session.execute(
                select(LogChunk.seq, LogChunk.size)
                .where(
                    LogChunk.instance_id == instance_id,
                    LogChunk.service == service,
                    LogChunk.stream == stream,
                )
                .order_by(LogChunk.seq.desc())
            )
            total, cutoff = 0, None
            for seq, size in rows:
                total += size
                if total > TAIL_BYTES:
                    cutoff = seq
                    break
            if cutoff is not None:
                await session.execute(
                    delete(LogChunk).where(
                        LogChunk.instance_id == instance_id,
                        LogChunk.service == service,
                        LogChunk.stream == stream,
                        LogChunk.seq <= cutoff,
                    )
                )
    return len(chunks)


@dataclass(frozen=True)
class Tail:
    text: str
    commit: str | None
    last_seq: int


async def read_tail(db: Database, instance_id: str, service: str, stream: str) -> Tail:
    """The stored tail; for builds only the newest commit's output (one build's log)."""
    async with db.read() as session:
        rows = list(
            await session.execute(
                select(LogChunk.seq, LogChunk.commit, LogChunk.data)
                .where(
                    LogChunk.instance_id == instance_id,
                    LogChunk.service == service,
                    LogChunk.stream == stream,
                )
                .order_by(LogChunk.seq)
            )
        )
    if not rows:
        return Tail("", None, 0)
    commit = rows[-1].commit
    if stream == "build":
        rows = [r for r in rows if r.commit == commit]
    return Tail("".join(r.data for r in rows), commit, rows[-1].seq)

"""Stored metrics: inserting agents' batches, rolling them up, enforcing retention and
reading series back. All database work is async (aiosqlite runs it in its own thread,
asyncpg/psycopg on the network): nothing here blocks the event loop.

Resolutions: raw points (as agents send them, every 30 s) kept `RAW_KEEP_S` (1 h),
one-minute rollups kept a day, hourly rollups 30 days. `Rollups.run_once` rolls every
complete window since its watermark; rewriting a window deletes and inserts its rows in
one transaction, so running twice (a restart, two servers) gives the same rows.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Table, and_, delete, func, literal_column, select, tuple_

from controlplane.db import Database
from controlplane.metrics.points import HOUR, MINUTE, RAW, Point, rollup
from controlplane.models import MetricPoint

log = logging.getLogger(__name__)

RAW_KEEP_S = 3600
MINUTE_KEEP_S = 24 * 3600
HOUR_KEEP_S = 30 * 24 * 3600
KEEP = {RAW: RAW_KEEP_S, MINUTE: MINUTE_KEEP_S, HOUR: HOUR_KEEP_S}
ROLLUP_EVERY_S = 60.0


def row_of(stack_id: str, instance_id: str, res: int, p: Point) -> dict[str, Any]:
    return {
        "stack_id": stack_id, "instance_id": instance_id, "service": p.service, "res": res,
        "t": p.t, "span": p.span, "requests": p.requests, "errors": p.errors,
        "bytes_in": p.bytes_in, "bytes_out": p.bytes_out, "lat": p.lat, "lat_sum": p.lat_sum,
        "cpu_s": p.cpu_s, "mem": p.mem, "host": p.host, "builds": p.builds,
        "build_s": p.build_s, "build_rss": p.build_rss, "restarts": p.restarts,
    }  # fmt: skip


def point_of(row: MetricPoint) -> Point:
    return Point(
        row.service, row.t, row.span, row.requests, row.errors, row.bytes_in, row.bytes_out,
        row.lat, row.lat_sum, row.cpu_s, row.mem, row.host, row.builds or 0,
        row.build_s or 0.0, row.build_rss, row.restarts or 0,
    )  # fmt: skip


async def insert_batch(db: Database, stack_id: str, instance_id: str, points: list[Point]) -> int:
    """Store raw points; a point sent again (same service and second) replaces the old."""
    if not points:
        return 0
    unique = {(p.service, p.t): p for p in points}
    async with db.write() as session:
        await session.execute(
            delete(MetricPoint).where(
                MetricPoint.stack_id == stack_id,
                MetricPoint.instance_id == instance_id,
                MetricPoint.res == RAW,
                tuple_(MetricPoint.service, MetricPoint.t).in_(list(unique)),
            )  # fmt: skip
        )
        await session.execute(
            MetricPoint.__table__.insert(),  # type: ignore[attr-defined]
            [row_of(stack_id, instance_id, RAW, p) for p in unique.values()],
        )
    return len(unique)


async def read_points(
    db: Database,
    stack_id: str,
    service: str,
    res: int,
    t_from: int,
    t_to: int,
    instance_id: str | None = None,
) -> list[tuple[str, Point]]:
    conds = [
        MetricPoint.stack_id == stack_id, MetricPoint.service == service,
        MetricPoint.res == res, MetricPoint.t >= t_from, MetricPoint.t < t_to,
    ]  # fmt: skip
    if instance_id is not None:
        conds.append(MetricPoint.instance_id == instance_id)
    async with db.read() as session:
        rows = (await session.execute(select(MetricPoint).where(and_(*conds)))).scalars()
        return [(r.instance_id, point_of(r)) for r in rows]


async def read_builds(
    db: Database,
    since: int,
    now: float,
    stack_id: str | None = None,
    service: str | None = None,
    instance_id: str | None = None,
) -> list[tuple[str, str, Point]]:
    """(stack, instance, point) of every point with builds since `since`, oldest first,
    each build once: raw points while they are kept, then one-minute rollups, then hourly
    (each finer resolution from the first whole window its retention still covers)."""
    raw_cut = (int(now) - RAW_KEEP_S) // MINUTE * MINUTE + MINUTE
    minute_cut = (int(now) - MINUTE_KEEP_S) // HOUR * HOUR + HOUR
    conds = [MetricPoint.builds > literal_column("0"), MetricPoint.t >= since]  # as the index
    if stack_id is not None:
        conds.append(MetricPoint.stack_id == stack_id)
    if service is not None:
        conds.append(MetricPoint.service == service)
    if instance_id is not None:
        conds.append(MetricPoint.instance_id == instance_id)

    def finest(res: int, t: int) -> bool:
        if res == RAW:
            return t >= raw_cut
        return minute_cut <= t < raw_cut if res == MINUTE else t < minute_cut

    # (no condition on `res` in SQL: the partial index over points with builds serves it)
    async with db.read() as session:
        rows = (
            await session.execute(select(MetricPoint).where(*conds).order_by(MetricPoint.t))
        ).scalars()
        return [(r.stack_id, r.instance_id, point_of(r)) for r in rows if finest(r.res, r.t)]


# Windows are rolled in slices of instances (by the first character of the instance id),
# each slice one short transaction on the database's writer thread
# (`Database.write_in_thread`): at 10,000 agents a
# minute holds 40,000 raw points, and reading, merging and writing them in one go on the
# event loop stopped it for seconds once a minute and held the write lock meanwhile
# (heartbeats and metric batches waited behind it). Docs: docs/api.md "Scale".
_SLICE_BOUNDS = [None, *"123456789abcdef", None]
SLICE_ROWS = 2000  # source rows above which a window is rolled in slices
ROLL_SLICES = list(zip(_SLICE_BOUNDS[:-1], _SLICE_BOUNDS[1:], strict=True))


async def roll_window(db: Database, source: int, res: int, start: int, end: int) -> int:
    """Rewrite the `res` rollups of [start, end) from the `source` resolution's rows."""
    written: list[int] = []
    async with db.read() as session:
        count = await session.scalar(
            select(func.count()).where(
                MetricPoint.res == source, MetricPoint.t >= start, MetricPoint.t < end
            )
        )
    # a small window (or an empty one, as most are at a restart's catch-up) in one go
    for low, high in ROLL_SLICES if (count or 0) > SLICE_ROWS else [(None, None)]:
        work = partial(_roll_slice, source, res, start, end, low, high, written)
        await db.write_in_thread(work)
        await asyncio.sleep(0)  # let the loop (and queued writers) in between slices
    return sum(written)


def _roll_slice(
    source: int, res: int, start: int, end: int,
    low: str | None, high: str | None, written: list[int], conn: Connection,
) -> None:  # fmt: skip
    """One slice of instances of a window: delete its rollups, write them again."""
    table = MetricPoint.__table__
    assert isinstance(table, Table)
    cols = table.c
    where = [cols.t >= start, cols.t < end]
    if low is not None:
        where.append(cols.instance_id >= low)
    if high is not None:
        where.append(cols.instance_id < high)
    rows = conn.execute(select(table).where(cols.res == source, *where)).mappings()
    by_stack: dict[str, list[tuple[str, Point]]] = {}
    for m in rows:  # (a Row's `.t` is its tuple, not the column: read by name)
        r = SimpleNamespace(**m)
        by_stack.setdefault(r.stack_id, []).append((r.instance_id, point_of(r)))  # type: ignore[arg-type]
    conn.execute(delete(table).where(cols.res == res, *where))
    out = [
        row_of(stack_id, instance, res, p)
        for stack_id, points in by_stack.items()
        for instance, p in rollup(points, res)
    ]
    if out:
        conn.execute(table.insert(), out)
    written.append(len(out))


async def prune(db: Database, now: float) -> int:
    """Delete every resolution's rows past its retention."""
    gone = 0
    async with db.write() as session:
        for res, keep in KEEP.items():
            result = await session.execute(
                delete(MetricPoint).where(MetricPoint.res == res, MetricPoint.t < now - keep)
            )
            gone += result.rowcount or 0  # type: ignore[attr-defined]
    return gone


class Rollups:
    """Background task: roll complete minutes and hours, then prune, every minute."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        now = int(clock())
        # after a start, redo what raw points are still kept for (idempotent)
        self.minute_mark = (now - RAW_KEEP_S) // MINUTE * MINUTE
        self.hour_mark = (now - MINUTE_KEEP_S) // HOUR * HOUR
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> None:
        now = int(self.clock())
        done = now // MINUTE * MINUTE  # windows before this one are complete...
        # ...but an agent's point for the last one may still be on its way: one more
        # pass a minute later rewrites it (points start up to 30 s before they arrive)
        start = max(self.minute_mark - MINUTE, (now - RAW_KEEP_S) // MINUTE * MINUTE)
        for window in range(start, done, MINUTE):  # one transaction per window: bounded
            await roll_window(self.db, RAW, MINUTE, window, window + MINUTE)
        self.minute_mark = max(self.minute_mark, done)
        hour_done = now // HOUR * HOUR
        if hour_done > self.hour_mark:
            hstart = max(self.hour_mark - HOUR, (now - MINUTE_KEEP_S) // HOUR * HOUR)
            for window in range(hstart, hour_done, HOUR):
                await roll_window(self.db, MINUTE, HOUR, window, window + HOUR)
            self.hour_mark = hour_done
        await prune(self.db, now)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metrics-rollups")

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # never stops the server; the next pass redoes the work
                log.exception("metrics rollup failed")
            await asyncio.sleep(ROLLUP_EVERY_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

"""Metrics storage cost: insert rate, rollup rate and bytes per row, on SQLite and
PostgreSQL in one run, projected to 10,000 agents x 10 services (docs/metrics.md).

Inserts `--agents` agents x (`--services` + 1 server) raw points per 30-second interval
for `--intervals` intervals, one batch per agent as the control plane stores them
(controlplane/metrics/store.py `insert_batch`, `--concurrency` batches at a time), then
rolls every complete minute of them into one-minute rollups (`roll_window`, as the
background task does), and prints rows/s of both, bytes per row (database pages or
pg_total_relation_size, indexes included), and what 10,000 agents x 10 services need.
PostgreSQL is a throwaway cluster started here (as `nobody`, needs root and PostgreSQL
15); `--db URL` uses another database instead.

    .venv/bin/python bench/metrics_storage.py                # SQLite and PostgreSQL
    .venv/bin/python bench/metrics_storage.py --agents 500 --intervals 10 --concurrency 8
"""

import argparse
import asyncio
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # (bench/controlplane.py would shadow the package)

from controlplane.db import Database  # noqa: E402
from controlplane.dburl import parse_db_url  # noqa: E402
from controlplane.metrics.points import MINUTE, RAW, Point  # noqa: E402
from controlplane.metrics.store import insert_batch, roll_window  # noqa: E402
from controlplane.models import Instance, Stack, utcnow  # noqa: E402
from tests.support.controlplane import migrate  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
FLEET_AGENTS, FLEET_SERVICES, SHIP_S = 10_000, 10, 30


def point(service: str, t: int) -> Point:
    if service:
        return Point(service, t, 30.0, 900, 3, 90_000, 900_000, [0, 12, 300, 500, 80, 5, 3, 0, 0, 0, 0, 0], 6.3, 3.1, 50_000_000)  # fmt: skip
    host = {"cpus": 2, "mem_total": 4 << 30, "disk_used": 10 << 30, "disk_total": 40 << 30,
            "inodes_free": 2_000_000, "load1": 0.42, "net_rx": 123_456, "net_tx": 654_321}  # fmt: skip
    return Point("", t, 30.0, cpu_s=15.2, mem=1 << 30, host=host)


@dataclass
class Result:
    db: str
    rows: int
    insert_s: float
    rolled_in: int  # raw rows read by the rollup passes
    rollup_s: float
    bytes_per_row: float


async def run(url: str, agents: int, services: int, intervals: int, concurrency: int) -> Result:
    db = Database(parse_db_url(url))
    stack_id = str(uuid.uuid4())
    async with db.write() as s:
        s.add(Stack(id=stack_id, name=f"bench-{stack_id[:8]}", version=1, content_hash="x",
                    doc_hash="x", document={}, webhook_secret="x", created_at=utcnow(),
                    updated_at=utcnow()))  # fmt: skip
    instances = [str(uuid.uuid4()) for _ in range(agents)]
    async with db.write() as s:
        for i in instances:
            s.add(Instance(id=i, stack_id=stack_id, hostname="h", credential_hash=uuid.uuid4().hex * 2,
                           created_at=utcnow()))  # fmt: skip
    names = [f"svc{i}" for i in range(services)] + [""]
    t0 = (int(time.time()) - intervals * 30) // 60 * 60 - 60
    gate = asyncio.Semaphore(concurrency)

    async def one(inst: str, t: int) -> int:
        async with gate:
            return await insert_batch(db, stack_id, inst, [point(n, t) for n in names])

    start = time.perf_counter()
    rows = 0
    for k in range(intervals):
        rows += sum(await asyncio.gather(*(one(i, t0 + 30 * k) for i in instances)))
    insert_s = time.perf_counter() - start
    start = time.perf_counter()
    minutes = range(t0, t0 + intervals * 30 - 59, 60)  # the complete minutes
    for w in minutes:
        await roll_window(db, RAW, MINUTE, w, w + 60)
    rollup_s = time.perf_counter() - start
    rolled_in = len(minutes) * 2 * agents * len(names)
    if db.url.is_sqlite:
        await db.close()
        path = str(db.url.sync_url).split("///", 1)[1]
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = conn.execute(
                "SELECT SUM(pgsize) FROM dbstat WHERE name LIKE '%metric_points%'"
            ).fetchone()[0]
    else:
        async with db.read() as s:
            size = (
                await s.execute(text("SELECT pg_total_relation_size('metric_points')"))
            ).scalar_one()
        await db.close()
    stored = rows + rolled_in // 2  # raw rows plus one minute row per two raw rows
    kind = str(db.url.async_url).split(":")[0].split("+")[0]
    return Result(kind, rows, insert_s, rolled_in, rollup_s, size / stored)


class Postgres:
    """A throwaway PostgreSQL 15 cluster, run as `nobody` (initdb refuses root)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="berth-bench-pg-", dir="/tmp"))
        shutil.chown(self.dir, "nobody", "nogroup")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self._as_nobody(str(PG_BIN / "initdb"), "-D", f"{self.dir}/data", "-A", "trust", "-U", "bench", "-N")  # fmt: skip
        self._as_nobody(str(PG_BIN / "pg_ctl"), "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "start",
                        "-o", f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1")  # fmt: skip
        self.url = f"postgresql+psycopg://bench@127.0.0.1:{port}/postgres"

    def _as_nobody(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "nobody", "--", *args], check=True, capture_output=True, timeout=120)  # fmt: skip

    def stop(self) -> None:
        subprocess.run(["runuser", "-u", "nobody", "--", str(PG_BIN / "pg_ctl"), "-D", f"{self.dir}/data",
                        "-m", "fast", "-w", "stop"], capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)


def report(results: list[Result], services: int) -> None:
    series = FLEET_AGENTS * (FLEET_SERVICES + 1)  # one per service and per server
    # rows/s the fleet makes the control plane write (each rollup window is written twice:
    # once when it closes, once more a pass later for points that arrived late)
    raw, minute, hour = series / SHIP_S, 2 * series / 60, 2 * series / 3600
    kept = series * (3600 // SHIP_S + 1440 + 720)  # 1 h raw, 1 day of minutes, 30 days of hours
    print(f"10,000 agents x 10 services: {raw:,.0f} raw rows/s inserted, {2 * raw:,.0f} raw "
          f"rows/s read by the minute rollups, {minute:,.0f} minute and {hour:,.0f} hourly rows/s "
          f"written; {kept / 1e6:,.0f} M rows kept")  # fmt: skip
    print(f"{'db':<11} {'insert rows/s':>13} {'rollup reads/s':>14} {'bytes/row':>9} "
          f"{'fleet GB/day':>12} {'kept GB':>8} {'insert x need':>13} {'rollup x need':>13}")  # fmt: skip
    for r in results:
        ins, roll = r.rows / r.insert_s, r.rolled_in / r.rollup_s
        per_day = (raw + minute + hour) * 86400 * r.bytes_per_row / 1e9
        print(f"{r.db:<11} {ins:>13,.0f} {roll:>14,.0f} {r.bytes_per_row:>9,.0f} "
              f"{per_day:>12,.0f} {kept * r.bytes_per_row / 1e9:>8,.0f} "
              f"{ins / raw:>13.2f} {roll / (2 * raw):>13.2f}")  # fmt: skip
    print(
        "('x need': this run's rate over what the fleet needs; above 1 keeps up. "
        "'fleet GB/day': bytes written per day, rewrites of rollup windows included)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", help="one database URL instead of SQLite and a throwaway PostgreSQL")
    ap.add_argument("--agents", type=int, default=300)
    ap.add_argument("--services", type=int, default=10)
    ap.add_argument("--intervals", type=int, default=6)
    ap.add_argument("--concurrency", type=int, default=1, help="batches inserted at once")
    a = ap.parse_args()
    print("load:", os.getloadavg(), f"({os.cpu_count()} CPUs)")
    results = []
    scratch = Path(tempfile.mkdtemp(prefix="berth-metrics-"))
    urls = [a.db] if a.db else [f"sqlite:///{scratch}/bench.db"]
    pg = Postgres() if not a.db else None
    try:
        if pg is not None:
            urls.append(pg.url)
        for url in urls:
            migrate(url)
            results.append(asyncio.run(run(url, a.agents, a.services, a.intervals, a.concurrency)))
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"{a.agents} agents x ({a.services} services + server) x {a.intervals} intervals, "
        f"{a.concurrency} batch(es) at a time; load after: {os.getloadavg()}"
    )
    report(results, a.services)


if __name__ == "__main__":
    main()

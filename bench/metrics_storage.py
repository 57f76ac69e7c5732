"""Bytes per stored metric row and insert rate, on SQLite (and PostgreSQL with --db).

Inserts `--agents` agents x (`--services` + 1 server) raw points per 30-second interval
for `--intervals` intervals, as the control plane stores them (controlplane/metrics/
store.py: one batch per agent), then prints rows, rows/s of this machine, and bytes per
row (database file or pg_total_relation_size), from which docs/metrics.md scales to
10,000 agents x 10 services.

    .venv/bin/python bench/metrics_storage.py --agents 200 --intervals 10
"""

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # (bench/controlplane.py would shadow the package)

from controlplane.db import Database  # noqa: E402
from controlplane.dburl import parse_db_url  # noqa: E402
from controlplane.metrics.points import Point  # noqa: E402
from controlplane.metrics.store import insert_batch  # noqa: E402
from controlplane.models import Instance, Stack, utcnow  # noqa: E402
from tests.support.controlplane import migrate  # noqa: E402


def point(service: str, t: int) -> Point:
    if service:
        return Point(service, t, 30.0, 900, 3, 90_000, 900_000, [0, 12, 300, 500, 80, 5, 3, 0, 0, 0, 0, 0], 6.3, 3.1, 50_000_000)  # fmt: skip
    host = {"cpus": 2, "mem_total": 4 << 30, "disk_used": 10 << 30, "disk_total": 40 << 30,
            "inodes_free": 2_000_000, "load1": 0.42, "net_rx": 123_456, "net_tx": 654_321}  # fmt: skip
    return Point("", t, 30.0, cpu_s=15.2, mem=1 << 30, host=host)


async def run(url: str, agents: int, services: int, intervals: int) -> None:
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
    t0 = int(time.time()) // 30 * 30 - intervals * 30
    start = time.perf_counter()
    rows = 0
    for k in range(intervals):
        for inst in instances:
            rows += await insert_batch(db, stack_id, inst, [point(n, t0 + 30 * k) for n in names])
    took = time.perf_counter() - start
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
    print(f"{str(db.url.async_url).split(':')[0]}: {rows} rows in {took:.1f} s = {rows / took:,.0f} rows/s "
          f"(one connection, batches of {len(names)}); {size / rows:,.0f} bytes/row")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--services", type=int, default=10)
    ap.add_argument("--intervals", type=int, default=10)
    a = ap.parse_args()
    url = a.db or f"sqlite:///{tempfile.mkdtemp(prefix='berth-metrics-')}/bench.db"
    migrate(url)
    asyncio.run(run(url, a.agents, a.services, a.intervals))


if __name__ == "__main__":
    main()

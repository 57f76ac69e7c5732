"""Rows committed through `Database.write_in_thread` on SQLite are seen by other processes.

A process holds SQLite's POSIX locks on the database file per process, and closing *any*
descriptor of that file drops them all. If the serving process opens and closes the file
while its connections are open (a second engine made later), another process that then
closes its last connection believes it was the last one: it checkpoints and deletes the
WAL, and every later commit of the server goes to a WAL nobody else reads.
"""

import asyncio
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Connection, text

from controlplane.db import Database
from controlplane.dburl import parse_db_url

READ = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
print(sorted(r[0] for r in conn.execute("SELECT n FROM t")))
conn.close()
"""


def rows_seen_by_another_process(path: Path) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", READ, str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [int(n) for n in out.stdout.strip("[]\n").split(",") if n.strip()]


def insert(n: int, conn: Connection) -> None:
    conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})


def test_writer_thread_commits_are_seen_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "berth.db"

    async def main() -> list[list[int]]:
        db = Database(parse_db_url(f"sqlite:///{path}"))
        db.start()  # as `serve` does: checkpoints in a thread
        seen = []
        try:
            async with db.write() as session:  # the app's engines hold connections now
                await session.execute(text("CREATE TABLE t (n INTEGER)"))
                await session.execute(text("INSERT INTO t (n) VALUES (0)"))
            async with db.read() as session:
                await session.execute(text("SELECT n FROM t"))
            for n in (1, 2, 3):
                await db.write_in_thread(lambda conn, n=n: insert(n, conn))
                seen.append(await asyncio.to_thread(rows_seen_by_another_process, path))
        finally:
            await db.close()
        return seen

    assert asyncio.run(main()) == [[0, 1], [0, 1, 2], [0, 1, 2, 3]]

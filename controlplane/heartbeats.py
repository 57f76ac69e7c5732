"""Heartbeats stored by group commit (`groupcommit.GroupCommit`): many agents' snapshots
written in one transaction, one bulk UPDATE by primary key. Each heartbeat is a full
snapshot, so only the latest per instance matters: one queued per instance.

On PostgreSQL the batch commits with `synchronous_commit = off`: the commit is visible to
every reader at once but returns without waiting for the WAL flush to disk, which on a
busy disk takes longer than the whole request budget. A PostgreSQL crash can lose the last
fraction of a second of heartbeats; each is a full snapshot that the agent sends again
within one poll interval. (SQLite runs WAL with synchronous=NORMAL: no fsync per commit
either.)
"""

from functools import partial
from typing import Any

from sqlalchemy import Connection, Table, bindparam, text, update

from controlplane.db import Database
from controlplane.groupcommit import GroupCommit
from controlplane.models import Instance, utcnow
from controlplane.status import Heartbeat, stored_heartbeat

MAX_BATCH = 2000
# how long the writer collects heartbeats before one transaction (groupcommit's docstring)
DEFAULT_WINDOW_S = 0.04


_INSTANCES = Instance.__table__
assert isinstance(_INSTANCES, Table)
# keys of each row name the columns to SET; the row is picked by `row_id`
_UPDATE = update(_INSTANCES).where(_INSTANCES.c.id == bindparam("row_id"))


def _store(rows: list[dict[str, Any]], sqlite: bool, conn: Connection) -> None:
    """One batch, one executemany (runs on the database's writer thread)."""
    if not sqlite:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
    params = []
    for row in rows:
        values = dict(row)
        values["row_id"] = values.pop("id")
        params.append(values)
    conn.execute(_UPDATE, params)


class HeartbeatWriter(GroupCommit):
    def __init__(self, db: Database, window_s: float = DEFAULT_WINDOW_S) -> None:
        super().__init__("heartbeat", self._store, window_s, MAX_BATCH)
        self._db = db

    async def record(self, instance_id: str, hb: Heartbeat) -> None:
        """Store `hb` as the instance's latest snapshot; returns once committed."""
        row = {
            "id": instance_id,
            "last_seen": utcnow(),
            **stored_heartbeat(hb),
        }
        await self.submit(instance_id, row)

    async def _store(self, rows: list[dict[str, Any]]) -> None:
        await self._db.write_in_thread(partial(_store, rows, self._db.url.is_sqlite))

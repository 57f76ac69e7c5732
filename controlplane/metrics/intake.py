"""`POST /api/v1/agent/metrics` at fleet rates: one function answers it (for the Quart
route and the agents' fast path alike), and the batches are stored by group commit.

At 10,000 agents, 333 batches a second arrive (one per agent every 30 s). One
transaction per batch (a DELETE and an INSERT, about 3 ms of CPU each on SQLite) took
more than the whole event loop had; `MetricWriter` collects batches for `WINDOW_S` (40 ms) and
writes them with one upsert (a point sent again, same service and second, replaces the
old: the table's primary key), the whole transaction on the database's writer thread
(`Database.write_in_thread`): the event loop only hands over plain rows.
The agent's answer still means "stored".
"""

import itertools
from functools import partial
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from controlplane.agentdirectory import AgentDirectory, AgentIdentity
from controlplane.db import Database
from controlplane.errors import TooManyRequests
from controlplane.groupcommit import GroupCommit
from controlplane.httpjson import json_object, parse_json_body
from controlplane.ingest import known_services
from controlplane.metrics.limit import BatchLimit
from controlplane.metrics.points import RAW, parse_batch
from controlplane.metrics.store import row_of
from controlplane.models import MetricPoint

WINDOW_S = 0.04  # as heartbeats: batches of ~13 at 10,000 agents; latency stays well in p99
MAX_BATCHES = 2000  # agents' batches per transaction

_TABLE = MetricPoint.__table__
assert isinstance(_TABLE, Table)
_KEY = [c.name for c in _TABLE.primary_key.columns]


def _upsert(dialect: Any) -> Any:
    stmt = dialect.insert(_TABLE)
    values = {c.name: stmt.excluded[c.name] for c in _TABLE.columns if not c.primary_key}
    return stmt.on_conflict_do_update(index_elements=_KEY, set_=values)


_UPSERT = {True: _upsert(sqlite), False: _upsert(postgresql)}


def _store(batches: list[dict[str, Any]], is_sqlite: bool, conn: Connection) -> None:
    """Every queued batch's points in one statement (runs on the writer thread); one row
    per key, the last sent winning (PostgreSQL refuses a key twice in one upsert)."""
    rows = {tuple(r[k] for k in _KEY): r for batch in batches for r in batch["rows"]}
    conn.execute(_UPSERT[is_sqlite], list(rows.values()))


class MetricWriter(GroupCommit):
    def __init__(self, db: Database, window_s: float = WINDOW_S) -> None:
        super().__init__("metrics", self._write_batches, window_s, MAX_BATCHES)
        self._db = db
        self._ids = itertools.count()
        # at most this many batches per instance per minute, per process
        self.limit = BatchLimit()

    async def store(self, stack_id: str, instance_id: str, points: list[Any]) -> int:
        """Store raw points (returns once committed); how many distinct points."""
        rows = list(
            {(p.service, p.t): row_of(stack_id, instance_id, RAW, p) for p in points}.values()
        )
        if rows:
            await self.submit(next(self._ids), {"rows": rows})
        return len(rows)

    async def _write_batches(self, batches: list[dict[str, Any]]) -> None:
        await self._db.write_in_thread(partial(_store, batches, self._db.url.is_sqlite))


async def intake(
    writer: MetricWriter, directory: AgentDirectory, ident: AgentIdentity, raw: bytes
) -> dict[str, Any]:
    """The answer to an agent's metric batch `raw` (already authenticated as `ident`)."""
    wait = writer.limit.admit(ident.instance_id)
    if wait:
        raise TooManyRequests("too many metric batches from this instance", wait)
    points = parse_batch(json_object(parse_json_body(raw)))
    known = await known_services(directory, ident.stack_id)
    kept = [p for p in points if p.service == "" or p.service in known]
    stored = await writer.store(ident.stack_id, ident.instance_id, kept)
    answer: dict[str, Any] = {"stored": stored}
    refused = sorted({p.service for p in points if p.service and p.service not in known})
    if refused:
        answer["refused"] = refused
    return answer

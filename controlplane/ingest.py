"""What an agent may post: only its own stack's services, and only so much per minute.

An agent credential can be stolen from (or misused by) one server, so what it posts is
bounded here, before anything is stored:

- `known_services`: the service names of the stack's current document. Events and log
  chunks naming another service are dropped (acknowledged, so the agent does not resend
  them forever, and listed back as refused); events without a service are the stack's own.
- `IngestMeter.charge`: events and log bytes per instance in a fixed one-minute window
  (`ingest_windows`, shared by every process). A batch that would go over the limit is
  refused whole with 429 and Retry-After (the end of the window); the agent keeps it and
  sends it again. A batch into an empty window is always admitted, so a batch as large as
  the body limit can never be stuck.
- `Retention.prune`: events and log chunks older than the configured days are deleted, at
  most once every `PRUNE_EVERY_S` per process, from the ingest path.
"""

import json
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from controlplane.agentdirectory import AgentDirectory
from controlplane.db import Database
from controlplane.errors import TooManyRequests
from controlplane.limits import Limits
from controlplane.models import Event, IngestWindow, LogChunk, utcnow

WINDOW_S = 60.0
PRUNE_EVERY_S = 600.0

_services: dict[tuple[str, str], frozenset[str]] = {}  # (stack, doc hash) -> names


async def known_services(directory: AgentDirectory, stack_id: str) -> frozenset[str]:
    """The service names of the stack's current document (empty if it has none)."""
    found = await directory.document(stack_id)
    if found is None:
        return frozenset()
    doc_hash, body = found
    names = _services.get((stack_id, doc_hash))
    if names is None:
        doc = json.loads(body)
        names = frozenset(str(s.get("name")) for s in doc.get("services") or [])
        if len(_services) > 10_000:
            _services.clear()
        _services[(stack_id, doc_hash)] = names
    return names


def unknown_service(name: str | None, known: frozenset[str]) -> bool:
    return name is not None and name not in known


class IngestMeter:
    def __init__(self, db: Database, limits: Limits, clock: Callable[[], float] = time.time):
        self.db = db
        self.limits = limits
        self.clock = clock

    async def charge(self, instance_id: str, *, events: int = 0, log_bytes: int = 0) -> None:
        """Count a batch against the instance's minute; TooManyRequests if it goes over."""
        try:
            await self._charge(instance_id, events, log_bytes)
        except IntegrityError:  # a concurrent first batch created the row: count again
            await self._charge(instance_id, events, log_bytes)

    async def _charge(self, instance_id: str, events: int, log_bytes: int) -> None:
        now = self.clock()
        async with self.db.write() as session:
            row = await session.get(IngestWindow, instance_id, with_for_update=True)
            if row is None:
                row = IngestWindow(instance_id=instance_id, window_start=now, events=0, log_bytes=0)
                session.add(row)
            elif now - row.window_start >= WINDOW_S:
                row.window_start, row.events, row.log_bytes = now, 0, 0
            for used, wanted, cap, what in (
                (row.events, events, self.limits.agent_events_per_minute, "events"),
                (row.log_bytes, log_bytes, self.limits.agent_log_bytes_per_minute, "log bytes"),
            ):
                if wanted and used and used + wanted > cap:
                    wait = row.window_start + WINDOW_S - now
                    raise TooManyRequests(
                        f"this instance may post at most {cap} {what} a minute; "
                        f"send the rest in {int(wait) + 1} s",
                        wait,
                    )
            row.events += events
            row.log_bytes += log_bytes


class Retention:
    def __init__(self, db: Database, limits: Limits, clock: Callable[[], float] = time.time):
        self.db = db
        self.limits = limits
        self.clock = clock
        self._pruned_at: float | None = None

    async def prune(self, *, force: bool = False) -> None:
        """Delete events and log chunks past their retention (at most every PRUNE_EVERY_S)."""
        now = self.clock()
        if not force and self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        today = utcnow()
        async with self.db.write() as session:
            for model, days in (
                (Event, self.limits.events_retention_days),
                (LogChunk, self.limits.logs_retention_days),
            ):
                if days > 0:
                    cutoff = today - timedelta(days=days)
                    await session.execute(delete(model).where(model.received_at < cutoff))

"""Status ingestion: heartbeats (latest full snapshot per instance) and events (idempotent).

Heartbeats are stored by `heartbeats.HeartbeatWriter` (group commit). Parsing the agents' bodies (`parse_heartbeat`, `parse_events`) and deciding an instance's
status from its last heartbeat (`instance_status`) are pure functions; the rest stores and
lists. Events are inserted with ON CONFLICT DO NOTHING on (instance, agent-made id), so a
resent batch stores nothing twice and every id of the batch can be acknowledged.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from agent.schema import ValidationError, report
from agent.schema.cadence import (  # noqa: F401 (the settings' and CLI's bounds, re-exported)
    DEFAULT_HEARTBEAT_INTERVAL_S,
    MAX_HEARTBEAT_INTERVAL_S,
    MIN_HEARTBEAT_INTERVAL_S,
)
from agent.version import is_behind
from controlplane.db import Database
from controlplane.errors import BadRequest, NotFound, Unprocessable
from controlplane.httpjson import batch_items
from controlplane.models import Event, Instance, Stack, iso, utcnow

# Agents send a heartbeat on every change of state and at least every heartbeat interval
# (a control-plane setting within agent/schema/cadence.py's bounds, announced in each
# heartbeat answer): "stale" and "offline" count missed intervals, whatever the stack's
# poll interval.
STALE_AFTER_BEATS = 3
OFFLINE_AFTER_BEATS = 8
MAX_EVENTS_PER_BATCH = 1000
MAX_EVENTS_PAGE = 1000
DEFAULT_EVENTS_PAGE = 100
MAX_EVENT_MESSAGE_CHARS = 10_000


# the types of the return path (the agent builds them, this side parses each body once)
Heartbeat = report.Heartbeat
IncomingEvent = report.Event
# keys of a heartbeat with a column of their own; the rest is stored in `extra`
_HEARTBEAT_COLUMNS = ("agent_version", "applied_version", "state", "services", "security")


def instance_status(last_seen: datetime | None, now: datetime, heartbeat_interval_s: float) -> str:
    """online, stale (3 heartbeat intervals without one) or offline (8)."""
    if last_seen is None:
        return "offline"
    silent = (now - last_seen).total_seconds()
    if silent >= OFFLINE_AFTER_BEATS * heartbeat_interval_s:
        return "offline"
    if silent >= STALE_AFTER_BEATS * heartbeat_interval_s:
        return "stale"
    return "online"


def heartbeat_answer(doc_hash: str | None, heartbeat_interval_s: float) -> dict[str, Any]:
    """The body of a stored heartbeat's 200 (the Quart handler and the fast path)."""
    return {"ok": True, "desired_hash": doc_hash, "heartbeat_interval_s": heartbeat_interval_s}


def parse_heartbeat(body: Any) -> Heartbeat:
    if not isinstance(body, dict):
        raise BadRequest("heartbeat body must be a JSON object", field="body")
    try:
        return report.parse_heartbeat(body)
    except ValidationError as exc:
        raise Unprocessable(exc.detail, field=exc.field) from None


def stored_heartbeat(hb: Heartbeat) -> dict[str, Any]:
    """The instance's columns from a heartbeat: the snapshot as the agent sent it."""
    wire = hb.wire if hb.wire is not None else hb.to_json()
    return {
        "agent_version": hb.agent_version,
        "applied_version": hb.applied_version,
        "state": hb.state,
        "services": wire.get("services", []),
        "security": dict(hb.security),
        "extra": {k: v for k, v in wire.items() if k not in _HEARTBEAT_COLUMNS},
    }


def parse_time(value: Any, where: str) -> datetime:
    try:
        return report.parse_timestamp(value, where)
    except ValidationError as exc:
        raise Unprocessable(exc.detail, field=exc.field) from None


def parse_events(body: Any) -> list[IncomingEvent]:
    try:
        return [report.parse_event(ev, where) for where, ev in
                batch_items(body, "events", MAX_EVENTS_PER_BATCH)]  # fmt: skip
    except ValidationError as exc:
        raise Unprocessable(exc.detail, field=exc.field) from None


async def record_events(
    db: Database, instance_id: str, stack_id: str, events: list[IncomingEvent]
) -> list[str]:
    """Store new events (duplicates ignored); return every id of the batch, now all stored."""
    if not events:
        return []
    now = utcnow()
    rows = [
        {
            "event_id": e.id,
            "instance_id": instance_id,
            "stack_id": stack_id,
            "type": e.type,
            "service": e.service,
            "message": e.message[:MAX_EVENT_MESSAGE_CHARS],
            "at": e.at,
            "received_at": now,
            "extra": dict(e.extra),
        }
        for e in events
    ]
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(Event).on_conflict_do_nothing(index_elements=["instance_id", "event_id"])
    async with db.write() as session:
        await session.execute(stmt, rows)
    return list(dict.fromkeys(e.id for e in events))


def instance_json(
    row: Instance, heartbeat_interval_s: float, now: datetime, served: str | None = None
) -> dict[str, Any]:
    return {
        **row.extra,
        "id": row.id,
        "stack_id": row.stack_id,
        "hostname": row.hostname,
        "created_at": iso(row.created_at),
        "last_seen": iso(row.last_seen),
        "status": "revoked"
        if row.revoked_at
        else instance_status(row.last_seen, now, heartbeat_interval_s),
        "revoked_at": iso(row.revoked_at),
        "agent_version": row.agent_version,
        # the Berth version the wheelhouse serves, and whether this agent is older (issue 16)
        "served_version": served,
        "agent_behind": is_behind(row.agent_version, served),
        "applied_version": row.applied_version,
        "state": row.state,
        "services": row.services,
        "security": row.security,
    }


def event_json(row: Event) -> dict[str, Any]:
    return {
        **row.extra,
        "id": row.event_id,
        "seq": row.seq,
        "instance_id": row.instance_id,
        "stack_id": row.stack_id,
        "service": row.service,
        "type": row.type,
        "message": row.message,
        "at": iso(row.at),
        "received_at": iso(row.received_at),
    }


async def list_instances(
    db: Database, stack_id: str, heartbeat_interval_s: float, served: str | None = None
) -> list[dict[str, Any]]:
    async with db.read() as session:
        stack = await session.get(Stack, stack_id)
        if stack is None:
            raise NotFound(f"no stack with id {stack_id!r}; GET /api/v1/stacks lists them")
        rows = await session.scalars(
            select(Instance).where(Instance.stack_id == stack_id).order_by(Instance.created_at)
        )
        now = utcnow()
        return [instance_json(r, heartbeat_interval_s, now, served) for r in rows]


@dataclass(frozen=True)
class EventQuery:
    """Filters and page of an events listing; newest first, `before` is a `seq` cursor."""

    instance: str | None = None
    service: str | None = None
    type: str | None = None
    since: datetime | None = None
    before: int | None = None
    limit: int = DEFAULT_EVENTS_PAGE


def parse_event_query(args: dict[str, str]) -> EventQuery:
    def integer(key: str, low: int, high: int) -> int | None:
        raw = args.get(key)
        if raw is None:
            return None
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise BadRequest(f"must be an integer from {low} to {high}", field=key)
        return int(raw)

    since = args.get("since")
    return EventQuery(
        instance=args.get("instance") or None,
        service=args.get("service") or None,
        type=args.get("type") or None,
        since=parse_time(since, "since") if since else None,
        before=integer("before", 1, 2**62),
        limit=integer("limit", 1, MAX_EVENTS_PAGE) or DEFAULT_EVENTS_PAGE,
    )


async def list_events(db: Database, stack_id: str, q: EventQuery) -> dict[str, Any]:
    stmt = select(Event).where(Event.stack_id == stack_id)
    if q.instance:
        stmt = stmt.where(Event.instance_id == q.instance)
    if q.service:
        stmt = stmt.where(Event.service == q.service)
    if q.type:
        stmt = stmt.where(Event.type == q.type)
    if q.since:
        stmt = stmt.where(Event.at >= q.since)
    if q.before:
        stmt = stmt.where(Event.seq < q.before)
    stmt = stmt.order_by(Event.seq.desc()).limit(q.limit + 1)
    async with db.read() as session:
        if await session.get(Stack, stack_id) is None:
            raise NotFound(f"no stack with id {stack_id!r}; GET /api/v1/stacks lists them")
        rows = list(await session.scalars(stmt))
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    return {
        "events": [event_json(r) for r in rows],
        "next_before": rows[-1].seq if more and rows else None,
    }

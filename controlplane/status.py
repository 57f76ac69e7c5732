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

from agent.version import is_behind
from controlplane.db import Database
from controlplane.errors import BadRequest, NotFound, Unprocessable
from controlplane.httpjson import batch_items
from controlplane.models import Event, Instance, Stack, iso, utcnow

# Agents send a heartbeat on every change of state and at least every heartbeat interval
# (a control-plane setting, announced in each heartbeat answer): "stale" and "offline"
# count missed intervals, whatever the stack's poll interval.
DEFAULT_HEARTBEAT_INTERVAL_S = 15.0
MIN_HEARTBEAT_INTERVAL_S = 1.0
MAX_HEARTBEAT_INTERVAL_S = 60.0
STALE_AFTER_BEATS = 3
OFFLINE_AFTER_BEATS = 8
MAX_EVENTS_PER_BATCH = 1000
MAX_EVENTS_PAGE = 1000
DEFAULT_EVENTS_PAGE = 100
_EVENT_KEYS = ("id", "type", "service", "message", "at")
_HEARTBEAT_KEYS = ("agent_version", "applied_version", "state", "services", "security")


@dataclass(frozen=True)
class Heartbeat:
    agent_version: str | None
    applied_version: int | None
    state: str | None
    services: list[dict[str, Any]]
    security: dict[str, Any]
    extra: dict[str, Any]


@dataclass(frozen=True)
class IncomingEvent:
    id: str
    type: str
    service: str | None
    message: str
    at: datetime
    extra: dict[str, Any]


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


def _opt_str(body: dict[str, Any], key: str, where: str, max_len: int = 255) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise Unprocessable(f"must be a string of at most {max_len} characters", field=where)
    return value


def parse_heartbeat(body: Any) -> Heartbeat:
    if not isinstance(body, dict):
        raise BadRequest("heartbeat body must be a JSON object", field="body")
    applied = body.get("applied_version")
    if applied is not None and (isinstance(applied, bool) or not isinstance(applied, int)):
        raise Unprocessable("must be an integer version or null", field="applied_version")
    services = body.get("services", [])
    if not isinstance(services, list) or not all(isinstance(s, dict) for s in services):
        raise Unprocessable("must be a list of service objects", field="services")
    security = body.get("security", {})
    if not isinstance(security, dict):
        raise Unprocessable("must be an object", field="security")
    return Heartbeat(
        agent_version=_opt_str(body, "agent_version", "agent_version", 64),
        applied_version=applied,
        state=_opt_str(body, "state", "state", 64),
        services=services,
        security=security,
        extra={k: v for k, v in body.items() if k not in _HEARTBEAT_KEYS},
    )


def parse_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise Unprocessable(
            "must be an ISO 8601 timestamp such as 2024-05-01T12:00:00Z", field=where
        )
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise Unprocessable(
            f"{value!r} is not an ISO 8601 timestamp such as 2024-05-01T12:00:00Z", field=where
        ) from None
    if parsed.tzinfo is None:
        raise Unprocessable("must include a timezone (Z or +00:00)", field=where)
    return parsed


def parse_events(body: Any) -> list[IncomingEvent]:
    events = []
    for where, ev in batch_items(body, "events", MAX_EVENTS_PER_BATCH):
        ev_id = ev.get("id")
        if not isinstance(ev_id, str) or not 1 <= len(ev_id) <= 64:
            raise Unprocessable("must be a string of 1-64 characters (a UUID)", field=f"{where}.id")
        ev_type = ev.get("type")
        if not isinstance(ev_type, str) or not 1 <= len(ev_type) <= 64:
            raise Unprocessable(
                "must be a string of 1-64 characters (e.g. build, crash, health)",
                field=f"{where}.type",
            )
        message = ev.get("message", "")
        if not isinstance(message, str):
            raise Unprocessable("must be a string", field=f"{where}.message")
        events.append(
            IncomingEvent(
                id=ev_id,
                type=ev_type,
                service=_opt_str(ev, "service", f"{where}.service", 63),
                message=message[:10_000],
                at=parse_time(ev.get("at"), f"{where}.at"),
                extra={k: v for k, v in ev.items() if k not in _EVENT_KEYS},
            )
        )
    return events


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
            "message": e.message,
            "at": e.at,
            "received_at": now,
            "extra": e.extra,
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

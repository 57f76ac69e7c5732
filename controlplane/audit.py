"""The audit trail: who changed what, when, from where, under which request id.

Every change by a person or token is one row in `audit_records` (see `ACTIONS`). Rows are
append-only: no API deletes one. The only deletion is the retention sweep (`Sweeper`),
which removes rows older than `--audit-retention-days` (default 365; 0 keeps every row).

Handlers call `record_request(db, action, ...)` after their change committed; it takes
the actor from the request (`g.audit_actor`: the admin token or the dashboard user, set
by the authentication step), the client address and the request id (`X-Request-Id` as
sent by the client when it looks sane, else a fresh one; echoed in every answer).
Commands run on the control plane's host (`berth controlplane token create`) use
`record` with a `cli` actor. `parse_query` is pure.
"""

import asyncio
import contextlib
import getpass
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from quart import Quart, Response, g, has_request_context, request
from sqlalchemy import delete, select

from controlplane.db import Database
from controlplane.errors import BadRequest
from controlplane.models import AdminToken, AuditRecord, Stack, iso, utcnow

log = logging.getLogger("controlplane.audit")

DEFAULT_RETENTION_DAYS = 365
SWEEP_INTERVAL_S = 3600.0
MAX_PAGE = 500
DEFAULT_PAGE = 100

# action -> what it means (docs/api.md lists the same)
ACTIONS = {
    "stack.create": "a stack was created (version_to = 1)",
    "stack.update": "a stack was saved (version from -> to; equal when nothing changed)",
    "stack.delete": "a stack was deleted",
    "stack.refresh": "refs were re-resolved on request",
    "stack.rollback": "an earlier version's content was published again",
    "stack.webhook": "a signed git push re-resolved the refs",
    "install_token.create": "an install token was created",
    "install_token.revoke": "an install token was revoked",
    "install_token.use": "an agent exchanged an install token (a new server)",
    "instance.revoke": "a server's credential was revoked",
    "admin_token.create": "an admin API token was created",
    "admin_token.revoke": "an admin API token was revoked",
    "user.create": "a dashboard user was created",
    "user.reset": "a dashboard user's password was reset",
    "login.success": "a dashboard login succeeded",
    "login.failure": "a dashboard login failed (or was throttled)",
    "channel.create": "a notification channel was created",
    "channel.update": "a notification channel was changed",
    "channel.delete": "a notification channel was deleted",
}

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True)
class Actor:
    kind: str  # token, user, webhook, agent, cli
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def cli_actor() -> Actor:
    """Someone on the control plane's host, by their login name."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return Actor("cli", who)


# request ids ---------------------------------------------------------------------------


def install_request_ids(app: Quart) -> None:
    """Give every request an id (the client's `X-Request-Id` if sane) and echo it back
    (on every answer but the agent API's)."""
    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)


async def _assign_request_id() -> None:
    sent = request.headers.get("X-Request-Id", "")
    g.request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex


async def _echo_request_id(resp: Response) -> Response:
    rid = g.get("request_id")
    # not on the agents' API: its answers must stay byte-identical to the fast path's
    # (controlplane/agentfastpath.py), and agents make no changes a person audits by id
    if rid and not request.path.startswith("/api/v1/agent/"):
        resp.headers.setdefault("X-Request-Id", rid)
    return resp


def set_actor(actor: Actor) -> None:
    """Called by the authentication step of the API and the dashboard."""
    g.audit_actor = actor


async def admin_actor(db: Database, token_id: str) -> Actor:
    async with db.read() as session:
        row = await session.get(AdminToken, token_id)
    return Actor("token", row.name if row is not None else token_id)


async def authenticate_admin(db: Database) -> None:
    """The API's admin check (401 unless a live admin token) that also names the actor."""
    from controlplane import enrollment, tokens

    token_id = await enrollment.check_admin(db, tokens.bearer(request.headers.get("Authorization")))
    set_actor(await admin_actor(db, token_id))


# writing -------------------------------------------------------------------------------


async def record(
    db: Database,
    action: str,
    actor: Actor,
    *,
    client_addr: str | None = None,
    request_id: str | None = None,
    stack_id: str | None = None,
    stack_name: str | None = None,
    version_from: int | None = None,
    version_to: int | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    row = AuditRecord(
        at=utcnow(),
        action=action,
        actor_kind=actor.kind,
        actor=actor.name[:255],
        client_addr=client_addr,
        request_id=request_id,
        stack_id=stack_id,
        stack_name=stack_name,
        version_from=version_from,
        version_to=version_to,
        target=target,
        detail=detail or {},
    )
    async with db.write() as session:
        if stack_id and not stack_name:
            row.stack_name = await session.scalar(select(Stack.name).where(Stack.id == stack_id))
        session.add(row)


async def record_request(
    db: Database, action: str, actor: Actor | None = None, **fields: Any
) -> None:
    """`record` with the current request's actor, client address and request id."""
    who = actor or g.get("audit_actor") or Actor("anonymous", "-")
    await record(
        db,
        action,
        who,
        client_addr=request.remote_addr if has_request_context() else None,
        request_id=g.get("request_id") if has_request_context() else None,
        **fields,
    )


def versions(before: Any, after: Any, changed: bool, **detail: Any) -> dict[str, Any]:
    """The stack fields of a record for a save that went from `before` to `after`
    (both `Stack` rows)."""
    return {
        "stack_id": after.id,
        "stack_name": after.name,
        "version_from": before.version,
        "version_to": after.version,
        "detail": {"changed": changed, **detail},
    }


# reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditQuery:
    actor: str | None = None
    stack: str | None = None  # id or name
    action: str | None = None  # exact, or a prefix ending in "." ("stack.")
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None  # paging: records with seq < before
    limit: int = DEFAULT_PAGE


def _time(raw: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            "must be an ISO 8601 time, e.g. 2026-11-29T14:00:00Z", field=field
        ) from None
    if value.tzinfo is None:
        raise BadRequest("must include a time zone (Z or +HH:MM)", field=field)
    return value


def parse_query(args: dict[str, str]) -> AuditQuery:
    """The `GET /api/v1/audit` query string; 400 naming the bad parameter."""
    action = args.get("action") or None
    if (
        action
        and action not in ACTIONS
        and not (action.endswith(".") and any(a.startswith(action) for a in ACTIONS))
    ):
        raise BadRequest(
            f"unknown action {action!r}; one of {', '.join(ACTIONS)} or a prefix like 'stack.'",
            field="action",
        )
    before = None
    if args.get("before"):
        if not args["before"].isdigit():
            raise BadRequest("must be a record's seq (a whole number)", field="before")
        before = int(args["before"])
    limit = DEFAULT_PAGE
    if args.get("limit"):
        raw = args["limit"]
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
            raise BadRequest(f"must be a whole number from 1 to {MAX_PAGE}", field="limit")
        limit = int(raw)
    return AuditQuery(
        actor=args.get("actor") or None,
        stack=args.get("stack") or None,
        action=action,
        since=_time(args["since"], "since") if args.get("since") else None,
        until=_time(args["until"], "until") if args.get("until") else None,
        before=before,
        limit=limit,
    )


def record_json(row: AuditRecord) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": iso(row.at),
        "action": row.action,
        "actor": {"kind": row.actor_kind, "name": row.actor},
        "client_addr": row.client_addr,
        "request_id": row.request_id,
        "stack": {"id": row.stack_id, "name": row.stack_name} if row.stack_id else None,
        "version_from": row.version_from,
        "version_to": row.version_to,
        "target": row.target,
        "detail": row.detail,
    }


async def query(db: Database, q: AuditQuery) -> tuple[list[AuditRecord], int | None]:
    """Newest first; (rows, the `before` value of the next page or None)."""
    stmt = select(AuditRecord)
    if q.actor:
        stmt = stmt.where(AuditRecord.actor == q.actor)
    if q.stack:
        stmt = stmt.where((AuditRecord.stack_id == q.stack) | (AuditRecord.stack_name == q.stack))
    if q.action:
        if q.action.endswith("."):
            stmt = stmt.where(AuditRecord.action.startswith(q.action))
        else:
            stmt = stmt.where(AuditRecord.action == q.action)
    if q.since:
        stmt = stmt.where(AuditRecord.at >= q.since)
    if q.until:
        stmt = stmt.where(AuditRecord.at < q.until)
    if q.before is not None:
        stmt = stmt.where(AuditRecord.seq < q.before)
    stmt = stmt.order_by(AuditRecord.seq.desc()).limit(q.limit + 1)
    async with db.read() as session:
        rows = list(await session.scalars(stmt))
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    return rows, (rows[-1].seq if more and rows else None)


# retention -----------------------------------------------------------------------------


async def prune(db: Database, retention_days: int) -> int:
    """Delete records older than `retention_days` (0: keep all); how many went."""
    if retention_days <= 0:
        return 0
    cutoff = utcnow() - timedelta(days=retention_days)
    async with db.write() as session:
        result = await session.execute(delete(AuditRecord).where(AuditRecord.at < cutoff))
        return result.rowcount or 0  # type: ignore[attr-defined]


class Sweeper:
    """Runs `prune` at start and then every hour, while the server runs."""

    def __init__(self, db: Database, retention_days: int) -> None:
        self.db = db
        self.retention_days = retention_days
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.retention_days > 0:
            self._task = asyncio.create_task(self._run(), name="audit-retention")

    async def _run(self) -> None:
        while True:
            try:
                gone = await prune(self.db, self.retention_days)
                if gone:
                    log.info("audit retention: removed %d records older than %d days",
                             gone, self.retention_days)  # fmt: skip
            except Exception:  # the sweep must never stop the server; try again later
                log.exception("audit retention sweep failed")
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

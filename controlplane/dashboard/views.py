"""What the pages show, computed from rows by pure functions (no I/O, no templates).

`stack_picture` turns a stack's document and its instances' latest heartbeats into the
overview: one `InstanceView` per server (status from the heartbeat age, applied/applying/
degraded with the agent's reasons, whether it runs the desired version) and the services ×
instances matrix, where each `Cell` says whether that server runs the desired commit.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.schema.report import ServiceSnapshot, stored_services
from controlplane.models import Instance
from controlplane.status import instance_status


def short(sha: str | None, n: int = 10) -> str:
    return sha[:n] if sha else "—"


def ago(when: datetime | None, now: datetime) -> str:
    """ "4 s ago", "3 min ago", "2 h ago", "5 d ago" (the page's JS keeps it current)."""
    if when is None:
        return "never"
    s = max(0, int((now - when).total_seconds()))
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


@dataclass(frozen=True)
class Cell:
    service: str
    state: str
    health: str
    restarts: int
    commit: str | None
    desired_commit: str | None
    pid: int | None
    port: int | None
    last_exit: str | None
    last_error: str | None

    @property
    def current(self) -> bool:
        return self.commit is not None and self.commit == self.desired_commit

    @property
    def tone(self) -> str:
        """ok / warn / bad / idle: the colour of the cell."""
        if self.state in ("failed", "backoff") or self.health == "unhealthy":
            return "bad"
        if self.state in ("building", "deploying", "starting", "pending") or not self.current:
            return "warn"
        if self.state == "running":
            return "ok"
        return "idle"


@dataclass(frozen=True)
class InstanceView:
    id: str
    hostname: str
    status: str  # online | stale | offline | revoked
    state: str  # applied | applying | degraded | pending | unknown
    reasons: tuple[str, ...]
    applied_version: int | None
    agent_version: str | None
    last_seen: datetime | None
    created_at: datetime
    security_mode: str | None
    exposure: str | None
    firewall: str | None
    tunnel: str | None
    cells: dict[str, Cell]

    @property
    def revoked(self) -> bool:
        return self.status == "revoked"


@dataclass(frozen=True)
class StackPicture:
    version: int
    services: tuple[str, ...]
    instances: tuple[InstanceView, ...]

    @property
    def active(self) -> tuple[InstanceView, ...]:
        return tuple(i for i in self.instances if not i.revoked)

    def counts(self) -> dict[str, int]:
        """How many active instances are applied at the current version, degraded, etc."""
        out = {"total": 0, "online": 0, "current": 0, "degraded": 0, "offline": 0}
        for inst in self.active:
            out["total"] += 1
            out["online"] += inst.status == "online"
            out["offline"] += inst.status in ("offline", "stale")
            out["degraded"] += inst.state == "degraded"
            out["current"] += inst.state == "applied" and inst.applied_version == self.version
        return out

    @property
    def summary(self) -> str:
        """One word for the stack: healthy / degraded / deploying / offline / empty."""
        c = self.counts()
        if not c["total"]:
            return "no servers"
        if c["degraded"]:
            return "degraded"
        if c["offline"] == c["total"]:
            return "offline"
        if c["current"] == c["total"]:
            return "healthy"
        return "deploying"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def cell(snap: ServiceSnapshot, desired_commit: str | None) -> Cell:
    return Cell(
        service=snap.name,
        state=snap.state or "unknown",
        health=snap.health or "none",
        restarts=snap.restarts,
        commit=snap.commit,
        desired_commit=desired_commit,
        pid=snap.pid,
        port=snap.port,
        last_exit=snap.last_exit,
        last_error=snap.last_error,
    )


def instance_view(
    row: Instance, desired: dict[str, str], heartbeat_interval_s: float, now: datetime
) -> InstanceView:
    """`desired`: service name → the commit the stack's current version asks for."""
    status = (
        "revoked" if row.revoked_at else instance_status(row.last_seen, now, heartbeat_interval_s)
    )
    extra = row.extra or {}
    reasons = extra.get("reasons") or []
    security = row.security or {}
    cells = {}
    for snap in stored_services(row.services):
        cells[snap.name] = cell(snap, desired.get(snap.name))
    return InstanceView(
        id=row.id,
        hostname=row.hostname,
        status=status,
        state=row.state or ("pending" if row.agent_version is None else "unknown"),
        reasons=tuple(str(r) for r in reasons if r) if isinstance(reasons, list) else (),
        applied_version=row.applied_version,
        agent_version=row.agent_version,
        last_seen=row.last_seen,
        created_at=row.created_at,
        security_mode=_text(security.get("mode")),
        exposure=_text(security.get("exposure")),
        firewall=_text(security.get("backend")),
        tunnel=_text(security.get("tunnel")),
        cells=cells,
    )


def stack_picture(
    document: dict[str, Any], rows: list[Instance], now: datetime, heartbeat_interval_s: float
) -> StackPicture:
    desired = {s["name"]: s["commit"] for s in document["services"]}
    instances = tuple(instance_view(r, desired, heartbeat_interval_s, now) for r in rows)
    names = list(desired)
    for inst in instances:  # services still reported but no longer desired (being removed)
        names += [n for n in inst.cells if n not in names]
    return StackPicture(int(document["version"]), tuple(names), instances)

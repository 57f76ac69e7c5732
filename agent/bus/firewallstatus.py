"""The firewall helper's replies and its status (the ``security`` block of a heartbeat).

Every answer on the helper's bus socket is one `FirewallReply` (JSON); it carries the
helper's `FirewallStatus`, which the reconciler copies into each heartbeat. The requests
are in `agent.bus.firewall`.
"""

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LastApply:
    """The outcome of the most recent apply (or of what later happened to it)."""

    at: float  # unix time
    mode: str
    backend: str | None
    # applied (awaiting confirm) | confirmed | reverted | failed | refused
    result: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "mode": self.mode,
            "backend": self.backend,
            "result": self.result,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LastApply":
        return cls(
            at=float(d["at"]),
            mode=str(d["mode"]),
            backend=d.get("backend"),
            result=str(d["result"]),
            detail=str(d.get("detail", "")),
        )


@dataclass(frozen=True)
class FirewallStatus:
    """The ``security`` block of a heartbeat."""

    mode: str
    exposure: str
    backend: str | None  # None until Berth changed a firewall
    last_apply: LastApply | None = None
    tunnel: str | None = None  # only in tunnel-only: connected|disconnected|not-installed
    pending_confirm_until: float | None = None  # unix time the apply reverts itself
    backend_reason: str = ""  # why this backend (detection order or override)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "exposure": self.exposure,
            "backend": self.backend,
            "last_apply": self.last_apply.to_dict() if self.last_apply else None,
            "tunnel": self.tunnel,
            "pending_confirm_until": self.pending_confirm_until,
            "backend_reason": self.backend_reason,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FirewallStatus":
        last = d.get("last_apply")
        pending = d.get("pending_confirm_until")
        return cls(
            mode=str(d["mode"]),
            exposure=str(d["exposure"]),
            backend=d.get("backend"),
            last_apply=LastApply.from_dict(last) if last else None,
            tunnel=d.get("tunnel"),
            pending_confirm_until=float(pending) if pending is not None else None,
            backend_reason=str(d.get("backend_reason", "")),
        )


@dataclass(frozen=True)
class FirewallReply:
    ok: bool
    command: str
    status: FirewallStatus | None = None
    error: str | None = None  # what is wrong and what to do
    field: str | None = None  # the offending request field, for validation errors
    rules: tuple[str, ...] = ()  # plan: the exact rules (nft text lines or ufw argv lines)
    changes: tuple[str, ...] = ()  # apply/confirm/revert: what was changed

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "ok": self.ok,
                "command": self.command,
                "status": self.status.to_dict() if self.status else None,
                "error": self.error,
                "field": self.field,
                "rules": list(self.rules),
                "changes": list(self.changes),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "FirewallReply":
        d = json.loads(raw)
        status = d.get("status")
        return cls(
            ok=bool(d["ok"]),
            command=str(d["command"]),
            status=FirewallStatus.from_dict(status) if status else None,
            error=d.get("error"),
            field=d.get("field"),
            rules=tuple(d.get("rules", ())),
            changes=tuple(d.get("changes", ())),
        )

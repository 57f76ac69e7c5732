"""The helper's durable state: one JSON file, written atomically, under a file lock.

Everything needed to undo an apply is written *before* the firewall is touched, so a
crash at any point (helper, CLI, machine) still lets the next start revert exactly:

* ``baseline``: the firewall as it was before Berth first restricted it (what mode
  ``open`` and uninstall restore);
* ``pending``: the apply being tried — the snapshot from before it (``previous``), the
  mode/backend/baseline to return to, and the time it reverts itself unless confirmed.
  ``phase`` is ``applying`` until the rules are in place: found at start-up, that means
  the apply was cut short, and it is reverted at once.
* ``undo``: after a confirm, the same record, kept so ``revert`` can still undo the
  last apply by hand.

The lock (``flock`` on ``lock``) serialises the helper, the in-process CLI and the
auto-revert timer, which may all act on the same state directory.
"""

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent.bus.firewallstatus import LastApply
from agent.durablefiles import write_atomic


@dataclass(frozen=True)
class Undo:
    """How to get back to the state before one apply."""

    snapshot: dict[str, Any]  # backend snapshot taken just before the apply
    mode: str  # the mode before it
    backend: str | None
    baseline: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot,
            "mode": self.mode,
            "backend": self.backend,
            "baseline": self.baseline,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Undo":
        return cls(d["snapshot"], d["mode"], d.get("backend"), d.get("baseline"))


@dataclass(frozen=True)
class Pending:
    id: str
    phase: str  # applying | applied
    until: float | None  # unix time of the auto-revert; None: waits for confirm forever
    undo: Undo
    timer_pid: int | None = None  # the in-process CLI's auto-revert timer, if any

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "phase": self.phase,
            "until": self.until,
            "undo": self.undo.to_dict(),
            "timer_pid": self.timer_pid,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Pending":
        return cls(
            d["id"], d["phase"], d.get("until"), Undo.from_dict(d["undo"]), d.get("timer_pid")
        )


@dataclass(frozen=True)
class FirewallState:
    mode: str = "open"
    backend: str | None = None
    backend_reason: str = ""
    baseline: dict[str, Any] | None = None
    pending: Pending | None = None
    undo: Undo | None = None  # the last confirmed apply, for a manual revert
    last_apply: LastApply | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "mode": self.mode,
                "backend": self.backend,
                "backend_reason": self.backend_reason,
                "baseline": self.baseline,
                "pending": self.pending.to_dict() if self.pending else None,
                "undo": self.undo.to_dict() if self.undo else None,
                "last_apply": self.last_apply.to_dict() if self.last_apply else None,
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "FirewallState":
        d = json.loads(raw)
        return cls(
            mode=d.get("mode", "open"),
            backend=d.get("backend"),
            backend_reason=d.get("backend_reason", ""),
            baseline=d.get("baseline"),
            pending=Pending.from_dict(d["pending"]) if d.get("pending") else None,
            undo=Undo.from_dict(d["undo"]) if d.get("undo") else None,
            last_apply=LastApply.from_dict(d["last_apply"]) if d.get("last_apply") else None,
        )

    def with_(self, **changes: Any) -> "FirewallState":
        return replace(self, **changes)


class StateStore:
    """``<dir>/state.json`` (0600: it holds firewall config) and ``<dir>/lock``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / "state.json"

    def load(self) -> FirewallState:
        try:
            return FirewallState.from_json(self.path.read_bytes())
        except FileNotFoundError:
            return FirewallState()

    def save(self, state: FirewallState) -> None:
        write_atomic(self.path, state.to_json(), mode=0o600)

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

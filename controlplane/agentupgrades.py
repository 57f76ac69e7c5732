"""Agent versions on the control plane: the Berth version its wheelhouse serves, whether
each server is behind it, and the per-stack rolling upgrade (`rollout.plan`) with the
signal that goes back in a heartbeat's answer.

The wheelhouse is one directory (`--wheelhouse DIR`, `berth installer wheelhouse DIR`);
its version is read from the Berth wheel's file name, again when the directory changes.
The heartbeat hot path reads the rollout from a per-stack cache refreshed at most every
`REFRESH_S` (one read of the stack's instances), and not at all for stacks without
automatic upgrades once their flag is cached.
"""

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from agent import version as versions
from controlplane.db import Database
from controlplane.errors import NotFound, Unprocessable
from controlplane.models import Instance, Stack, utcnow
from controlplane.rollout import Rollout, Server, plan
from controlplane.status import instance_status

REFRESH_S = 2.0


class Wheelhouse:
    """The served Berth version, re-read when the directory's mtime changes."""

    def __init__(self, where: str | None) -> None:
        self._dir = Path(where) if where else None
        self._seen: tuple[float, str | None] | None = None

    def version(self) -> str | None:
        if self._dir is None:
            return None
        try:
            mtime = self._dir.stat().st_mtime
        except OSError:
            return None
        if self._seen is None or self._seen[0] != mtime:
            names = [p.name for p in self._dir.iterdir() if p.is_file()]
            self._seen = (mtime, versions.served_version(names))
        return self._seen[1]


def server_of(row: Instance, heartbeat_interval_s: float, now: datetime) -> Server:
    up = (row.extra or {}).get("upgrade")
    return Server(
        id=row.id,
        hostname=row.hostname,
        status="revoked"
        if row.revoked_at
        else instance_status(row.last_seen, now, heartbeat_interval_s),
        state=row.state,
        agent_version=row.agent_version,
        upgrade=up if isinstance(up, dict) else None,
    )


async def stack_rollout(
    db: Database,
    stack_id: str,
    served: str | None,
    heartbeat_interval_s: float,
    signal_only: bool = False,
) -> Rollout:
    """The stack's rollout; `signal_only`: skip reading the instances when it is off."""
    async with db.read() as session:
        stack = await session.get(Stack, stack_id)
        if stack is None:
            raise NotFound(f"no stack with id {stack_id!r}; GET /api/v1/stacks lists them")
        if signal_only and not stack.auto_upgrade:
            return plan(False, served, [])
        rows = list(
            await session.scalars(
                select(Instance).where(Instance.stack_id == stack_id).order_by(Instance.created_at)
            )
        )
    now = utcnow()
    servers = [server_of(r, heartbeat_interval_s, now) for r in rows]
    return plan(stack.auto_upgrade, served, servers)


async def set_auto(db: Database, stack_id: str, body: Any) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("auto"), bool):
        raise Unprocessable("must be true or false", field="auto")
    async with db.write() as session:
        stack = await session.get(Stack, stack_id)
        if stack is None:
            raise NotFound(f"no stack with id {stack_id!r}; GET /api/v1/stacks lists them")
        stack.auto_upgrade = body["auto"]


@dataclass
class _Cached:
    at: float
    rollout: Rollout


class Rollouts:
    """Which instance of a stack is told to upgrade now (heartbeat answers), cached."""

    def __init__(self, db: Database, wheelhouse: Wheelhouse, heartbeat_interval_s: float) -> None:
        self._db = db
        self.wheelhouse = wheelhouse
        self._interval_s = heartbeat_interval_s  # judges online/stale/offline
        self._cache: dict[str, _Cached] = {}
        self._lock = asyncio.Lock()

    def forget(self, stack_id: str) -> None:
        self._cache.pop(stack_id, None)

    async def signal(self, stack_id: str, instance_id: str) -> dict[str, str] | None:
        """`{"version": X}` when this instance's turn to upgrade has come, else None."""
        if self.wheelhouse.version() is None:
            return None
        cached = self._cache.get(stack_id)
        if cached is None or time.monotonic() - cached.at > REFRESH_S:
            async with self._lock:  # one refresh at a time, not one per heartbeat
                cached = self._cache.get(stack_id)
                if cached is None or time.monotonic() - cached.at > REFRESH_S:
                    try:
                        got = await stack_rollout(
                            self._db, stack_id, self.wheelhouse.version(), self._interval_s,
                            signal_only=True,
                        )  # fmt: skip
                    except NotFound:
                        return None
                    cached = self._cache[stack_id] = _Cached(time.monotonic(), got)
        r = cached.rollout
        if r.signal == instance_id and r.target is not None:
            return {"version": r.target}
        return None

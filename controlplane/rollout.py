"""A stack's rolling agent upgrade, decided from its servers' latest heartbeats (pure).

The control plane never calls an agent, so it upgrades nobody itself: it tells one server
at a time, in the answer to that server's heartbeat, "upgrade to version X", and the
agent runs `berth agent upgrade` on itself. The plan needs no memory of its own: every
step can be read from the heartbeats.

* Servers go in registration order, revoked ones are skipped.
* The first server that is behind is told to upgrade, provided every server before it is
  healthy (online and `applied`): that is "the previous one's healthy heartbeat with the
  new version". A server that is behind but offline keeps the turn (it upgrades when it
  comes back); nobody else goes meanwhile.
* A server whose last upgrade to the target failed (the agent switched back and said so
  in its heartbeat's `upgrade`) stops the rollout: nobody else is told. Upgrading that
  server by hand, or serving another version, lets it go on.
"""

from dataclasses import dataclass
from typing import Any

from agent import version as versions


@dataclass(frozen=True)
class Server:
    id: str
    hostname: str
    status: str  # online | stale | offline | revoked
    state: str | None  # applied | applying | degraded | ...
    agent_version: str | None
    upgrade: dict[str, Any] | None  # the agent's last upgrade outcome, as it reported it


@dataclass(frozen=True)
class Rollout:
    state: str  # off | idle | rolling | waiting | stopped | done
    target: str | None  # the version being rolled out
    signal: str | None  # the instance id told to upgrade now
    message: str
    upgraded: int = 0
    total: int = 0

    def json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "target_version": self.target,
            "upgrading": self.signal,
            "message": self.message,
            "upgraded": self.upgraded,
            "total": self.total,
        }


def _healthy(s: Server) -> bool:
    """Online, applied, and its own upgrade finished checking (it may still switch back)."""
    checking = (s.upgrade or {}).get("outcome") in ("started", "checking")
    return s.status == "online" and s.state == "applied" and not checking


def _failed_to(s: Server, target: str) -> str | None:
    up = s.upgrade or {}
    if up.get("to") == target and up.get("outcome") == "failed":
        return str(up.get("detail") or "the upgrade failed")
    return None


def plan(enabled: bool, served: str | None, servers: list[Server]) -> Rollout:
    """`servers` in registration order. Who is told to upgrade now, and the story."""
    active = [s for s in servers if s.status != "revoked"]
    total = len(active)
    if not enabled:
        return Rollout("off", served, None, "automatic agent upgrades are off", total=total)
    if served is None:
        return Rollout("idle", None, None, "the control plane serves no Berth wheel", total=total)
    done = sum(versions.is_behind(s.agent_version, served) is False for s in active)
    blocker: Server | None = None  # an upgraded server that is not healthy (yet)
    for s in active:
        behind = versions.is_behind(s.agent_version, served)
        if behind is None:
            continue  # no heartbeat yet (or no version): nothing to compare
        if not behind:
            if blocker is None and not _healthy(s):
                blocker = s
            continue
        failed = _failed_to(s, served)
        if failed is not None:
            return Rollout(
                "stopped", served, None,
                f"stopped: {s.hostname} could not upgrade to {served} ({failed}); "
                "upgrade it by hand (berth agent upgrade) to go on",
                done, total,
            )  # fmt: skip
        if blocker is not None:
            return Rollout(
                "waiting", served, None,
                f"waiting for {blocker.hostname} ({served}) to be healthy: it is "
                f"{blocker.status}, {blocker.state or 'no state yet'}",
                done, total,
            )  # fmt: skip
        where = "" if s.status == "online" else f" (it is {s.status}: it upgrades when back)"
        return Rollout(
            "rolling", served, s.id,
            f"upgrading {s.hostname} to {served} ({done + 1} of {total}){where}",
            done, total,
        )  # fmt: skip
    return Rollout("done", served, None, f"every server runs {served}", done, total)

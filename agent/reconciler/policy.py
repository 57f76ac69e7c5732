"""Pure decisions of the reconciler: environment, restart backoff, config identity, routes,
and the stack's overall state. No I/O here: everything is tested without processes.
"""

import dataclasses
import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.bus.messages import Route, RouteTable, Version
from agent.reconciler.store import ProcessRecord
from agent.schema.cadence import (  # noqa: F401 (re-exported for the reconciler)
    DEFAULT_HEARTBEAT_INTERVAL_S,
    MAX_HEARTBEAT_INTERVAL_S,
    MIN_HEARTBEAT_INTERVAL_S,
)
from agent.schema.document import DesiredService, DesiredState
from agent.schema.hashing import content_sha256

RESTART_BASE_S = 1.0
RESTART_CAP_S = 300.0
RESTART_RESET_AFTER_S = 600.0  # a process that ran this long starts its backoff afresh
RESTART_JITTER = 0.2


def env_name(service: str) -> str:
    return service.upper().replace("-", "_")


def service_urls(desired: DesiredState) -> dict[str, str]:
    """SERVICE_<NAME>_URL for every service of the stack (spec §13)."""
    suffix = desired.stack.dns_suffix
    return {
        f"SERVICE_{env_name(s.name)}_URL": f"http://{s.name}.{suffix}" for s in desired.services
    }


def service_env(
    base: dict[str, str], urls: dict[str, str], svc: DesiredService, port: int
) -> dict[str, str]:
    env = dict(base)
    env.update(urls)
    env.update(svc.spec.environment())  # plain entries and secret values
    env["PORT"] = str(port)
    return env


SHORT_HASH_LEN = 16  # hex digits: file names and log lines stay short


def config_hash(svc: DesiredService, urls: dict[str, str]) -> str:
    """Identity of what would run: a change of any of it means a new deploy."""
    return content_sha256(_config_body(svc, urls))[:SHORT_HASH_LEN]


def build_key(svc: DesiredService) -> str:
    """Builds depend on the commit, the build command and the env, not on the port or path."""
    return content_sha256(_build_body(svc))[:SHORT_HASH_LEN]


def _config_body(svc: DesiredService, urls: dict[str, str]) -> dict[str, Any]:
    return {"spec": svc.spec.to_dict(), "commit": svc.commit, "urls": urls}


def _build_body(svc: DesiredService) -> dict[str, Any]:
    body: dict[str, Any] = {"commit": svc.commit, "build": svc.spec.build, "env": svc.spec.env}
    if svc.spec.secrets:  # a secret's digest, never its value: the key shows in file names
        body["secrets"] = {k: s.digest for k, s in svc.spec.secrets.items()}
    return body


def _pre_canonical_hash(body: dict[str, Any]) -> str:
    """How agents before the one canonical encoding hashed these (json.dumps' default
    separators and ASCII escapes). Kept only to recognise their process records."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:SHORT_HASH_LEN]


def carry_config_hash(rec: ProcessRecord, desired: DesiredState | None) -> ProcessRecord:
    """`rec` with today's config hash when an older agent recorded the same config under
    its pre-canonical hash: an upgraded reconciler then adopts the process instead of
    redeploying it (a reconciler restart must never restart a service). Any other record
    is returned as is."""
    svc = desired.service(rec.service) if desired else None
    if svc is None or desired is None:
        return rec
    urls = service_urls(desired)
    if rec.config_hash != _pre_canonical_hash(_config_body(svc, urls)):
        return rec
    return dataclasses.replace(rec, config_hash=config_hash(svc, urls))


@dataclass(frozen=True)
class Backoff:
    """Exponential restart delays: 1 s doubling to 5 min, with jitter."""

    base_s: float = RESTART_BASE_S
    cap_s: float = RESTART_CAP_S
    jitter: float = RESTART_JITTER

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        raw = min(self.cap_s, self.base_s * (2 ** max(0, failures - 1)))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, min(self.cap_s, raw * (1 + spread)))


# Retries towards the control plane: 1 s doubling to 60 s, spread ±50% so that a fleet
# whose control plane restarted does not come back in one wave at the same instant.
CONTROL_PLANE_RETRY = Backoff(base_s=1.0, cap_s=60.0, jitter=0.5)


def failures_after_exit(previous_failures: int, ran_for_s: float) -> int:
    return 1 if ran_for_s >= RESTART_RESET_AFTER_S else previous_failures + 1


def external_bind(security_mode: str, port: int) -> str:
    """Tunnel-only servers listen on loopback only; the tunnel connects locally."""
    host = "127.0.0.1" if security_mode == "tunnel-only" else "0.0.0.0"
    return f"{host}:{port}"


def route_table(
    version: Version, desired: DesiredState | None, routes: Iterable[Route]
) -> RouteTable:
    if desired is None:
        return RouteTable(version=version, routes=tuple(routes))
    return RouteTable(
        version=version,
        suffix=desired.stack.dns_suffix,
        routes=tuple(sorted(routes, key=lambda r: r.service)),
        external_bind=external_bind(desired.stack.security_mode, desired.stack.proxy_port),
    )


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    converged: bool  # running the desired config
    failed: str | None  # why the desired config could not be applied
    unhealthy: bool


def stack_state(statuses: Iterable[ServiceStatus]) -> tuple[str, list[str]]:
    """`applied`, `applying` or `degraded`, with the reasons for degraded."""
    reasons: list[str] = []
    converging = False
    for s in statuses:
        if s.failed:
            reasons.append(f"{s.name}: {s.failed}")
        elif s.unhealthy:
            reasons.append(f"{s.name}: unhealthy")
        elif not s.converged:
            converging = True
    if reasons:
        return "degraded", reasons
    return ("applying" if converging else "applied"), []


# --- heartbeats ------------------------------------------------------------------------
# The control plane announces its heartbeat interval in every heartbeat answer; until the
# first answer (or from an older control plane) the agent uses the default. The bounds
# are shared with the control plane: agent/schema/cadence.py.
# a burst of state changes (a deploy: building, starting, healthy, applied) becomes at
# most this many heartbeats a second, the last one always carrying the final state
HEARTBEAT_MIN_GAP_S = 0.25


def heartbeat_interval(announced: object) -> float:
    """The interval to use, from the control plane's answer (clamped; default if absent)."""
    if isinstance(announced, bool) or not isinstance(announced, int | float):
        return DEFAULT_HEARTBEAT_INTERVAL_S
    return min(MAX_HEARTBEAT_INTERVAL_S, max(MIN_HEARTBEAT_INTERVAL_S, float(announced)))


def heartbeat_fingerprint(snapshot: dict[str, object]) -> str:
    """What a heartbeat says, reduced to a comparable string: a new one means "send now"."""
    return json.dumps(snapshot, sort_keys=True, default=str)


def heartbeat_wait(now: float, last_sent: float, interval_s: float, changed: bool) -> float:
    """Seconds until the next heartbeat is due: at once (or after the debounce gap) when
    the state changed since the last one sent, else when the interval has run out."""
    if changed:
        return max(0.0, last_sent + HEARTBEAT_MIN_GAP_S - now)
    return max(0.0, last_sent + interval_s - now)


@dataclass
class Retry:
    """Consecutive failures of one kind of call, and how long to wait before the next try."""

    backoff: Backoff = CONTROL_PLANE_RETRY
    failures: int = 0

    def failed(self) -> float:
        """Count a failure; the delay before trying again (doubling, with jitter)."""
        self.failures += 1
        return self.backoff.delay(self.failures)

    def succeeded(self) -> None:
        self.failures = 0

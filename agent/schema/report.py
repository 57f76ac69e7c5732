"""The return path's types: what an agent reports to the control plane.

The desired state flows down typed (`document`); this is the way back up. The reconciler
builds these (`to_json` is the wire format), the control plane parses each body once
(`parse_heartbeat`, `parse_event`, `parse_log_chunk`) and the dashboard reads the types
(`parse_service`). A bad field raises `ValidationError` naming it (e.g.
``services[0].pid``).

The wire format is that of the plain dicts that came before, so agents and control
planes of the previous version interoperate: keys this version does not know are kept
in `extra` (a newer agent's additions survive an older control plane), and each parsed
body keeps the JSON it came from in `wire`, which the control plane stores as received.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.schema.errors import ValidationError
from agent.schema.fields import Fields

LOG_STREAMS = ("run", "build")
MAX_LOG_CHUNK_CHARS = 64 * 1024
MAX_TEXT_CHARS = 65536  # free text an agent reports (an error, an exit description)

_SERVICE_KEYS = ("name", "commit", "desired_commit", "release", "pid", "port", "state",
                 "health", "restarts", "last_exit", "last_error")  # fmt: skip
_HEARTBEAT_KEYS = ("agent_version", "applied_version", "desired_version", "state", "reasons",
                   "services", "security", "upgrade")  # fmt: skip
_EVENT_KEYS = ("id", "type", "service", "message", "at")


@dataclass(frozen=True, slots=True)
class ServiceSnapshot:
    """One service on one server, as its worker sees it."""

    name: str
    commit: str | None = None  # running now
    desired_commit: str | None = None
    release: str | None = None  # the release directory's name
    pid: int | None = None
    port: int | None = None
    state: str | None = None  # the worker's state (`worker.WorkerState`)
    health: str | None = None  # unknown | healthy | unhealthy | none
    restarts: int = 0
    last_exit: str | None = None
    last_error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    wire: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "commit": self.commit,
            "desired_commit": self.desired_commit,
            "release": self.release,
            "pid": self.pid,
            "port": self.port,
            "state": self.state,
            "health": self.health,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_error": self.last_error,
            **self.extra,
        }


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A full snapshot of one server: sent on every change and every heartbeat interval."""

    agent_version: str | None
    applied_version: int | None
    state: str | None  # applied | applying | degraded | pending
    services: tuple[ServiceSnapshot, ...] = ()
    desired_version: int | None = None
    reasons: tuple[str, ...] = ()  # why degraded
    security: Mapping[str, Any] = field(default_factory=dict)  # the firewall helper's status
    upgrade: Mapping[str, Any] | None = None  # the last agent upgrade and how it ended
    extra: Mapping[str, Any] = field(default_factory=dict)
    wire: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "agent_version": self.agent_version,
            "applied_version": self.applied_version,
            "desired_version": self.desired_version,
            "state": self.state,
            "reasons": list(self.reasons),
            "services": [s.to_json() for s in self.services],
            "security": dict(self.security),
            "upgrade": None if self.upgrade is None else dict(self.upgrade),
            **self.extra,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened (a build, a crash, a health change), sent once, by id."""

    id: str
    type: str
    message: str
    at: datetime
    service: str | None = None  # None: the stack's own
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        at = self.at.astimezone(UTC)
        return {
            "id": self.id,
            "type": self.type,
            "service": self.service,
            "message": self.message,
            "at": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
            **self.extra,
        }


@dataclass(frozen=True, slots=True)
class LogChunk:
    """New output of one service's run or build log."""

    service: str
    stream: str  # run | build
    commit: str | None
    data: str

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "stream": self.stream, "commit": self.commit,
                "data": self.data}  # fmt: skip


# --- parsing -----------------------------------------------------------------------------
def _reader(value: Any, where: str) -> Fields:
    """The schema's field reader, tolerating unknown keys (they go to `extra`)."""
    return Fields(value, where, set(value) if isinstance(value, dict) else set())


def _opt_str(f: Fields, key: str, max_len: int, raw: Any = None) -> str | None:
    """The string at `key` (or `raw`, read from there), None if absent."""
    raw = f.value.get(key) if raw is None else raw
    if raw is not None and (not isinstance(raw, str) or len(raw) > max_len):
        raise ValidationError(f.path(key), f"must be a string of at most {max_len} characters")
    return raw


def _opt_int(f: Fields, key: str, what: str) -> int | None:
    raw = f.value.get(key)
    if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int)):
        raise ValidationError(f.path(key), f"must be {what} or null")
    return raw


def _opt_object(f: Fields, key: str) -> dict[str, Any] | None:
    raw = f.value.get(key)
    if raw is not None and not isinstance(raw, dict):
        raise ValidationError(f.path(key), "must be an object")
    return raw


def _extra(value: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k not in known}


# a service snapshot's optional fields: a string of at most N characters, or an integer
# (a table, checked in one pass: heartbeats are the control plane's busiest request)
_SERVICE_FIELDS: dict[str, int | str] = {
    "commit": 64,
    "desired_commit": 64,
    "release": 255,
    "pid": "a process id",
    "port": "a port number",
    "state": 64,
    "health": 64,
    "restarts": "a count",
    "last_exit": MAX_TEXT_CHARS,
    "last_error": MAX_TEXT_CHARS,
}


def parse_service(value: Any, where: str) -> ServiceSnapshot:
    f = _reader(value, where)
    name = f.value.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 63:
        raise ValidationError(f.path("name"), "must be the service name (1-63 characters)")
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, raw in f.value.items():
        rule = _SERVICE_FIELDS.get(key)
        if rule is None:
            if key != "name":
                extra[key] = raw
            continue
        if key == "health" and isinstance(raw, dict):  # {"status": ...}: the status it names
            raw = raw.get("status")
        if raw is None:
            continue
        if isinstance(rule, int):
            if type(raw) is not str or len(raw) > rule:
                raise ValidationError(f.path(key), f"must be a string of at most {rule} characters")
        elif type(raw) is not int:  # (not a bool either)
            raise ValidationError(f.path(key), f"must be {rule} or null")
        fields[key] = raw
    return ServiceSnapshot(name=name, **fields, extra=extra, wire=f.value)


def stored_services(services: Any) -> list[ServiceSnapshot]:
    """Service snapshots read back from storage (each was validated on arrival; one that
    no longer parses, e.g. stored by an older control plane, is left out)."""
    out = []
    for i, raw in enumerate(services if isinstance(services, list) else []):
        try:
            out.append(parse_service(raw, f"services[{i}]"))
        except ValidationError:
            continue
    return out


def parse_heartbeat(value: Any) -> Heartbeat:
    f = _reader(value, "")  # the body's fields are named without a prefix: `services[0].pid`
    services = f.value.get("services", [])
    if not isinstance(services, list) or not all(isinstance(s, dict) for s in services):
        raise ValidationError("services", "must be a list of service objects")
    reasons = f.value.get("reasons") or []
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise ValidationError("reasons", "must be a list of strings")
    return Heartbeat(
        agent_version=_opt_str(f, "agent_version", 64),
        applied_version=_opt_int(f, "applied_version", "an integer version"),
        desired_version=_opt_int(f, "desired_version", "an integer version"),
        state=_opt_str(f, "state", 64),
        reasons=tuple(reasons),
        services=tuple(parse_service(s, f"services[{i}]") for i, s in enumerate(services)),
        security=_opt_object(f, "security") or {},
        upgrade=_opt_object(f, "upgrade"),
        extra=_extra(f.value, _HEARTBEAT_KEYS),
        wire=f.value,
    )


def parse_timestamp(value: Any, where: str) -> datetime:
    """An ISO 8601 time with its timezone (agents send UTC with milliseconds and Z)."""
    if not isinstance(value, str):
        raise ValidationError(where, "must be an ISO 8601 timestamp such as 2024-05-01T12:00:00Z")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationError(
            where, f"{value!r} is not an ISO 8601 timestamp such as 2024-05-01T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise ValidationError(where, "must include a timezone (Z or +00:00)")
    return parsed


def parse_event(value: Any, where: str) -> Event:
    f = _reader(value, where)
    ev_id = f.value.get("id")
    if not isinstance(ev_id, str) or not 1 <= len(ev_id) <= 64:
        raise ValidationError(f.path("id"), "must be a string of 1-64 characters (a UUID)")
    ev_type = f.value.get("type")
    if not isinstance(ev_type, str) or not 1 <= len(ev_type) <= 64:
        raise ValidationError(
            f.path("type"), "must be a string of 1-64 characters (e.g. build, crash, health)"
        )
    message = f.value.get("message", "")
    if not isinstance(message, str):
        raise ValidationError(f.path("message"), "must be a string")
    return Event(
        id=ev_id,
        type=ev_type,
        service=_opt_str(f, "service", 63),
        message=message,
        at=parse_timestamp(f.value.get("at"), f.path("at")),
        extra=_extra(f.value, _EVENT_KEYS),
    )


def parse_log_chunk(value: Any, where: str) -> LogChunk:
    f = _reader(value, where)
    service = f.value.get("service")
    if not isinstance(service, str) or not 1 <= len(service) <= 63:
        raise ValidationError(f.path("service"), "must be the service name (1-63 characters)")
    stream = f.value.get("stream")
    if stream not in LOG_STREAMS:
        raise ValidationError(f.path("stream"), 'must be "run" or "build"')
    commit = f.value.get("commit")
    if commit is not None and (not isinstance(commit, str) or len(commit) > 64):
        raise ValidationError(f.path("commit"), "must be a commit SHA or null")
    data = f.value.get("data")
    if not isinstance(data, str):
        raise ValidationError(f.path("data"), "must be a string (the output, UTF-8)")
    if len(data) > MAX_LOG_CHUNK_CHARS:
        raise ValidationError(
            f.path("data"),
            f"must be at most {MAX_LOG_CHUNK_CHARS} characters; split it into several chunks",
        )
    return LogChunk(service, stream, commit, data)

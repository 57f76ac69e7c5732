"""Messages of the firewall helper's bus socket, and a small synchronous client.

The helper (``agent.firewall``, the only root process) answers a closed set of typed
requests on ``endpoints.firewall`` (ZeroMQ REQ/REP, one JSON object per message):

    {"command": "status"}
    {"command": "plan",    "mode": ..., "options": {...}, "backend": "auto"}
    {"command": "apply",   "mode": ..., "options": {...}, "backend": "auto",
                           "confirm_timeout_s": 60, "control_plane": URL | null,
                           "consent_block_ssh": false, "allow_ssh_lockout": false,
                           "ssh_client": {"ip": ..., "server_port": 22} | null}
    {"command": "confirm"}
    {"command": "revert",  "to": "previous" | "baseline"}

`parse_request` validates every field (type, range, unknown keys) and raises
`RequestError` naming the field, so the helper can answer an error and change nothing.
Every reply is a `FirewallReply` (`agent.bus.firewallstatus`); it carries the helper's
`FirewallStatus`, which the reconciler copies into each heartbeat's ``security`` block.

This module is shared by the reconciler, the CLI and the installer; it never imports
``agent.firewall`` (the helper's code and its root-only dependencies).
"""

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import zmq

from agent.bus.endpoints import BusEndpoints
from agent.bus.firewallstatus import FirewallReply
from agent.schema.errors import ValidationError
from agent.schema.fields import Fields
from agent.schema.modes import SECURITY_MODES

BACKENDS = ("auto", "ufw", "nftables")
REVERT_TARGETS = ("previous", "baseline")
EXPOSURE = {"open": "unrestricted", "proxy-only": "daemon-port", "tunnel-only": "none"}
TUNNEL_STATES = ("connected", "disconnected", "not-installed")

DEFAULT_SSH_PORT = 22
DEFAULT_CONFIRM_TIMEOUT_S = 60.0
MAX_CONFIRM_TIMEOUT_S = 3600.0
MAX_SSH_CIDRS = 64
MAX_REQUEST_BYTES = 64 * 1024
DEFAULT_REQUEST_TIMEOUT_S = 30.0  # an apply runs two control-plane checks and the backend


class RequestError(ValidationError):
    """A request that the helper refuses before doing anything; names the bad field."""

    @property
    def message(self) -> str:
        return self.detail


class FirewallUnavailable(RuntimeError):
    """No helper answered on the bus socket within the timeout."""


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class FirewallOptions:
    """What a restrictive mode lets in (the renderers' input)."""

    proxy_port: int | None = None  # required by proxy-only
    ssh_port: int = DEFAULT_SSH_PORT
    ssh_cidrs: tuple[str, ...] = ()  # normalised networks; none = no SSH in proxy-only

    def to_dict(self) -> dict[str, Any]:
        return {
            "proxy_port": self.proxy_port,
            "ssh_port": self.ssh_port,
            "ssh_cidrs": list(self.ssh_cidrs),
        }


@dataclass(frozen=True)
class SshClient:
    """Where the operator's SSH session comes from (parsed from ``SSH_CONNECTION``)."""

    ip: str
    server_port: int

    @classmethod
    def from_env(cls, value: str | None) -> "SshClient | None":
        """``SSH_CONNECTION`` is "client_ip client_port server_ip server_port"."""
        parts = (value or "").split()
        if len(parts) != 4 or not parts[3].isdigit():
            return None
        try:
            ip = str(ipaddress.ip_address(parts[0]))
        except ValueError:
            return None
        return cls(ip=ip, server_port=int(parts[3]))


@dataclass(frozen=True)
class StatusRequest:
    command: Literal["status"] = "status"

    def to_dict(self) -> dict[str, Any]:
        return {"command": "status"}


@dataclass(frozen=True)
class PlanRequest:
    mode: str
    options: FirewallOptions = field(default_factory=FirewallOptions)
    backend: str = "auto"
    command: Literal["plan"] = "plan"

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "plan",
            "mode": self.mode,
            "options": self.options.to_dict(),
            "backend": self.backend,
        }


@dataclass(frozen=True)
class ApplyRequest:
    mode: str
    options: FirewallOptions = field(default_factory=FirewallOptions)
    backend: str = "auto"
    confirm_timeout_s: float = DEFAULT_CONFIRM_TIMEOUT_S  # 0: no auto-revert
    control_plane: str | None = None  # checked before and after applying
    consent_block_ssh: bool = False
    allow_ssh_lockout: bool = False
    ssh_client: SshClient | None = None
    command: Literal["apply"] = "apply"

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "apply",
            "mode": self.mode,
            "options": self.options.to_dict(),
            "backend": self.backend,
            "confirm_timeout_s": self.confirm_timeout_s,
            "control_plane": self.control_plane,
            "consent_block_ssh": self.consent_block_ssh,
            "allow_ssh_lockout": self.allow_ssh_lockout,
            "ssh_client": (
                {"ip": self.ssh_client.ip, "server_port": self.ssh_client.server_port}
                if self.ssh_client
                else None
            ),
        }


@dataclass(frozen=True)
class ConfirmRequest:
    command: Literal["confirm"] = "confirm"

    def to_dict(self) -> dict[str, Any]:
        return {"command": "confirm"}


@dataclass(frozen=True)
class RevertRequest:
    to: str = "previous"  # previous: undo the last apply; baseline: as before Berth
    command: Literal["revert"] = "revert"

    def to_dict(self) -> dict[str, Any]:
        return {"command": "revert", "to": self.to}


Request = StatusRequest | PlanRequest | ApplyRequest | ConfirmRequest | RevertRequest


def encode_request(req: Request) -> bytes:
    return json.dumps(req.to_dict(), separators=(",", ":")).encode()


def _parse_cidrs(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RequestError(name, "must be a list of CIDRs such as 203.0.113.0/24")
    if len(value) > MAX_SSH_CIDRS:
        raise RequestError(name, f"at most {MAX_SSH_CIDRS} entries")
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise RequestError(f"{name}[{i}]", f"must be a CIDR string, got {item!r}")
        try:
            net = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise RequestError(
                f"{name}[{i}]", f"{item!r} is not an IP network (e.g. 203.0.113.7/32)"
            ) from None
        if str(net) not in out:
            out.append(str(net))
    return tuple(out)


def parse_options(obj: object, mode: str) -> FirewallOptions:
    f = Fields(
        obj if obj is not None else {},
        "options",
        {"proxy_port", "ssh_port", "ssh_cidrs"},
        RequestError,
    )
    proxy_port = f.port("proxy_port", None)
    if mode == "proxy-only" and proxy_port is None:
        raise RequestError("options.proxy_port", "required in proxy-only mode (e.g. 8080)")
    ssh_port = f.port("ssh_port", DEFAULT_SSH_PORT)
    assert ssh_port is not None
    return FirewallOptions(
        proxy_port=proxy_port,
        ssh_port=ssh_port,
        ssh_cidrs=_parse_cidrs(f.value.get("ssh_cidrs"), "options.ssh_cidrs"),
    )


def _parse_ssh_client(obj: object) -> SshClient | None:
    if obj is None:
        return None
    f = Fields(obj, "ssh_client", {"ip", "server_port"}, RequestError)
    ip = f.value.get("ip")
    try:
        ip = str(ipaddress.ip_address(ip if isinstance(ip, str) else ""))
    except ValueError:
        raise RequestError("ssh_client.ip", f"must be an IP address, got {ip!r}") from None
    port = f.port("server_port", DEFAULT_SSH_PORT)
    assert port is not None
    return SshClient(ip=ip, server_port=port)


def _parse_url(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise RequestError("control_plane", f"must be an http(s):// URL, got {value!r}")
    if len(value) > 2048 or any(c.isspace() for c in value):
        raise RequestError("control_plane", "must be a URL without spaces, at most 2048 chars")
    return value


def _parse_timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError("confirm_timeout_s", f"must be a number of seconds, got {value!r}")
    if not 0 <= value <= MAX_CONFIRM_TIMEOUT_S:
        raise RequestError(
            "confirm_timeout_s", f"must be 0 (no auto-revert) to {MAX_CONFIRM_TIMEOUT_S:g} s"
        )
    return float(value)


_COMMAND_FIELDS = {
    "status": {"command"},
    "plan": {"command", "mode", "options", "backend"},
    "apply": {
        "command",
        "mode",
        "options",
        "backend",
        "confirm_timeout_s",
        "control_plane",
        "consent_block_ssh",
        "allow_ssh_lockout",
        "ssh_client",
    },
    "confirm": {"command"},
    "revert": {"command", "to"},
}


def parse_request(raw: bytes) -> Request:
    """Validate one request message field by field; raise `RequestError` on any fault."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestError("request", f"larger than {MAX_REQUEST_BYTES} bytes")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RequestError("request", "must be one JSON object (UTF-8)") from None
    if not isinstance(obj, dict):
        raise RequestError("request", "must be a JSON object")
    command = obj.get("command")
    if not isinstance(command, str) or command not in _COMMAND_FIELDS:
        raise RequestError(
            "command", f"must be one of {', '.join(_COMMAND_FIELDS)}, got {command!r}"
        )
    f = Fields(obj, "", _COMMAND_FIELDS[command], RequestError)
    if command == "status":
        return StatusRequest()
    if command == "confirm":
        return ConfirmRequest()
    if command == "revert":
        return RevertRequest(to=f.choice("to", REVERT_TARGETS, "previous"))
    mode = f.choice("mode", SECURITY_MODES)
    options = parse_options(obj.get("options"), mode)
    backend = f.choice("backend", BACKENDS, "auto")
    if command == "plan":
        return PlanRequest(mode=mode, options=options, backend=backend)
    return ApplyRequest(
        mode=mode,
        options=options,
        backend=backend,
        confirm_timeout_s=_parse_timeout(obj.get("confirm_timeout_s", DEFAULT_CONFIRM_TIMEOUT_S)),
        control_plane=_parse_url(obj.get("control_plane")),
        consent_block_ssh=f.boolean("consent_block_ssh"),
        allow_ssh_lockout=f.boolean("allow_ssh_lockout"),
        ssh_client=_parse_ssh_client(obj.get("ssh_client")),
    )


# ----------------------------------------------------------------------------- client


class FirewallClient:
    """Synchronous request/reply to the helper; one REQ socket per request.

    A fresh socket per request means a timed-out request never leaves the socket in
    REQ's "awaiting reply" state for the next caller.
    """

    def __init__(self, endpoints: BusEndpoints, ctx: zmq.Context | None = None) -> None:
        self._endpoints = endpoints
        self._ctx = ctx or zmq.Context.instance()

    def request(self, cmd: Request, timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S) -> FirewallReply:
        return FirewallReply.from_json(self.request_raw(encode_request(cmd), timeout_s))

    def request_raw(self, payload: bytes, timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S) -> bytes:
        """Send raw bytes (tests use this to send malformed requests)."""
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self._endpoints.firewall)
            sock.send(payload)
            if not sock.poll(int(timeout_s * 1000)):
                raise FirewallUnavailable(
                    f"no answer from the firewall helper at {self._endpoints.firewall} "
                    f"within {timeout_s:g} s (is `berth agent firewall` running?)"
                )
            return bytes(sock.recv())
        finally:
            sock.close()

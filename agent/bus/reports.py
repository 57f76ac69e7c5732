"""What the proxies tell the reconciler: who they are, what they applied, what is open.

The reverse direction of the route table (see docs/reconciler.md, "Cutover by
acknowledgement"). Every proxy (external and internal) PUSHes a `ProxyReport` to the
reconciler's PULL socket at ``endpoints.reports``:

* when it starts (its announcement) and right after it applies a route-table version
  (its acknowledgement of that version);
* while requests are open, whenever the in-flight counts change (checked every
  `BUSY_REPORT_S`), so the reconciler sees a replaced release drain;
* every `HEARTBEAT_S` otherwise, so the reconciler knows it is alive;
* once more with ``gone`` when it stops, so it is forgotten at once.

The socket is 0660 group ``berth`` like the rest of the bus: the services' user cannot
forge an acknowledgement. Sending never blocks a proxy: with no reconciler listening the
report is dropped (the next one carries the same facts). Other per-proxy figures (e.g.
metrics) can travel beside these as their own message type on the same socket.
"""

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from agent.bus.endpoints import BusEndpoints
from agent.bus.messages import Version
from agent.bus.publisher import share_socket

log = logging.getLogger(__name__)

REPORT_KIND = "proxy-report"
HEARTBEAT_S = 1.0
BUSY_REPORT_S = 0.05
MAX_REPORT_BYTES = 64 * 1024
MAX_PORTS = 4096


@dataclass(frozen=True)
class ProxyReport:
    proxy: str  # "<external|internal>-<pid>": unique among the live proxies
    version: Version | None  # the route table it serves; None: none yet
    in_flight: dict[int, int] = field(default_factory=dict)  # backend port -> open requests
    gone: bool = False  # it is stopping: forget it now

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "kind": REPORT_KIND,
            "proxy": self.proxy,
            "version": list(self.version) if self.version else None,
            "in_flight": {str(p): n for p, n in self.in_flight.items()},
        }
        if self.gone:
            body["gone"] = True
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "ProxyReport":
        """Parse one report; ValueError on anything malformed (the caller drops it)."""
        if len(raw) > MAX_REPORT_BYTES:
            raise ValueError("report too large")
        d = json.loads(raw)
        if not isinstance(d, dict) or d.get("kind") != REPORT_KIND:
            raise ValueError("not a proxy report")
        proxy, version, in_flight = d.get("proxy"), d.get("version"), d.get("in_flight")
        if not isinstance(proxy, str) or not 0 < len(proxy) <= 64:
            raise ValueError("proxy: must be a short string")
        if version is not None:
            if not (
                isinstance(version, list)
                and len(version) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in version)
            ):
                raise ValueError("version: must be [epoch, seq]")
            version = (version[0], version[1])
        if not isinstance(in_flight, dict) or len(in_flight) > MAX_PORTS:
            raise ValueError("in_flight: must be an object of port -> count")
        counts: dict[int, int] = {}
        for port, n in in_flight.items():
            if not port.isdigit() or not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError("in_flight: must map ports to counts")
            counts[int(port)] = n
        return cls(proxy=proxy, version=version, in_flight=counts, gone=d.get("gone") is True)


class ReportSender:
    """The proxy's side: a non-blocking PUSH socket (reconnects by itself)."""

    def __init__(self, endpoints: BusEndpoints, ctx: zmq.Context[Any] | None = None) -> None:
        self._sock = (ctx or zmq.Context.instance()).socket(zmq.PUSH)
        self._sock.setsockopt(zmq.LINGER, 200)  # let the "gone" report leave on close
        self._sock.setsockopt(zmq.SNDHWM, 16)
        self._sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for a peer that is not there
        self._sock.connect(endpoints.reports)

    def send(self, report: ProxyReport) -> bool:
        try:
            self._sock.send(report.to_json(), zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False  # no reconciler listening (or it is slow): the next report tells
        except zmq.ZMQError as exc:
            log.warning("cannot send proxy report: %s", exc)
            return False

    def close(self) -> None:
        self._sock.close()


class ReportReceiver:
    """The reconciler's side: a PULL socket born 0600, then shared with group berth."""

    def __init__(self, endpoints: BusEndpoints, ctx: "zmq.asyncio.Context | None" = None) -> None:
        self._endpoints = endpoints
        self._ctx = ctx or zmq.asyncio.Context.instance()

    def start(self) -> None:
        self._endpoints.run_dir.mkdir(parents=True, exist_ok=True)
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPORT_BYTES)
        old = os.umask(0o177)
        try:
            self._sock.bind(self._endpoints.reports)
        finally:
            os.umask(old)
        share_socket(self._endpoints.reports)

    async def receive(self) -> ProxyReport | None:
        """The next report; None for a malformed one (logged)."""
        raw = await self._sock.recv()
        try:
            return ProxyReport.from_json(raw)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring malformed proxy report: %s", exc)
            return None

    def close(self) -> None:
        self._sock.close()

"""Typed bus messages and their JSON form."""

import json
from dataclasses import dataclass, field
from typing import Any

ROUTES_TOPIC = b"routes"

Version = tuple[int, int]  # (publisher epoch, sequence): compare as a tuple


@dataclass(frozen=True)
class Route:
    """Where one service can be reached right now."""

    service: str
    port: int | None  # None: no backend yet (answer 503)
    path: str | None = None  # external path prefix; None: internal only
    strip_prefix: bool = False
    paused: bool = False  # hold new requests (fixed-port redeploy) until unpaused

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "port": self.port,
            "path": self.path,
            "strip_prefix": self.strip_prefix,
            "paused": self.paused,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Route":
        port = d.get("port")
        return cls(
            service=str(d["service"]),
            port=int(port) if port is not None else None,
            path=d.get("path"),
            strip_prefix=bool(d.get("strip_prefix", False)),
            paused=bool(d.get("paused", False)),
        )


@dataclass(frozen=True)
class RouteTable:
    """Every service of the stack, for the external proxy, internal proxy and DNS."""

    version: Version = (0, 0)
    suffix: str = "svc.internal"
    routes: tuple[Route, ...] = field(default_factory=tuple)
    # Where the external proxy listens, "HOST:PORT", from the stack's proxy port and
    # security mode (127.0.0.1 in tunnel-only). None until the first desired state.
    external_bind: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "version": list(self.version),
                "suffix": self.suffix,
                "routes": [r.to_dict() for r in self.routes],
                "external_bind": self.external_bind,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "RouteTable":
        d = json.loads(raw)
        epoch, seq = d["version"]
        return cls(
            version=(int(epoch), int(seq)),
            suffix=str(d.get("suffix", "svc.internal")),
            routes=tuple(Route.from_dict(r) for r in d.get("routes", [])),
            external_bind=d.get("external_bind"),
        )

    def same_routes(self, other: "RouteTable") -> bool:
        return (
            self.suffix == other.suffix
            and self.routes == other.routes
            and self.external_bind == other.external_bind
        )

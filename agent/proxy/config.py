"""Proxy tunables: timeouts and limits, one frozen dataclass validated once.

Defaults follow nginx where it has an equivalent (header timeout, keep-alive, upstream
read timeout). Tests and the benchmark build their own `ProxyConfig`; production uses the
defaults.
"""

from dataclasses import dataclass, fields

DEFAULT_HEAD_TIMEOUT_S = 10.0  # from accept, or from a request's first byte, to its whole head
DEFAULT_IDLE_TIMEOUT_S = 75.0  # keep-alive client with no request in progress
DEFAULT_BODY_TIMEOUT_S = 60.0  # between two reads of a request body
DEFAULT_SEND_TIMEOUT_S = 60.0  # client not reading the response (write buffer full)
DEFAULT_CONNECT_TIMEOUT_S = 5.0  # TCP connect to a backend
DEFAULT_UPSTREAM_TIMEOUT_S = 60.0  # backend silent while a request is in flight
DEFAULT_POOL_IDLE_TIMEOUT_S = 30.0  # idle pooled backend connection
DEFAULT_PAUSE_TIMEOUT_S = 60.0  # deploy timeout: hold requests of a paused service
DEFAULT_DRAIN_TIMEOUT_S = 20.0  # SIGTERM: let in-flight requests finish for this long
DEFAULT_MAX_HEAD_BYTES = 32 * 1024  # request line + headers; larger -> 431
DEFAULT_POOL_MAX_IDLE = 256  # idle backend connections kept per port
DEFAULT_SWEEP_INTERVAL_S = 0.5  # timeout resolution (one sweep instead of a timer each)
DEFAULT_MAX_CONNS_PER_ADDRESS = 256  # open client connections from one address; more: closed


@dataclass(frozen=True)
class ProxyConfig:
    head_timeout: float = DEFAULT_HEAD_TIMEOUT_S
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S
    send_timeout: float = DEFAULT_SEND_TIMEOUT_S
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT_S
    pool_idle_timeout: float = DEFAULT_POOL_IDLE_TIMEOUT_S
    pause_timeout: float = DEFAULT_PAUSE_TIMEOUT_S
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES
    pool_max_idle: int = DEFAULT_POOL_MAX_IDLE
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL_S
    # Several proxy processes may share the listening port (SO_REUSEPORT): the kernel
    # spreads connections over them. One process is the default and the benchmark's
    # comparison point.
    reuse_port: bool = False
    # A client address holding this many open connections gets its next ones closed at
    # accept (a browser opens about six). Loopback peers are exempt by default: on this
    # server they are cloudflared (every tunnelled visitor arrives from 127.0.0.1) and
    # local services; the descriptor limit bounds them.
    max_conns_per_address: int = DEFAULT_MAX_CONNS_PER_ADDRESS
    cap_loopback: bool = False
    # Count requests, bytes, errors and latency per route (agent/metrics/routes.py).
    metrics: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("reuse_port", "cap_loopback", "metrics"):
                if not isinstance(value, bool):
                    raise ValueError(f"ProxyConfig.{f.name} must be true or false, got {value!r}")
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ProxyConfig.{f.name} must be a positive number, got {value!r}")
        if self.max_head_bytes < 1024:
            raise ValueError(
                f"ProxyConfig.max_head_bytes must be at least 1024, got {self.max_head_bytes}"
            )

    @classmethod
    def from_mapping(cls, values: dict[str, float]) -> "ProxyConfig":
        """Build from a mapping (tests, benchmark); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ProxyConfig field(s) {unknown}; valid: {sorted(known)}")
        return cls(**values)  # type: ignore[arg-type]

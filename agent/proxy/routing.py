"""Choosing a backend for a request: pure functions over a `RouteTable`.

External proxy: longest path prefix at a `/` boundary. A prefix `/api` matches `/api`,
`/api/`, `/api/x` and `/api?q`, never `/apix`; `/` matches every path. A route's
`strip_prefix` removes the matched prefix before forwarding (`/api/x` -> `/x`,
`/api` -> `/`); by default the path is forwarded unchanged.

Internal proxy: `Host: <service>.<suffix>` (any case, optional port, optional trailing
dot) selects that service.

Paths: a request-target whose path has a dot-segment (`.` or `..`, raw or written with
`%2e`/`%2E`) is refused with 400 (`BadPath`) before any route is chosen, so the prefix
that chose the route is always a prefix of what the backend receives. `route_path` is
the one decision every request of the external proxy goes through (parsed or replayed
from the request memo).

Both answer a `Target`; a target whose `port` is None has no backend yet (503), and a
paused target makes the caller hold the request until the reconciler unpauses it.
Matching runs on every request, so the tables are compiled once per route table into
plain dicts and a list sorted longest first.
"""

from dataclasses import dataclass, field

from httptools import HttpParserError, parse_url

from agent.bus.messages import Route, RouteTable
from agent.metrics.routes import Meter, RouteMetrics


@dataclass(frozen=True, slots=True)
class Target:
    service: str
    port: int | None  # None: no backend yet
    paused: bool = False
    # The route's counters: the server's meter of this service (agent/metrics/routes.py),
    # the same one for every table's target of it, so counting takes one attribute.
    meter: Meter = field(default_factory=Meter, compare=False, repr=False)


def make_target(route: Route, meters: RouteMetrics | None) -> Target:
    meter = meters.meter(route.service) if meters is not None else Meter()
    return Target(route.service, route.port, route.paused, meter)


class BadPath(ValueError):
    """A request-target the proxy refuses to route (dot-segments)."""


def has_dot_segment(target: bytes) -> bool:
    """Whether the path of an origin-form target has a `.` or `..` segment (RFC 3986
    3.3), raw or percent-encoded; the query is not looked at."""
    if b"/." not in target and b"/%" not in target:
        return False  # every segment starts after a "/": no segment can start with a dot
    path = target.split(b"?", 1)[0]
    if b"/." not in path and b"/%" not in path:
        return False  # (only the query has them)
    path = path.replace(b"%2e", b".").replace(b"%2E", b".")
    return any(seg == b"." or seg == b".." for seg in path.split(b"/"))


def normalize_prefix(path: str) -> bytes:
    """`/api/` -> `/api`; `/` stays `/`. Raises ValueError naming the bad prefix."""
    if not path.startswith("/") or any(c in path for c in "?# \t\r\n"):
        raise ValueError(f"route path must start with '/' and hold no query/space: {path!r}")
    trimmed = path.rstrip("/")
    return (trimmed or "/").encode()


class PathRouter:
    """Longest-prefix path routing for the external proxy."""

    __slots__ = ("_entries", "_root", "by_service")

    def __init__(
        self, routes: tuple[Route, ...] | list[Route], meters: RouteMetrics | None = None
    ) -> None:
        entries: list[tuple[bytes, int, Target]] = []
        root: tuple[Target, bool] | None = None
        self.by_service: dict[str, Target] = {}
        for route in routes:
            target = make_target(route, meters)
            self.by_service[route.service] = target
            if route.path is None:
                continue
            prefix = normalize_prefix(route.path)
            if prefix == b"/":
                root = (target, route.strip_prefix)
                continue
            entries.append((prefix, route.strip_prefix, target))
        entries.sort(key=lambda e: len(e[0]), reverse=True)
        self._entries = entries
        self._root = root

    def match(self, target: bytes) -> tuple[Target, bytes] | None:
        """Route a request-target (origin form, `/path?query`); None when no route.

        Returns the target and the request-target to send upstream.
        """
        for prefix, strip, tgt in self._entries:
            if target.startswith(prefix):
                rest = target[len(prefix) :]
                if rest and rest[0] not in b"/?":  # `/apix` is not under `/api`
                    continue
                if strip:
                    if not rest:
                        return tgt, b"/"
                    return tgt, rest if rest[0] == 47 else b"/" + rest  # 47 == "/"
                return tgt, target
        if self._root is not None:
            return self._root[0], target
        return None


def route_path(router: PathRouter, target: bytes) -> tuple[Target, bytes] | None:
    """Route an origin-form request-target: (target, request-target to forward), None
    when no route matches. Raises BadPath for targets with dot-segments."""
    if (b"/." in target or b"/%" in target) and has_dot_segment(target):  # (quick test first)
        raise BadPath(f"dot-segment in path {target.decode('latin-1')!r}")
    return router.match(target)


def host_service(host: bytes, suffix: bytes) -> bytes | None:
    """`Web.svc.internal:80` -> `web` for suffix `svc.internal`; None if not under it."""
    h = host.lower()
    if h.startswith(b"["):  # an IPv6 literal is never a service name
        return None
    colon = h.rfind(b":")
    if colon != -1:
        h = h[:colon]
    if h.endswith(b"."):
        h = h[:-1]
    dot_suffix = b"." + suffix
    if not h.endswith(dot_suffix):
        return None
    name = h[: -len(dot_suffix)]
    if not name or b"." in name:
        return None
    return name


class HostRouter:
    """Host-header routing for the internal proxy."""

    __slots__ = ("_by_host", "_suffix", "by_service")

    def __init__(
        self,
        routes: tuple[Route, ...] | list[Route],
        suffix: str,
        meters: RouteMetrics | None = None,
    ) -> None:
        self._suffix = suffix.lower().strip(".").encode()
        self.by_service = {r.service: make_target(r, meters) for r in routes}
        self._by_host: dict[bytes, Target] = {}
        for name, target in self.by_service.items():
            self._by_host[f"{name}.{suffix}".lower().encode()] = target

    def match(self, host: bytes) -> Target | None:
        exact = self._by_host.get(host)  # the common case: exactly `name.suffix`
        if exact is not None:
            return exact
        name = host_service(host, self._suffix)
        if name is None:
            return None
        return self.by_service.get(name.decode("ascii", "replace"))


def compile_external(table: RouteTable, meters: RouteMetrics | None = None) -> PathRouter:
    return PathRouter(table.routes, meters)


def compile_internal(table: RouteTable, meters: RouteMetrics | None = None) -> HostRouter:
    return HostRouter(table.routes, table.suffix, meters)


def origin_form(url: bytes) -> tuple[bytes, bytes | None]:
    """`http://h:1/p?q` -> (`/p?q`, `h:1`); `*` stays `*` (OPTIONS *)."""
    if url == b"*":
        return url, None
    try:
        parsed = parse_url(url)
    except HttpParserError:
        return url, None
    path = parsed.path or b"/"
    if parsed.query:
        path += b"?" + parsed.query
    host = parsed.host
    if host and parsed.port:
        host += b":%d" % parsed.port
    return path, host or None

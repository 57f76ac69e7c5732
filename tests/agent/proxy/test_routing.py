"""Routing decisions, without sockets."""

import pytest

from agent.bus.messages import Route
from agent.proxy.routing import HostRouter, PathRouter, Target, host_service, normalize_prefix


def router() -> PathRouter:
    return PathRouter(
        [
            Route("web", 5000, "/"),
            Route("api", 5001, "/api"),
            Route("v2", 5002, "/api/v2/", strip_prefix=True),
            Route("docs", 5003, "/docs", strip_prefix=True),
            Route("worker", 5004, None),  # internal only
        ]
    )


@pytest.mark.parametrize(
    ("path", "service", "forwarded"),
    [
        (b"/", "web", b"/"),
        (b"/index.html?x=1", "web", b"/index.html?x=1"),
        (b"/api", "api", b"/api"),
        (b"/api/", "api", b"/api/"),
        (b"/api/users?id=3", "api", b"/api/users?id=3"),
        (b"/api?q", "api", b"/api?q"),
        (b"/apix", "web", b"/apix"),  # not at a / boundary: falls through to /
        (b"/api/v2", "v2", b"/"),
        (b"/api/v2/items", "v2", b"/items"),
        (b"/api/v2?page=2", "v2", b"/?page=2"),
        (b"/api/v2x", "api", b"/api/v2x"),
        (b"/docs/a/b", "docs", b"/a/b"),
        (b"/docs", "docs", b"/"),
    ],
)
def test_longest_prefix_at_slash_boundary(path: bytes, service: str, forwarded: bytes) -> None:
    match = router().match(path)
    assert match is not None
    target, upstream_path = match
    assert target.service == service
    assert upstream_path == forwarded


def test_no_root_route_means_no_match() -> None:
    r = PathRouter([Route("api", 5001, "/api")])
    assert r.match(b"/") is None
    assert r.match(b"/apix") is None
    assert r.match(b"/other/api") is None
    assert r.match(b"/api/x") == (Target("api", 5001), b"/api/x")


def test_internal_only_routes_are_not_exposed_but_known_by_name() -> None:
    r = router()
    assert r.by_service["worker"] == Target("worker", 5004)
    assert all(r.match(p)[0].service != "worker" for p in (b"/worker", b"/"))  # type: ignore[index]


def test_paused_and_portless_targets_are_reported() -> None:
    r = PathRouter([Route("a", None, "/a"), Route("b", 7000, "/b", paused=True)])
    assert r.match(b"/a/x") == (Target("a", None), b"/a/x")
    assert r.match(b"/b") == (Target("b", 7000, paused=True), b"/b")


@pytest.mark.parametrize("bad", ["api", "", "/a?b", "/a b", "/a#x"])
def test_bad_prefix_is_refused_with_its_value(bad: str) -> None:
    with pytest.raises(ValueError, match="route path"):
        normalize_prefix(bad)
    with pytest.raises(ValueError):
        PathRouter([Route("x", 1, bad)])


def test_prefix_normalisation() -> None:
    assert normalize_prefix("/") == b"/"
    assert normalize_prefix("//") == b"/"
    assert normalize_prefix("/api/") == b"/api"


@pytest.mark.parametrize(
    ("host", "service"),
    [
        (b"web.svc.internal", b"web"),
        (b"WEB.Svc.Internal", b"web"),
        (b"web.svc.internal:80", b"web"),
        (b"web.svc.internal.:8080", b"web"),
        (b"svc.internal", None),
        (b".svc.internal", None),
        (b"a.b.svc.internal", None),
        (b"web.svc.internal.evil.com", None),
        (b"websvc.internal", None),
        (b"[::1]:80", None),
        (b"127.0.0.1", None),
    ],
)
def test_host_service(host: bytes, service: bytes | None) -> None:
    assert host_service(host, b"svc.internal") == service


def test_host_router() -> None:
    r = HostRouter([Route("web", 5000, "/"), Route("db-admin", 5001)], "svc.internal")
    assert r.match(b"web.svc.internal") == Target("web", 5000)
    assert r.match(b"DB-Admin.svc.internal:80") == Target("db-admin", 5001)
    assert r.match(b"nope.svc.internal") is None
    assert r.match(b"localhost") is None
    custom = HostRouter([Route("web", 5000)], "apps.local")
    assert custom.match(b"web.apps.local") == Target("web", 5000)
    assert custom.match(b"web.svc.internal") is None

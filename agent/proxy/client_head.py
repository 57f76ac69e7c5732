"""Routing and rewriting one parsed request head (part of `ClientConnection.on_headers_complete`).

The external proxy routes by path (`routing.route_path`, which may strip a prefix), the
internal one by the Host header (or the authority of an absolute-form target); either
way the head is rewritten for the backend (`headers.rewrite_request`). A request that
routes nowhere keeps going with `ex.failure` set, so that it is answered in its turn.
"""

from typing import TYPE_CHECKING

from agent.proxy.errors import BadRequest, NoRoute, UnsupportedFraming
from agent.proxy.exchange import Exchange
from agent.proxy.headers import HeadError, UnsupportedCoding, rewrite_request
from agent.proxy.routing import BadPath, Target, route_path

if TYPE_CHECKING:
    from agent.proxy.client import ClientConnection


def route_and_rewrite(
    conn: "ClientConnection",
    ex: Exchange,
    method: bytes,
    url: bytes,
    headers: list[tuple[bytes, bytes]],
    upgrade: bool,
    host_from_url: bytes | None,
) -> tuple[bytes, bytes | None, int, Target | None]:
    """(upstream head, Host value, body framing, target or None); sets `ex.failure` for
    a request without a route; raises a ProxyFailure for one that must be refused."""
    server = conn.server
    target = None
    try:
        if server.external:
            match = route_path(server.paths, url)
            if match is None:
                ex.failure = NoRoute(f"no route for path {url.decode('latin-1')}")
            else:
                target, url = match
            head, host, body = rewrite_request(
                method, url, headers, conn.client_ip, conn.trusted, upgrade
            )
        else:
            head, host, body = rewrite_request(
                method, url, headers, conn.client_ip, conn.trusted, upgrade
            )
            route_host = host_from_url or host
            if route_host is not None:
                target = server.hosts.match(route_host)
            if target is None:
                shown = (route_host or b"(none)").decode("latin-1")
                ex.failure = NoRoute(f"no service for host {shown}")
    except UnsupportedCoding as err:
        raise UnsupportedFraming(f"unsupported {err}") from err
    except (HeadError, BadPath) as err:
        raise BadRequest(str(err)) from err
    return head, host, body, target

"""Control-plane reachability and tunnel state against real loopback servers.

The /ready server here is a STAND-IN for cloudflared's metrics endpoint.
"""

import http.server
import threading
from collections.abc import Iterator

import pytest

from agent.firewall.reachability import check_reachable
from agent.firewall.tunnel import cloudflared_present, probe_ready, tunnel_state
from tests.support.ports import free_port


@pytest.fixture
def http_server() -> Iterator[tuple[int, list[int]]]:
    """A loopback HTTP server; append a status to the list to change its answer."""
    statuses = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(statuses[-1])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="stand-in-http", daemon=True)
    thread.start()
    try:
        yield server.server_address[1], statuses
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_reachable_on_any_http_answer(http_server: tuple[int, list[int]]) -> None:
    port, statuses = http_server
    assert check_reachable(f"http://127.0.0.1:{port}/health") is None
    statuses.append(503)
    assert check_reachable(f"http://127.0.0.1:{port}/") is None


def test_unreachable_says_why() -> None:
    why = check_reachable(f"http://127.0.0.1:{free_port()}/", timeout_s=1)
    assert why is not None and "unreachable" in why
    assert "not an http" in (check_reachable("ftp://x/") or "")


def test_tunnel_state_from_stand_in(http_server: tuple[int, list[int]]) -> None:
    port, statuses = http_server
    assert probe_ready("127.0.0.1", port) == 200
    assert tunnel_state(("127.0.0.1", port)) == "connected"
    statuses.append(503)
    assert tunnel_state(("127.0.0.1", port)) == "disconnected"


def test_tunnel_state_nothing_listening() -> None:
    want = "disconnected" if cloudflared_present() else "not-installed"
    assert tunnel_state(("127.0.0.1", free_port())) == want

"""Connection exhaustion: one client holding thousands of idle connections does not lock
other clients out.

The attacker connects from 127.0.0.2 and the other clients from 127.0.0.1 (both
loopback, so the cap is applied to loopback for this test: `cap_loopback`). The proxy
is started with a soft open-file limit of 1024, which it raises itself.
"""

import resource
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from agent.bus.messages import Route
from tests.agent.proxy.conftest import FAST, route_to
from tests.agent.proxy.harness import Backend, BusPublisher, ProxyProcess

ATTACKER = "127.0.0.2"
IDLE_CONNECTIONS = 2000


@contextmanager
def low_soft_limit(soft: int) -> Iterator[None]:
    """Children started inside inherit a soft RLIMIT_NOFILE of `soft`."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, old[1]), old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def _soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise RuntimeError("no open-file limit")


def _open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def _hold(port: int, n: int) -> list[socket.socket]:
    held = []
    for _ in range(n):
        s = socket.socket()
        s.bind((ATTACKER, 0))
        s.connect(("127.0.0.1", port))
        held.append(s)
    return held


def _closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


@pytest.fixture(scope="module")
def limits_ok() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < IDLE_CONNECTIONS + 500:
        pytest.fail(f"the test needs an open-file hard limit above {IDLE_CONNECTIONS + 500}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _others_succeed(proxy: ProxyProcess) -> None:
    for i in range(20):
        r = requests.get(f"http://127.0.0.1:{proxy.port}/other/{i}", timeout=5)
        assert r.status_code == 200 and r.json()["path"] == f"/other/{i}"


def _start(state_dir: Path, bus: BusPublisher, backend: Backend, **extra: object) -> ProxyProcess:
    with low_soft_limit(1024):
        proxy = ProxyProcess(state_dir, "proxy", config={**FAST, **extra})  # type: ignore[dict-item]
    route_to(bus, proxy, [Route("web", backend.port, "/")], "/", "a")
    return proxy


def test_idle_connections_are_closed_at_the_head_timeout_and_others_succeed(
    limits_ok: None, state_dir: Path, bus: BusPublisher, backend_a: Backend
) -> None:
    proxy = _start(state_dir, bus, backend_a)
    held: list[socket.socket] = []
    try:
        assert _soft_nofile(proxy.pid) > 1024  # the proxy raised its own soft limit
        held = _hold(proxy.port, IDLE_CONNECTIONS)
        _others_succeed(proxy)
        # every idle connection is closed after the head timeout (1 s here), counted
        # from accept: no byte was ever sent on them
        deadline = time.monotonic() + 10
        open_ones = held
        while open_ones and time.monotonic() < deadline:
            open_ones = [s for s in open_ones if not _closed_by_peer(s)]
            time.sleep(0.1)
        assert open_ones == [], f"{len(open_ones)} idle connections still open"
        _others_succeed(proxy)
    finally:
        for s in held:
            s.close()
        proxy.stop()


def test_per_address_cap_keeps_one_client_from_taking_every_descriptor(
    limits_ok: None, state_dir: Path, bus: BusPublisher, backend_a: Backend
) -> None:
    cap = 100
    proxy = _start(
        state_dir, bus, backend_a, max_conns_per_address=cap, cap_loopback=True, head_timeout=30.0
    )
    held: list[socket.socket] = []
    try:
        baseline = _open_fds(proxy.pid)
        held = _hold(proxy.port, IDLE_CONNECTIONS)
        # the connections over the cap are closed at accept; the others stay open
        deadline = time.monotonic() + 10
        refused = 0
        while time.monotonic() < deadline:
            refused = sum(1 for s in held if _closed_by_peer(s))
            if refused == IDLE_CONNECTIONS - cap:
                break
            time.sleep(0.1)
        assert refused == IDLE_CONNECTIONS - cap
        assert _open_fds(proxy.pid) <= baseline + cap + 5
        # logged, rate-limited: a line at the first refusal, not one per connection
        lines = [x for x in proxy.log.read_text().splitlines() if "per-address cap" in x]
        assert 1 <= len(lines) <= 3, lines
        assert f"from {ATTACKER}" in lines[0]
        _others_succeed(proxy)  # 127.0.0.1 is another address: not capped by the attacker
    finally:
        for s in held:
            s.close()
        proxy.stop()

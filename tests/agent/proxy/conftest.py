"""Fixtures: one bus, backends and a proxy per test module (processes are not cheap)."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from agent.bus.messages import Route
from tests.agent.proxy.harness import (
    Backend,
    BusPublisher,
    ProxyProcess,
    make_state_dir,
    remove_state_dir,
)

# Short timeouts so that timeout behaviour is observable in a quick test.
FAST = {
    "head_timeout": 1.0,
    "body_timeout": 2.0,
    "idle_timeout": 5.0,
    "upstream_timeout": 2.0,
    "pause_timeout": 1.5,
    "drain_timeout": 5.0,
    "send_timeout": 2.0,
    "sweep_interval": 0.1,
}


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    path = make_state_dir()
    yield path
    remove_state_dir(path)


@pytest.fixture(scope="module")
def bus(state_dir: Path) -> Iterator[BusPublisher]:
    pub = BusPublisher(state_dir / "run")
    yield pub
    pub.close()


@pytest.fixture(scope="module")
def backend_a() -> Iterator[Backend]:
    b = Backend("a")
    yield b
    b.kill()


@pytest.fixture(scope="module")
def backend_b() -> Iterator[Backend]:
    b = Backend("b")
    yield b
    b.kill()


@pytest.fixture(scope="module")
def proxy(state_dir: Path, bus: BusPublisher) -> Iterator[ProxyProcess]:
    p = ProxyProcess(state_dir, "proxy", config=FAST)
    yield p
    p.stop()


def route_to(
    bus: BusPublisher, proxy: ProxyProcess, routes: list[Route], probe: str, name: str
) -> None:
    """Publish `routes` and wait until `probe` is answered by backend `name`."""
    bus.publish(routes)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            r = requests.get(f"http://127.0.0.1:{proxy.port}{probe}", timeout=2)
            if r.headers.get("X-Backend") == name:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"routes not applied: {probe} never reached {name}\n{proxy.logs()}")

"""WebSockets through the external proxy: a real client and a real server (websockets)."""

import asyncio
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from agent.bus.messages import Route
from tests.agent.proxy.conftest import route_to
from tests.agent.proxy.harness import Backend, BusPublisher, ProxyProcess


@pytest.fixture(scope="module")
def ws_backend() -> Iterator[Backend]:
    b = Backend("ws", kind="ws")
    yield b
    b.kill()


@pytest.fixture(scope="module")
def ws_proxy(
    bus: BusPublisher, proxy: ProxyProcess, backend_a: Backend, ws_backend: Backend
) -> ProxyProcess:
    route_to(
        bus,
        proxy,
        [Route("web", backend_a.port, "/"), Route("ws", ws_backend.port, "/ws")],
        "/",
        "a",
    )
    return proxy


def test_echo_large_frames_and_close(ws_proxy: ProxyProcess) -> None:
    async def scenario() -> None:
        async with connect(f"ws://127.0.0.1:{ws_proxy.port}/ws/echo", max_size=None) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            big = bytes(range(256)) * (16 * 1024)  # 4 MiB binary frame
            await ws.send(big)
            assert await ws.recv() == big
            for i in range(50):
                await ws.send(f"m{i}")
            assert [await ws.recv() for _ in range(50)] == [f"m{i}" for i in range(50)]
            await ws.close(code=4001, reason="bye")
        assert ws.close_code == 4001
        assert ws.close_reason == "bye"
        with pytest.raises(ConnectionClosed):
            await ws.recv()

    asyncio.run(scenario())


def test_many_concurrent_sockets(ws_proxy: ProxyProcess) -> None:
    async def one(i: int) -> None:
        async with connect(f"ws://127.0.0.1:{ws_proxy.port}/ws") as ws:
            for j in range(5):
                await ws.send(f"{i}:{j}")
                assert await ws.recv() == f"{i}:{j}"

    async def scenario() -> None:
        await asyncio.gather(*(one(i) for i in range(20)))

    asyncio.run(scenario())


def test_upgrade_to_a_plain_http_backend_is_answered_and_closed(ws_proxy: ProxyProcess) -> None:
    # backend_a is not a WebSocket server: it answers 200, and the proxy relays that answer
    async def scenario() -> None:
        with pytest.raises(Exception, match="200"):
            async with connect(f"ws://127.0.0.1:{ws_proxy.port}/plain"):
                pass

    asyncio.run(scenario())

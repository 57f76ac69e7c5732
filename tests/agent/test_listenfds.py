"""agent/listenfds.py: sockets handed down (LISTEN_FDS) and systemd's fd store.

The store side talks to a real unix datagram socket standing in for systemd's
$NOTIFY_SOCKET: what arrives there (messages and descriptors) is what systemd would get.
The booted-systemd behaviour (restart, crash, kill -9) is proven in
tests/installer/test_gapless_e2e.py.
"""

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import listenfds
from tests.support.env import require_root


class FakeSystemd:
    """Receives on a unix datagram socket like systemd's notify socket: every message is
    recorded, and a thread keeps a store of the descriptors as systemd does (FDSTORE adds,
    FDSTOREREMOVE closes those of that name)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.got: list[tuple[str, list[int]]] = []
        self.store: dict[str, list[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                msg, fds, _, _ = socket.recv_fds(self.sock, 4096, 8)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in msg.decode().splitlines())
            name = fields.get("FDNAME", "")
            if "FDSTOREREMOVE" in fields:
                for fd in self.store.pop(name, []):
                    os.close(fd)
            elif "FDSTORE" in fields:
                self.store.setdefault(name, []).extend(fds)
            self.got.append((msg.decode(), fds))

    def receive(self) -> tuple[str, list[int]]:
        deadline = time.monotonic() + 5
        while not self.got:
            assert time.monotonic() < deadline, "no message"
            time.sleep(0.01)
        return self.got.pop(0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        for fds in self.store.values():
            for fd in fds:
                os.close(fd)


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    yield fake
    fake.close()


def test_keep_replaces_the_stored_socket_by_name(systemd: FakeSystemd) -> None:
    with listenfds.bind_listener(socket.SOCK_STREAM, "127.0.0.1", 0) as sock:
        assert listenfds.keep("http", [sock.fileno()])
        assert systemd.receive() == ("FDSTOREREMOVE=1\nFDNAME=http", [])
        msg, fds = systemd.receive()
        assert msg == "FDSTORE=1\nFDNAME=http" and len(fds) == 1
        # systemd's copy is the same listening socket: it stays bound after ours closes
        with socket.socket(fileno=os.dup(fds[0])) as copy:
            assert copy.getsockname() == sock.getsockname()


def test_keep_is_a_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with listenfds.bind_listener(socket.SOCK_STREAM, "127.0.0.1", 0) as sock:
        assert not listenfds.keep("http", [sock.fileno()])


def _hand_down(monkeypatch: pytest.MonkeyPatch, socks: list[socket.socket], names: str) -> None:
    """Put `socks` at fds 3.. as systemd would before exec."""
    for i, s in enumerate(socks):
        os.dup2(s.fileno(), listenfds.LISTEN_FDS_START + i)
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", str(len(socks)))
    monkeypatch.setenv("LISTEN_FDNAMES", names)
    monkeypatch.setattr(listenfds, "_pool", None)


def test_take_matches_the_address_and_drops_stale_ones(
    systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = listenfds.bind_listener(socket.SOCK_STREAM, "127.0.0.1", 0)
    port = a.getsockname()[1]
    udp = listenfds.bind_listener(socket.SOCK_DGRAM, "127.0.0.1", 0)
    saved = [os.dup(fd) for fd in (3, 4)]  # pytest's own descriptors may sit there
    try:
        _hand_down(monkeypatch, [a, udp], "http:dns")
        a.close()
        got = listenfds.take(socket.SOCK_STREAM, "127.0.0.1", port)
        assert got is not None and got.getsockname() == ("127.0.0.1", port)
        assert "LISTEN_FDS" not in os.environ  # children must not take them for theirs
        assert listenfds.take(socket.SOCK_STREAM, "127.0.0.1", port) is None  # once
        # a datagram socket on another address (e.g. after a mode change) is stale:
        # closed here and dropped from the store, so that the address can be bound
        assert listenfds.take(socket.SOCK_DGRAM, "127.0.0.2", 53) is None
        assert systemd.receive() == ("FDSTOREREMOVE=1\nFDNAME=dns", [])
        got.detach()
    finally:
        for fd, old in zip((3, 4), saved, strict=True):
            os.dup2(old, fd)
            os.close(old)
        udp.close()


MODE_CHANGE = """
import asyncio, subprocess, sys
from agent.proxy.config import ProxyConfig
from agent.proxy.server import EXTERNAL, ProxyServer
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

async def main():
    server = ProxyServer(EXTERNAL, ProxyConfig(), asyncio.get_running_loop())
    await server.listen("0.0.0.0:8080")  # e.g. mode "open"
    await server.listen("127.0.0.1:8080")  # "tunnel-only": same port, loopback only
    print(server.bound, [s.getsockname() for s in server.listener.sockets])

asyncio.run(main())
"""


def test_a_mode_change_on_the_same_port_rebinds_and_replaces_the_stored_socket(
    systemd: FakeSystemd,
) -> None:
    """0.0.0.0:P and 127.0.0.1:P cannot both be bound: the old listener, and systemd's
    copy of it, go first. (In a network namespace of its own: the wildcard bind must not
    open a port on this machine.)"""
    require_root()
    out = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", MODE_CHANGE],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "127.0.0.1:8080 [('127.0.0.1', 8080)]", out.stdout
    got = [systemd.receive() for _ in range(5)]
    assert [msg for msg, _ in got] == [
        "FDSTOREREMOVE=1\nFDNAME=http",  # first bind: replace whatever was stored
        "FDSTORE=1\nFDNAME=http",
        "FDSTOREREMOVE=1\nFDNAME=http",  # the mode change: systemd's copy must go first
        "FDSTOREREMOVE=1\nFDNAME=http",
        "FDSTORE=1\nFDNAME=http",
    ]
    # systemd's store: the loopback socket only (the wildcard one was closed)
    (fd,) = systemd.store["http"]
    with socket.socket(fileno=os.dup(fd)) as now:
        assert now.getsockname() == ("127.0.0.1", 8080)

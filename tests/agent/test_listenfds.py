"""agent/listenfds.py: sockets handed down (LISTEN_FDS) and systemd's fd store.

The store side talks to a real unix datagram socket standing in for systemd's
$NOTIFY_SOCKET: what arrives there (messages and descriptors) is what systemd would get.
The booted-systemd behaviour (restart, crash, kill -9) is proven in
tests/installer/test_gapless_e2e.py.
"""

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import listenfds


class FakeSystemd:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(2)

    def receive(self) -> tuple[str, list[int]]:
        msg, fds, _, _ = socket.recv_fds(self.sock, 4096, 8)
        return msg.decode(), fds


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    yield fake
    fake.sock.close()


def test_keep_replaces_the_stored_socket_by_name(systemd: FakeSystemd) -> None:
    with listenfds.bind_listener(socket.SOCK_STREAM, "127.0.0.1", 0) as sock:
        assert listenfds.keep("http", [sock.fileno()])
        assert systemd.receive() == ("FDSTOREREMOVE=1\nFDNAME=http", [])
        msg, fds = systemd.receive()
        assert msg == "FDSTORE=1\nFDNAME=http" and len(fds) == 1
        # systemd's copy is the same listening socket: it stays bound after ours closes
        with socket.socket(fileno=fds[0]) as copy:
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

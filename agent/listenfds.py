"""Listening sockets that outlive a component's process (issue 16, gapless restarts).

A parent that holds the sockets — `berth agent run-all`, or systemd with ``.socket``
units — hands them down with the socket-activation convention (sd_listen_fds(3)):
fds 3.. with ``LISTEN_FDS=<n>`` and ``LISTEN_PID=<our pid>``. While no process accepts,
the kernel queues new connections (and datagrams) on the held socket, so a restart
refuses nothing; the old process finishes its in-flight requests after it stops
accepting, the new one takes over the same socket.

`take` hands out the inherited socket bound to a given address and type, once; a
component that finds none binds the address itself, as before.
"""

import ipaddress
import os
import socket

LISTEN_FDS_START = 3

_pool: list[socket.socket] | None = None


def inherited(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """The sockets passed to this process (and forget the variables: children of ours
    must not take them for theirs)."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    socks = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        socks.append(socket.socket(fileno=fd))
    return socks


def _same(sock: socket.socket, kind: int, host: str, port: int) -> bool:
    if sock.type != kind:
        return False
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        return bool(
            bound_port == port and ipaddress.ip_address(bound_host) == ipaddress.ip_address(host)
        )
    except (OSError, ValueError):
        return False


def take(kind: int, host: str, port: int) -> socket.socket | None:
    """The inherited socket of `kind` (SOCK_STREAM, SOCK_DGRAM) bound to host:port."""
    global _pool
    if _pool is None:
        _pool = inherited()
    for sock in _pool:
        if _same(sock, kind, host, port):
            _pool.remove(sock)
            return sock
    return None


def bind_listener(kind: int, host: str, port: int) -> socket.socket:
    """A socket bound (and, for TCP, listening) on host:port, for a parent to hold."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock

"""Listening sockets that outlive a component's process (issue 16, gapless restarts).

Whoever holds the sockets hands them down with the socket-activation convention
(sd_listen_fds(3)): fds 3.. with ``LISTEN_FDS=<n>``, ``LISTEN_PID=<our pid>`` and
optionally ``LISTEN_FDNAMES``. Two holders exist:

* `berth agent run-all` binds them itself and passes them to each child it (re)starts;
* under systemd the component binds them and gives systemd a copy for its file-descriptor
  store (sd_notify ``FDSTORE=1`` + ``FDNAME=``, unit ``FileDescriptorStoreMax=``).
  systemd keeps the store across `systemctl restart`, a crash and ``kill -9`` (it is
  emptied only when the unit stops for good) and passes the fds back on the next start.
  A static ``.socket`` unit cannot do this job: the external proxy's address follows the
  security mode, which only the route table knows.

While no process accepts, the kernel queues new connections (and datagrams) on the held
socket, so a restart refuses nothing; the old process finishes its in-flight requests
after it stops accepting, the new one takes over the same socket.

`take` hands out the inherited socket bound to a given address and type, once; when
none matches (first start, or the security mode moved the address), the inherited ones
of that type are closed and dropped from the store, and the component binds afresh and
`keep`s the new socket.
"""

import array
import ipaddress
import logging
import os
import socket

log = logging.getLogger(__name__)

LISTEN_FDS_START = 3

_pool: list[tuple[str, socket.socket]] | None = None


def inherited(environ: dict[str, str] | None = None) -> list[tuple[str, socket.socket]]:
    """The sockets passed to this process with their names ("" when unnamed), and forget
    the variables: children of ours must not take them for theirs."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    names = env.get("LISTEN_FDNAMES", "").split(":")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    socks = []
    for i, fd in enumerate(range(LISTEN_FDS_START, LISTEN_FDS_START + count)):
        os.set_inheritable(fd, False)
        socks.append((names[i] if i < len(names) else "", socket.socket(fileno=fd)))
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
    """The inherited socket of `kind` (SOCK_STREAM, SOCK_DGRAM) bound to host:port.

    Without one, the inherited sockets of `kind` are stale (another address): they are
    closed and dropped from systemd's store, so that the address can be bound again."""
    global _pool
    if _pool is None:
        _pool = inherited()
    for entry in _pool:
        if _same(entry[1], kind, host, port):
            _pool.remove(entry)
            return entry[1]
    for entry in [e for e in _pool if e[1].type == kind]:
        name, sock = entry
        log.info("dropping the held socket %s (%s): not %s:%d", name or "?",
                 _address(sock), host, port)  # fmt: skip
        if name:
            notify_fdstore_remove(name)
        sock.close()
        _pool.remove(entry)
    return None


def _address(sock: socket.socket) -> str:
    try:
        host, port = sock.getsockname()[:2]
        return f"{host}:{port}"
    except OSError:
        return "unbound"


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


# -- systemd's file-descriptor store (sd_pid_notify_with_fds) -----------------------


def _notify(message: str, fds: list[int] | None = None) -> bool:
    """Send `message` (and `fds`) to $NOTIFY_SOCKET; False when not under systemd.
    (The sdnotify package cannot pass descriptors.)"""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendmsg([message.encode()], ancillary, 0, address)
        except OSError as exc:
            log.warning("cannot tell systemd %r: %s", message.splitlines()[0], exc)
            return False
    return True


def notify_fdstore_remove(name: str) -> bool:
    return _notify(f"FDSTOREREMOVE=1\nFDNAME={name}")


def keep(name: str, fds: list[int]) -> bool:
    """Give systemd a copy of the listening sockets `fds` under `name` (replacing any
    stored under that name), so that they outlive this process. `name`: letters, digits,
    '-' and '_' (systemd refuses ':' and control characters)."""
    notify_fdstore_remove(name)
    stored = _notify(f"FDSTORE=1\nFDNAME={name}", fds)
    if stored:
        log.info("listening socket %s handed to systemd's fd store", name)
    return stored

"""`berth controlplane serve --workers N`: N server processes on one listening address.

One Python process serves HTTP on one core. With `--workers N` (N > 1) this parent
process binds the address N times with SO_REUSEPORT (the kernel spreads new connections
over the N sockets by their addresses' hash; a Unix socket is bound once and shared),
then starts N copies of `berth controlplane serve`, each handed its socket as
`--bind fd://K`. The parent only supervises: it forwards SIGINT/SIGTERM, tells systemd
READY once the address accepts connections, and if any worker exits on its own it stops
the others and exits non-zero (so the service manager restarts the whole set).

The workers share nothing but the database: each has its own agent directory, long-poll
watcher and heartbeat writer, exactly like control-plane nodes on one PostgreSQL. A stack
saved through one worker reaches agents polling another within one watcher tick
(`longpoll.DEFAULT_INTERVAL_S`), and so does an instance revocation.
"""

import logging
import os
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass

from agent.notify import Notifier
from agent.supervise import StopSignal, stop_processes
from controlplane.settings import ServerSettings

log = logging.getLogger("controlplane")

# how often the supervisor looks at its workers, and how long it gives them to stop
POLL_S = 0.2
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Listener:
    """What a bind address means: TCP (host, port) or a Unix socket path."""

    host: str = ""
    port: int = 0
    unix_path: str | None = None


def parse_bind(bind: str) -> Listener:
    """`HOST:PORT`, `[V6]:PORT` or `unix:PATH`; ValueError naming --bind otherwise."""
    if bind.startswith("unix:"):
        if not bind[5:]:
            raise ValueError("--bind unix:PATH needs a path")
        return Listener(unix_path=bind[5:])
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--bind must be HOST:PORT or unix:PATH, got {bind!r}")
    return Listener(host=host.strip("[]") or "0.0.0.0", port=int(port))


def open_sockets(listener: Listener, count: int) -> list[socket.socket]:
    """`count` TCP sockets bound to one address (SO_REUSEPORT), or one Unix socket.

    Bound, not listening: each worker listens when it is ready to serve, so until then a
    connection is refused (clients retry) instead of waiting in the queue of a worker
    still starting. With port 0 the first socket picks the port and the others join it."""
    if listener.unix_path is not None:
        path = listener.unix_path
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.remove(path)  # a stale socket of an earlier run, as Hypercorn does
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        return [sock]
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    port = listener.port
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((listener.host, port))
            port = sock.getsockname()[1]
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def worker_argv(settings: ServerSettings, fd: int) -> list[str]:
    """The command line of one worker: the same settings, serving the inherited socket."""
    argv = [sys.executable, "-m", "agent.cli", "controlplane", "serve", "--db", settings.db_url,
            "--bind", f"fd://{fd}", "--install-token-ttl", repr(settings.install_token_ttl_s)]  # fmt: skip
    if settings.public_url:
        argv += ["--public-url", settings.public_url]
    if settings.wheelhouse:
        argv += ["--wheelhouse", settings.wheelhouse]
    if not settings.fast_path:
        argv += ["--no-fast-path"]
    if settings.secret_key_file:
        argv += ["--secret-key-file", settings.secret_key_file]
    for root in settings.file_repo_roots:
        argv += ["--allow-file-repos", root]
    argv += ["--heartbeat-interval", repr(settings.heartbeat_interval_s),
             "--audit-retention-days", str(settings.audit_retention_days),
             "--notify-interval", repr(settings.notify_interval_s),
             "--notify-lease", repr(settings.notify_lease_s),
             "--notify-backoff", repr(settings.notify_backoff_s)]  # fmt: skip
    return argv + settings.limits.argv()


def serve_workers(settings: ServerSettings, count: int) -> int:
    """Run `count` worker processes until SIGINT/SIGTERM or until one of them dies."""
    try:
        sockets = open_sockets(parse_bind(settings.bind), count)
    except (OSError, ValueError) as exc:
        log.error("cannot serve on %s: %s", settings.bind, exc)
        return 1
    # the workers must not talk to systemd: only this process is the service's main PID
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    procs: list[subprocess.Popen[bytes]] = []
    stop = StopSignal()
    try:
        for i in range(count):
            sock = sockets[i % len(sockets)]
            procs.append(
                subprocess.Popen(worker_argv(settings, sock.fileno()), env=env, pass_fds=[sock.fileno()])
            )  # fmt: skip
        for sock in sockets:
            sock.close()  # the workers hold them now
        log.info("serving on %s with %d workers (pids %s)", settings.bind, count,
                 " ".join(str(p.pid) for p in procs))  # fmt: skip
        notifier = _notify_ready(settings.bind)
        last_ping = time.monotonic()
        while not stop.received:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                log.error("worker %d exited with %s; stopping the others", dead[0].pid, dead[0].returncode)  # fmt: skip
                return 1
            if time.monotonic() - last_ping >= notifier.watchdog_interval_s:
                notifier.watchdog()  # the supervisor is alive and every worker is running
                last_ping = time.monotonic()
            time.sleep(POLL_S)
        notifier.stopping()
        return 0
    finally:
        for sock in sockets:
            sock.close()
        stop_processes([(f"worker {p.pid}", p) for p in procs], STOP_TIMEOUT_S)


def _notify_ready(bind: str) -> Notifier:
    """READY=1 for systemd once a worker accepts connections (no-op outside systemd)."""

    listener = parse_bind(bind)
    notifier = Notifier()
    if listener.unix_path is None:
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}
        address = (wildcard.get(listener.host, listener.host), listener.port)
        for _ in range(300):
            try:
                socket.create_connection(address, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
    notifier.ready(f"serving on {bind}")
    return notifier

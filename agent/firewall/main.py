"""The firewall helper process (`berth agent firewall`): the only Berth process as root.

One REP socket at ``settings.bus.firewall``, created under umask 0117 so the socket file
is born 0660, then given the ``berth-firewall`` group (its own: the reconciler's user is
its only member; the proxies and the DNS responder are not). Every request is also checked
against the peer's credentials (SO_PEERCRED, which ZeroMQ reports as the message's
``Peer-Address``, ``<host>:<uid>:<gid>:<pid>``): only root and the users in
`HelperOptions.clients` are answered, so a process that somehow reaches the socket still
cannot drive the firewall. One request at a time, in one thread, so no two firewall changes
ever interleave. The poll timeout is the sooner of the watchdog interval and the pending
apply's confirm deadline; at the deadline an unconfirmed apply is reverted.

Every request is validated by `agent.bus.firewall.parse_request`; a bad one gets an
error reply naming the field and a log line, and changes nothing.
"""

import grp
import logging
import os
import pwd
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

from agent.bus.firewall import RequestError, parse_request
from agent.bus.firewallstatus import FirewallReply
from agent.firewall.engine import Firewall, FirewallConfig
from agent.firewall.tools import ToolError
from agent.firewall.tunnel import DEFAULT_METRICS
from agent.notify import Notifier
from agent.settings import AgentSettings, parse_hostport

log = logging.getLogger(__name__)

FIREWALL_GROUP = "berth-firewall"
RECONCILER_USER = "berth"  # under systemd; under `run-all` the reconciler is root
SOCKET_MODE = 0o660


@dataclass(frozen=True)
class HelperOptions:
    """Helper settings not (yet) in `AgentSettings`; read from it when present."""

    backend: str = "auto"
    tunnel_metrics: tuple[str, int] = DEFAULT_METRICS
    group: str = FIREWALL_GROUP
    clients: tuple[str, ...] = (RECONCILER_USER,)  # besides root

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> "HelperOptions":
        metrics = settings.tunnel_metrics
        return cls(
            backend=settings.firewall_backend,
            tunnel_metrics=(
                parse_hostport(metrics, "--tunnel-metrics") if metrics else DEFAULT_METRICS
            ),
        )


def firewall_config(settings: AgentSettings, opts: HelperOptions) -> FirewallConfig:
    return FirewallConfig(
        state_dir=settings.state_layout.firewall,
        backend=opts.backend,
        tunnel_metrics=opts.tunnel_metrics,
    )


def bind_socket(ctx: zmq.Context, endpoint: str, path: Path, group: str) -> zmq.Socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a stale socket from a crashed helper
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)  # bigger is certainly not ours
    old = os.umask(0o117)  # the socket file is born 0660: no window where others may connect
    try:
        sock.bind(endpoint)
    finally:
        os.umask(old)
    os.chmod(path, SOCKET_MODE)
    try:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    except KeyError:
        log.info("group %s does not exist; %s stays root-only (0660 root:root)", group, path)
    except OSError as exc:
        log.warning("cannot give %s to group %s (%s); it stays root-only", path, group, exc)
    return sock


def allowed_uids(clients: tuple[str, ...]) -> frozenset[int]:
    """Root and the uids of those `clients` users that exist."""
    uids = {0}
    for name in clients:
        try:
            uids.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            pass
    return frozenset(uids)


def peer_uid(peer_address: str | None) -> int | None:
    """The uid in ZeroMQ's ``Peer-Address`` of an ipc connection (``host:uid:gid:pid``)."""
    if not peer_address:
        return None
    parts = peer_address.rsplit(":", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return int(parts[1])


def answer(engine: Firewall, frames: list[bytes]) -> FirewallReply:
    """Validate one request and run it; never raises."""
    try:
        if len(frames) != 1:
            raise RequestError("request", f"must be a single message frame, got {len(frames)}")
        req = parse_request(frames[0])
    except RequestError as exc:
        log.warning("rejected request (%s): %s", exc.field, exc.message)
        return FirewallReply(
            ok=False, command="invalid", status=engine.status(), error=str(exc), field=exc.field
        )
    try:
        return engine.handle(req)
    except (ToolError, OSError) as exc:
        log.error("%s failed: %s", req.command, exc)
        return FirewallReply(ok=False, command=req.command, status=engine.status(), error=str(exc))


def refuse(engine: Firewall, uid: int | None) -> FirewallReply:
    log.warning("refused a request from uid %s: only root and the reconciler may ask", uid)
    return FirewallReply(
        ok=False, command="invalid", status=engine.status(), field="peer",
        error=f"uid {uid} may not use the firewall helper (only root and the reconciler)",
    )  # fmt: skip


def serve(
    engine: Firewall,
    sock: zmq.Socket,
    notifier: Notifier,
    wakeup: int,
    allowed: frozenset[int] = frozenset({0}),
) -> None:
    """Answer requests until a byte arrives on `wakeup` (the signal wakeup fd).

    The wakeup fd is polled with the socket because a signal may land on one of
    ZeroMQ's own threads, where it would not interrupt this thread's poll.
    """
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(wakeup, zmq.POLLIN)
    engine.expire()  # an apply cut short or overdue while we were down
    next_ping = 0.0
    while True:
        now = time.time()
        if now >= next_ping:
            notifier.watchdog()
            next_ping = now + notifier.watchdog_interval_s
        deadline = engine.next_deadline()
        wake = min(next_ping, deadline) if deadline else next_ping
        events = dict(poller.poll(max(10, int((wake - time.time()) * 1000))))
        if wakeup in events:
            return
        if sock in events:
            parts = sock.recv_multipart(copy=False)
            uid = peer_uid(str(parts[0].get("Peer-Address") or ""))
            if uid is None or uid not in allowed:
                reply = refuse(engine, uid)
            else:
                reply = answer(engine, [p.bytes for p in parts])
            sock.send(reply.to_json())
        if deadline and time.time() >= deadline:
            try:
                if engine.expire():
                    log.warning("apply not confirmed in time: reverted")
            except (ToolError, OSError) as exc:
                # keep serving; the pending record stays, so the next loop tries again
                log.error("automatic revert failed, retrying: %s", exc)
                time.sleep(1.0)


def main(settings: AgentSettings, options: HelperOptions | None = None) -> int:
    opts = options or HelperOptions.from_settings(settings)
    engine = Firewall(firewall_config(settings, opts))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    endpoints = settings.bus
    sock = bind_socket(ctx, endpoints.firewall, endpoints.firewall_path, opts.group)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda n, f: None)  # the wakeup fd does the work
    notifier = Notifier()
    notifier.ready(f"firewall helper on {endpoints.firewall}")
    log.info("firewall helper listening on %s (state in %s)", endpoints.firewall, engine.store.dir)
    try:
        serve(engine, sock, notifier, wake_r, allowed_uids(opts.clients))
        log.info("stopping")
    finally:
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)
        notifier.stopping()
        sock.close()
        endpoints.firewall_path.unlink(missing_ok=True)
    return 0

"""`berth agent run-all`: every agent component as a child process, for development, tests
and the demo (systemd runs the same components as separate units in production).

Each child is `berth agent <component>` with the same options. A child that dies is
restarted with backoff, as systemd's Restart=always would. SIGINT/SIGTERM stop the
children (proxies last, so in-flight requests finish); services keep running unless
`--stop-services-on-exit` is given, as a reconciler restart must not touch them.

Children start from the absolute path of the `agent` package this process imported, in
an isolated interpreter (`python -I`): neither the working directory nor PYTHONPATH can
put a module of someone else's on their path (the firewall helper among them runs as
root). As root, run-all first makes the accounts the components and the services run as
(`agent.identities`), so services never share a uid with a Berth process. The install
token reaches the reconciler alone, in its environment, never on a command line. On a
graceful stop, run-all reverts only the resolver wiring this run applied.
"""

import fcntl
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import agent
from agent.listenfds import bind_listener
from agent.settings import TOKEN_ENV, AgentSettings, parse_hostport
from agent.supervise import StopSignal, stop_processes

log = logging.getLogger(__name__)

RESTART_CAP_S = 30.0
HELD_FDS_FROM = 10
# sys.path[0] from argv[1]; held sockets (BERTH_PASS_FDS, fds >= 10) moved to 3.. with
# LISTEN_FDS/LISTEN_PID (sd_listen_fds: the pid is only known in the child); then the
# usual `berth` entry point with the remaining arguments
_BOOT = (
    "import os, sys; sys.path.insert(0, sys.argv.pop(1)); "
    "fds = [int(f) for f in os.environ.pop('BERTH_PASS_FDS', '').split(',') if f]; "
    "[os.dup2(f, 3 + i) for i, f in enumerate(fds)]; [os.close(f) for f in fds]; "
    "fds and os.environ.update(LISTEN_FDS=str(len(fds)), LISTEN_PID=str(os.getpid())); "
    "from agent.cli import main; sys.exit(main())"
)


@dataclass
class Child:
    component: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    failures: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    history: list[int] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)  # held here, passed down

    def start(self) -> None:
        fds = [s.fileno() for s in self.sockets]
        env = dict(self.env)
        if fds:  # the child's boot code hands them on as socket activation would
            env["BERTH_PASS_FDS"] = ",".join(map(str, fds))
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, env=env, pass_fds=fds)
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("started %s (pid %d)", self.component, self.popen.pid)


def components(settings: AgentSettings) -> list[str]:
    names = ["firewall"] if os.geteuid() == 0 else []
    names += ["dns", "internal-proxy", "proxy", "reconciler"]
    return names


def held_sockets(settings: AgentSettings) -> dict[str, list[socket.socket]]:
    """The listening sockets run-all binds and keeps for the proxies and the DNS
    responder, so that restarting one of them refuses no connection. The external
    proxy's are held only with a fixed --proxy-bind: otherwise its address follows the
    security mode in the route table and the proxy binds (and rebinds) it itself. An
    address that cannot be bound here is left to the component (which says why)."""
    wanted: dict[str, list[tuple[int, str]]] = {
        "internal-proxy": [(socket.SOCK_STREAM, settings.internal_bind)],
        "dns": [(socket.SOCK_DGRAM, settings.dns_bind), (socket.SOCK_STREAM, settings.dns_bind)],
    }
    if settings.proxy_bind:
        wanted["proxy"] = [(socket.SOCK_STREAM, settings.proxy_bind)]
    held: dict[str, list[socket.socket]] = {}
    for component, binds in wanted.items():
        socks: list[socket.socket] = []
        try:
            for kind, bind in binds:
                host, port = parse_hostport(bind, component)
                sock = bind_listener(kind, host, port)
                # above the fds the children get (3..): moving them there cannot collide
                high = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, HELD_FDS_FROM)
                socks.append(socket.socket(fileno=high))
                sock.close()
        except (OSError, ValueError) as exc:
            log.warning("not holding %s's sockets (it binds them itself): %s", component, exc)
            for sock in socks:
                sock.close()
            continue
        held[component] = socks
    return held


def child_command(component: str, options: list[str]) -> list[str]:
    """`berth agent <component> OPTIONS`, from this installation's `agent` package only."""
    root = str(Path(agent.__file__).resolve().parent.parent)
    return [sys.executable, "-I", "-c", _BOOT, root, "agent", component, *options]


def child_options(options: list[str]) -> list[str]:
    """The command line's options as the children get them: without run-all's own and
    without the token file (the token goes to the reconciler in its environment)."""
    out: list[str] = []
    skip = False
    for o in options:
        if skip:
            skip = False
        elif o == "--token-file":
            skip = True
        elif not (o.startswith("--token-file=") or o == "--stop-services-on-exit"):
            out.append(o)
    return out


# systemd's variables are run-all's own when it runs as a unit: a child must not tell
# systemd it is ready, nor put its sockets in run-all's fd store (run-all holds them)
NOT_INHERITED = {TOKEN_ENV, "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}


def child_env(component: str, token: str | None, base: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in NOT_INHERITED}
    if component == "reconciler" and token:
        env[TOKEN_ENV] = token
    return env


def run_all(settings: AgentSettings, options: list[str]) -> int:
    stop_services = "--stop-services-on-exit" in options
    options = child_options(options)
    if os.geteuid() != 0:
        log.info(
            "not root: the firewall helper is not started (security modes other than open need "
            "it), and services run as this same user (no separation: development only)"
        )
    else:
        from agent.identities import SERVICES_USER, IdentityError, ensure_run_all_accounts

        try:
            ensure_run_all_accounts()
        except IdentityError as exc:
            log.error("%s", exc)
            return 1
        if settings.services_user is None:
            options += ["--services-user", SERVICES_USER]
        _share_cache_dir(settings)
    wiring_mode = _wiring_in_use(settings)
    held = held_sockets(settings)
    children = [
        Child(
            name,
            child_command(name, options),
            child_env(name, settings.token, dict(os.environ)),
            sockets=held.get(name, []),
        )
        for name in components(settings)
    ]
    stop = StopSignal()
    for child in children:
        child.start()
    if wiring_mode is not None:
        threading.Thread(
            target=_keep_hosts_wired, args=(settings,), name="hosts-wiring", daemon=True
        ).start()
    while True:
        time.sleep(0.2)
        if stop.received:  # (children signalled with us, by a terminal's Ctrl-C, are not crashes)
            break
        for child in children:
            _supervise(child)
    _stop(children)
    if stop_services:  # with the reconciler stopped, which would restart them
        stop_command = child_command("stop-services", options)
        subprocess.run(stop_command, stdin=subprocess.DEVNULL, env=dict(os.environ), check=False)
    if wiring_mode is not None:
        _revert_dns_wiring(settings, wiring_mode)
    return 0


def _share_cache_dir(settings: AgentSettings) -> None:
    """The route caches' directory: writable by the components (group `berth`), which drop
    root to their own users, and by nobody else (the services' user is not in `berth`)."""
    import grp

    from agent.identities import AGENT_GROUP

    cache = settings.state_layout.cache
    cache.mkdir(parents=True, exist_ok=True)
    os.chown(cache, -1, grp.getgrnam(AGENT_GROUP).gr_gid)
    os.chmod(cache, 0o770)


def _supervise(child: Child) -> None:
    now = time.monotonic()
    if child.restart_at is not None:
        if now >= child.restart_at:
            child.start()
        return
    if child.popen is None or child.popen.poll() is None:
        return
    ran = now - child.started_at
    child.failures = 1 if ran > 60 else child.failures + 1
    # the first exit after a good run restarts at once (a crash or a `kill` of a
    # component whose sockets we hold must not leave them unserved); then backoff
    delay = 0.0 if child.failures == 1 else min(RESTART_CAP_S, 2 ** (child.failures - 2))
    log.warning(
        "%s exited with %s; restarting in %.0f s", child.component, child.popen.returncode, delay
    )
    child.restart_at = now + delay


def _stop(children: list[Child]) -> None:
    # reverse start order: the reconciler first, the proxies after, so routes stay served
    running = [(c.component, c.popen) for c in reversed(children) if c.popen is not None]
    stop_processes(running, timeout_s=15)


def _keep_hosts_wired(settings: AgentSettings) -> None:
    """Keep the resolver wiring in step with the service names.

    The DNS responder drops root right after start-up, so it cannot rewrite /etc/hosts
    when services change; run-all, which stays root, follows the route table and does it.
    """
    import asyncio

    from agent.bus.messages import RouteTable
    from agent.bus.subscriber import RouteFollower
    from agent.resolverwiring import apply_wiring

    def on_table(table: RouteTable) -> None:
        names = [f"{r.service}.{table.suffix}" for r in table.routes]
        try:
            apply_wiring(settings, names, table.suffix)
        except (OSError, ValueError) as exc:
            log.warning("could not update the resolver wiring: %s", exc)

    follower = RouteFollower(settings.bus, settings.cache_file("run-all"), on_table)
    asyncio.run(follower.run())


@dataclass(frozen=True)
class WiringInUse:
    """The resolver wiring this run applies, and whether its file was there before us."""

    mode: str  # "hosts" or "resolved"
    preexisting_dropin: bool = False


def _wiring_in_use(settings: AgentSettings) -> WiringInUse | None:
    """What the DNS responder (root before it drops) and the hosts thread will wire."""
    if os.geteuid() != 0 or settings.dns_wiring == "none":
        return None
    from agent import resolverwiring as wiring

    try:
        mode = wiring.decide_mode(settings)
    except wiring.WiringError:
        return None  # the responder refuses to start on it and says why
    if mode == wiring.MODE_RESOLVED:
        return WiringInUse(mode, wiring.RESOLVED_DROPIN.exists())
    return WiringInUse(mode) if mode == wiring.MODE_HOSTS else None


def _revert_dns_wiring(settings: AgentSettings, applied: WiringInUse) -> None:
    """Undo what this run wired, and nothing else: a resolved drop-in that was there before
    it started belongs to someone else (another agent, an installed Berth)."""
    from agent import resolverwiring as wiring

    try:
        if applied.mode == wiring.MODE_HOSTS:
            wiring.revert_hosts(settings.hosts_file)
        elif applied.preexisting_dropin:
            log.info("leaving %s in place: it was there before this run", wiring.RESOLVED_DROPIN)
        else:
            wiring.revert_resolved()
    except OSError as exc:
        log.warning("could not revert DNS wiring: %s", exc)

"""`berth agent run-all`: every agent component as a child process, for development, tests
and the demo (systemd runs the same components as separate units in production).

Each child is `berth agent <component>` with the same options. A child that dies is
restarted with backoff, as systemd's Restart=always would. SIGINT/SIGTERM stop the
children (proxies last, so in-flight requests finish); services keep running unless
`--stop-services-on-exit` is given, as a reconciler restart must not touch them.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from agent.settings import AgentSettings

log = logging.getLogger(__name__)

RESTART_CAP_S = 30.0


@dataclass
class Child:
    component: str
    argv: list[str]
    popen: subprocess.Popen[bytes] | None = None
    failures: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    history: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("started %s (pid %d)", self.component, self.popen.pid)


def components(settings: AgentSettings) -> list[str]:
    names = ["firewall"] if os.geteuid() == 0 else []
    names += ["dns", "internal-proxy", "proxy", "reconciler"]
    return names


def run_all(settings: AgentSettings, options: list[str]) -> int:
    stop_services = "--stop-services-on-exit" in options
    options = [o for o in options if o != "--stop-services-on-exit"]
    if os.geteuid() != 0:
        log.info(
            "not root: the firewall helper is not started (security modes other than open need it)"
        )
    children = [
        Child(name, [sys.executable, "-m", "agent.cli", "agent", name, *options])
        for name in components(settings)
    ]
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for child in children:
        child.start()
    if os.geteuid() == 0 and settings.dns_wiring in ("auto", "hosts"):
        threading.Thread(
            target=_keep_hosts_wired, args=(settings,), name="hosts-wiring", daemon=True
        ).start()
    while True:
        time.sleep(0.2)
        if stopping:  # (children signalled with us, by a terminal's Ctrl-C, are not crashes)
            break
        for child in children:
            _supervise(child)
    _stop(children)
    if stop_services:
        from agent.reconciler.shutdown import stop_recorded_services

        stop_recorded_services(settings)
    _revert_dns_wiring(settings)
    return 0


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
    delay = min(RESTART_CAP_S, 2 ** (child.failures - 1))
    log.warning(
        "%s exited with %s; restarting in %.0f s", child.component, child.popen.returncode, delay
    )
    child.restart_at = now + delay


def _stop(children: list[Child]) -> None:
    # reverse start order: the reconciler first, the proxies after, so routes stay served
    for child in reversed(children):
        if child.popen is not None and child.popen.poll() is None:
            child.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in reversed(children):
        if child.popen is None:
            continue
        try:
            child.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", child.component)
            child.popen.kill()
            child.popen.wait()


def _keep_hosts_wired(settings: AgentSettings) -> None:
    """Keep the resolver wiring in step with the service names.

    The DNS responder drops root right after start-up, so it cannot rewrite /etc/hosts
    when services change; run-all, which stays root, follows the route table and does it.
    """
    import asyncio

    from agent.bus.messages import RouteTable
    from agent.bus.subscriber import RouteFollower
    from agent.dns.wiring import apply_wiring

    def on_table(table: RouteTable) -> None:
        names = [f"{r.service}.{table.suffix}" for r in table.routes]
        try:
            apply_wiring(settings, names, table.suffix)
        except (OSError, ValueError) as exc:
            log.warning("could not update the resolver wiring: %s", exc)

    follower = RouteFollower(
        settings.bus, settings.state_dir / "cache" / "run-all-routes.json", on_table
    )
    asyncio.run(follower.run())


def _revert_dns_wiring(settings: AgentSettings) -> None:
    try:
        from agent.dns.wiring import revert_wiring
    except ImportError:
        return
    try:
        revert_wiring(settings)
    except OSError as exc:
        log.warning("could not revert DNS wiring: %s", exc)

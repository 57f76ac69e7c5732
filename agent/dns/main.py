"""`berth agent dns`: the svc.internal responder process.

Start-up order matters: bind UDP and TCP on `settings.dns_bind` (port 53 needs
CAP_NET_BIND_SERVICE or root), load the last name set from the bus cache and apply the
resolver wiring while still privileged if started as root, then drop root for good,
serve, and say READY to systemd. From then on the bus follower swaps in a new
`AnswerBook` whenever the name set changes, and (hosts mode) rewrites the managed
/etc/hosts block when it is allowed to, logging clearly when it is not.
"""

import asyncio
import contextlib
import logging
import signal
import socket
import time

import uvloop
import zmq

from agent import listenfds
from agent import resolverwiring as wiring
from agent.bus.messages import RouteTable
from agent.bus.subscriber import RouteFollower
from agent.dns.answers import AnswerBook
from agent.dns.privileges import drop_privileges
from agent.dns.server import BookHolder, DnsServer, bind_sockets
from agent.dns.zone import Zone, zone_from_table
from agent.notify import Notifier
from agent.schema.dnsnames import DnsNameError
from agent.settings import AgentSettings, parse_hostport

log = logging.getLogger(__name__)


class _Follower(RouteFollower):
    def load_cache(self) -> None:
        try:
            super().load_cache()
        except OSError as exc:  # e.g. a cache written by root, read after dropping root
            log.warning("cannot read the name cache: %s", exc)


class Responder:
    """Turns route tables into answer books and keeps the resolver wiring in step."""

    def __init__(self, settings: AgentSettings, holder: BookHolder, wiring_mode: str) -> None:
        self.settings = settings
        self.holder = holder
        self.wiring_mode = wiring_mode
        self._serial = 0
        self._last_wiring_error = ""

    def on_table(self, table: RouteTable) -> None:
        self._serial = max(self._serial + 1, int(time.time()))
        try:
            zone, rejected = zone_from_table(table, serial=self._serial)
        except DnsNameError as exc:
            log.error("keeping the previous names: %s", exc)
            return
        if rejected:
            log.warning("not DNS labels, left out of %s: %s", zone.suffix, ", ".join(rejected))
        self.holder.book = AnswerBook(zone)
        log.info("serving %d names under %s: %s", len(zone.services), zone.suffix,
                 " ".join(zone.fqdns()) or "(none)")  # fmt: skip
        self.rewire(zone)

    def rewire(self, zone: Zone) -> None:
        try:
            if self.wiring_mode == wiring.MODE_HOSTS:
                if wiring.apply_hosts(self.settings.hosts_file, zone.fqdns()):
                    log.info("updated the managed block in %s", self.settings.hosts_file)
            elif self.wiring_mode == wiring.MODE_RESOLVED and wiring.apply_resolved(
                self.settings.dns_bind, zone.suffix
            ):
                log.info("routed ~%s to %s via %s", zone.suffix, self.settings.dns_bind,
                         wiring.RESOLVED_DROPIN)  # fmt: skip
            self._last_wiring_error = ""
        except (OSError, wiring.WiringError) as exc:  # mostly PermissionError, once not root
            message = str(exc)
            if message != self._last_wiring_error:  # say it once, not on every update
                self._last_wiring_error = message
                log.error(
                    "cannot update the %s wiring (%s); names under %s will not resolve through "
                    "it until the installer or `berth agent run-all` as root applies it",
                    self.wiring_mode, exc, zone.suffix,
                )  # fmt: skip
        except Exception:  # a wiring bug must not stop the names from updating
            log.exception("unexpected error while updating the %s wiring", self.wiring_mode)


async def _follow(follower: RouteFollower) -> None:
    while True:
        try:
            await follower.run()
        except asyncio.CancelledError:
            raise
        except (zmq.ZMQError, OSError) as exc:
            log.error("bus subscriber failed, retrying in 1 s: %s", exc)
            await asyncio.sleep(1.0)
        except Exception:  # never stop following silently
            log.exception("bus subscriber crashed, restarting in 1 s")
            await asyncio.sleep(1.0)


async def _serve(server: DnsServer, follower: RouteFollower, settings: AgentSettings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    notifier = Notifier()
    tasks = [
        asyncio.create_task(_follow(follower), name="dns-bus-follower"),
        asyncio.create_task(notifier.watchdog_loop(), name="dns-watchdog"),
    ]
    notifier.ready(f"answering on {settings.dns_bind}")
    log.info("answering on %s (udp, tcp)", settings.dns_bind)
    try:
        await stop.wait()
    finally:
        notifier.stopping()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.close()
    log.info("stopped")


def main(settings: AgentSettings) -> int:
    host, port = parse_hostport(settings.dns_bind, "--dns-bind")
    try:
        # sockets held by run-all or systemd outlive this process: a restart drops nothing
        udp = listenfds.take(socket.SOCK_DGRAM, host, port)
        tcp = listenfds.take(socket.SOCK_STREAM, host, port)
        if udp is None or tcp is None:
            if udp is not None or tcp is not None:  # half a pair: bind both afresh
                listenfds.notify_fdstore_remove("dns")
            for held in (udp, tcp):
                if held is not None:
                    held.close()
            udp, tcp = bind_sockets(host, port)
            # systemd keeps copies across restarts and crashes (a no-op elsewhere)
            listenfds.keep("dns", [udp.fileno(), tcp.fileno()])
        else:
            log.info("answering on the inherited sockets for %s", settings.dns_bind)
    except OSError as exc:
        log.error(
            "cannot listen on %s: %s (ports below 1024 need CAP_NET_BIND_SERVICE; is another "
            "DNS server on it? choose another with --dns-bind HOST:PORT)", settings.dns_bind, exc,
        )  # fmt: skip
        return 1
    try:
        mode = wiring.decide_mode(settings)
    except wiring.WiringError as exc:
        log.error("%s", exc)
        return 2
    holder = BookHolder(AnswerBook(Zone()))
    responder = Responder(settings, holder, mode)
    follower = _Follower(settings.bus, settings.cache_file("dns"), responder.on_table)
    follower.load_cache()  # while privileged: serve (and wire) the last names at once
    log.info("resolver wiring: %s", mode)
    drop_privileges()
    server = DnsServer(udp, tcp, holder)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve(server, follower, settings))
    return 0

"""Gapless component restarts under `berth agent run-all` (issue 16).

run-all binds the proxies' and the DNS responder's listening sockets and hands them to
each child (LISTEN_FDS), so they outlive the child: while a proxy restarts, the kernel
queues new connections on the held socket instead of refusing them.

* SIGTERM of each proxy (what `systemctl restart` does) under a request loop of short
  and 1 s requests through both proxies: the old process stops accepting, finishes its
  in-flight requests, run-all starts a new one on the same socket — 0 failed requests.
* kill -9 of each proxy: no connection is ever refused. (Requests the killed process
  was serving at that instant die with its TCP connections: nothing can save those.)
* SIGTERM of the DNS responder under a loop of UDP and TCP queries: none is lost.
"""

import os
import signal
import threading
import time
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
import requests

from tests.integration.faultkit import Agent, child_pid, make_repo, open_site, runall_pid, service
from tests.support.berth import agent_argv, start_agent, wait_until
from tests.support.dirs import world_dir
from tests.support.env import require_root
from tests.support.gitrepo import SLOW_APP
from tests.support.ports import free_port


@dataclass
class Tally:
    ok: int = 0
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class FreshConnections:
    """Each request on a new connection (`Connection: close`), so every request also
    tests that the listening socket accepts; a request is good with status 200 and the
    complete body `<version> <path>`."""

    def __init__(self, targets: list[tuple[str, str, str]]) -> None:
        self.tally = Tally()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=t, daemon=True) for t in targets]

    def _loop(self, base: str, host: str, path: str) -> None:
        headers = {"Connection": "close", "Host": host}
        while not self._stop.is_set():
            refused = False
            try:
                resp = requests.get(base + path, headers=headers, timeout=30)
                good = resp.status_code == 200 and resp.text.partition(" ")[2] == path
                why = f"HTTP {resp.status_code} {resp.text[:60]!r}"
            except requests.ConnectionError as exc:
                good, why = False, f"{exc.__class__.__name__}: {exc}"
                refused = "Connection refused" in str(exc)
            except requests.RequestException as exc:
                good, why = False, f"{exc.__class__.__name__}: {exc}"
            with self._lock:
                if good:
                    self.tally.ok += 1
                else:
                    line = f"{time.strftime('%H:%M:%S')} {host}{path}: {why}"
                    (self.tally.refused if refused else self.tally.failed).append(line)

    def snapshot(self) -> Tally:
        with self._lock:
            return Tally(self.tally.ok, list(self.tally.refused), list(self.tally.failed))

    def __enter__(self) -> "FreshConnections":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=35)


class DnsLoop:
    """Queries app.svc.internal over UDP and TCP in turn; a query is good with an answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        tcp = False
        while not self._stop.is_set():
            q = dns.message.make_query("app.svc.internal", "A")
            try:
                ask = dns.query.tcp if tcp else dns.query.udp
                reply = ask(q, "127.0.0.1", port=self.port, timeout=10)
                if reply.rcode() == dns.rcode.NOERROR and reply.answer:
                    self.ok += 1
                else:
                    self.failed.append(
                        f"{'tcp' if tcp else 'udp'}: {dns.rcode.to_text(reply.rcode())}"
                    )
            except (OSError, EOFError, dns.exception.DNSException) as exc:  # EOF: cut
                self.failed.append(f"{'tcp' if tcp else 'udp'}: {exc!r}")
            tcp = not tcp

    def __enter__(self) -> "DnsLoop":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@pytest.fixture
def workspace():
    require_root()
    with world_dir("berth-gapless-") as d:
        yield d


def _restarted(parent: int, needle: str, old: int) -> int | None:
    pid = child_pid(parent, needle)
    return pid if pid not in (None, old) else None


def _serves(base: str, host: str) -> bool:
    try:
        return requests.get(base + "/x", headers={"Host": host}, timeout=5).ok
    except requests.RequestException:
        return False


def test_restarting_or_killing_a_proxy_refuses_no_connection(xprocess, workspace):
    url = make_repo(workspace / "repo", extra={"app.py": SLOW_APP})
    site = open_site(xprocess, workspace, "gapless", [service("app", url, "/")])
    try:
        token = site.api("POST", f"/stacks/{site.stack_id}/install-tokens", expect=201)["token"]
        agent = Agent("agent-gapless", workspace / "agent-gapless", site.proxy_port)
        internal_port, dns_port = free_port(), free_port()
        argv = agent_argv(
            agent.state_dir,
            site.cp.url,
            token,
            proxy_port=agent.proxy_port,
            dns_port=dns_port,
            internal_bind=f"127.0.0.1:{internal_port}",
        )
        start_agent(xprocess, agent.name, argv)
        site.agents.append(agent)
        wait_until("v1 applied", lambda: site.all_applied(1))
        external = (agent.proxy, f"127.0.0.1:{agent.proxy_port}")
        internal = (f"http://127.0.0.1:{internal_port}", "app.svc.internal")
        wait_until("the internal proxy to serve", lambda: _serves(*internal))
        targets = [(base, host, p) for base, host in (external, internal) for p in ("/a", "/b")]
        targets += [(base, host, "/slow?1") for base, host in (external, internal)]
        parent = runall_pid(xprocess, agent)
        with FreshConnections(targets) as load:
            for needle in ("agent proxy", "agent internal-proxy"):
                old = wait_until(needle, lambda n=needle: child_pid(parent, n))
                start = load.snapshot()
                before = start.ok
                os.kill(old, signal.SIGTERM)  # a graceful restart, as systemctl restart
                new = wait_until(
                    f"{needle} restarted", lambda n=needle, o=old: _restarted(parent, n, o)
                )
                wait_until("requests to flow again", lambda b=before: load.snapshot().ok > b + 20)
                graceful = load.snapshot()
                assert graceful.refused == [], graceful.refused[:10]
                assert graceful.failed == start.failed, graceful.failed[len(start.failed) :]
                os.kill(new, signal.SIGKILL)  # a crash
                wait_until(f"{needle} back", lambda n=needle, o=new: _restarted(parent, n, o))
                wait_until(
                    "requests to flow again", lambda g=graceful.ok: load.snapshot().ok > g + 20
                )
        tally = load.snapshot()
        assert tally.refused == [], tally.refused[:10]
        # only what the killed processes were serving at that instant may have died
        assert len(tally.failed) <= 2 * len(targets), tally.failed[:10]
        assert tally.ok > 100

        # the DNS responder (UDP and TCP): a graceful restart loses no query
        with DnsLoop(dns_port) as dns_loop:
            wait_until("DNS answers", lambda: dns_loop.ok > 5)
            old = wait_until("the dns child", lambda: child_pid(parent, "agent dns"))
            before = dns_loop.ok
            os.kill(old, signal.SIGTERM)
            wait_until("dns restarted", lambda: _restarted(parent, "agent dns", old))
            wait_until("DNS answers again", lambda: dns_loop.ok > before + 20)
        assert dns_loop.failed == [], dns_loop.failed[:10]
    finally:
        site.close()

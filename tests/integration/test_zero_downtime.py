"""Zero downtime under `berth agent run-all` (issue 16, "Cutover by acknowledgement").

A request loop mixing short requests with 1–2 s requests runs through five redeploys of
a service on an agent-assigned port and of one on a fixed port (the same commits deploy
both). The cutover waits for every proxy's acknowledgement and the old release is only
stopped once the proxies report nothing in flight to it, so no request may fail and every
response must be complete. The service's app does not drain on SIGTERM: a request still
open when it is stopped would be cut.
"""

import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from tests.integration.faultkit import make_repo, new_version, open_site, serves, service
from tests.support.berth import wait_until
from tests.support.dirs import world_dir
from tests.support.env import require_root
from tests.support.gitrepo import SLOW_APP
from tests.support.ports import free_port

REDEPLOYS = 5


@dataclass
class Outcome:
    ok: int = 0
    slow_ok: int = 0
    failures: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)


class CheckedLoad:
    """Client threads over keep-alive connections; a request counts as good only with
    status 200 and the complete body the app sends for its path."""

    def __init__(self, base: str, paths: list[str]) -> None:
        self.base = base
        self.out = Outcome()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(p,), daemon=True) for p in paths]

    def _loop(self, path: str) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                resp = session.get(self.base + path, timeout=30)
                version, _, echoed = resp.text.partition(" ")
                good = resp.status_code == 200 and echoed == path
                why = f"HTTP {resp.status_code} {resp.text[:80]!r}"
            except requests.RequestException as exc:
                good, version, why = False, "", f"{exc.__class__.__name__}: {exc}"
            with self._lock:
                if good:
                    self.out.ok += 1
                    self.out.slow_ok += "slow" in path
                    self.out.versions.add(version)
                else:
                    self.out.failures.append(f"{time.strftime('%H:%M:%S')} {path}: {why}")
        session.close()

    def __enter__(self) -> "CheckedLoad":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=35)


@pytest.fixture
def workspace():
    require_root()  # services run as an unprivileged user, agents in private mount namespaces
    with world_dir("berth-zero-") as d:
        yield d


def test_redeploys_under_load_lose_no_request(xprocess, workspace):
    repo = workspace / "repo"
    url = make_repo(repo, extra={"app.py": SLOW_APP})
    site = open_site(
        xprocess,
        workspace,
        "zero",
        [
            service("app", url, "/", drain_timeout_s=20),
            service("fixed", url, "/fixed", port=free_port(), drain_timeout_s=20),
        ],
    )
    try:
        agent = site.add_agent("agent-zero")
        wait_until("v1 applied", lambda: site.all_applied(1))
        paths = ["/a", "/b", "/fixed/a", "/fixed/b"]  # short
        paths += ["/slow?1", "/slow?1.5", "/slow?2", "/fixed/slow?1", "/fixed/slow?2"]
        with CheckedLoad(agent.proxy, paths) as load:
            for n in range(2, 2 + REDEPLOYS):
                new_version(repo, f"v{n}")
                assert site.api("POST", f"/stacks/{site.stack_id}/refresh")["changed"]
                wait_until(f"v{n} applied", lambda n=n: site.all_applied(n), timeout_s=120)
                assert serves(agent.proxy + "/x", f"v{n}")
                assert serves(agent.proxy + "/fixed/x", f"v{n}")
        out = load.out
        assert out.failures == [], out.failures[:10]
        assert out.slow_ok > 20 and out.ok > 100
        assert {f"v{n}" for n in range(1, 2 + REDEPLOYS)} <= out.versions
        drains = [e for e in site.events("deploy") if "drained in" in e["message"]]
        assert len(drains) >= 2 * REDEPLOYS, [e["message"] for e in site.events("deploy")]
    finally:
        site.close()

"""Zero downtime on a real systemd server under a request loop (issue 16), end to end.

The install test's world (a booted bookworm container reaching a control plane and a git
daemon over a veth; its fixture is shared), one stack of two services from one repository:
`api` on an agent-assigned port (path /api) and `web` on a fixed port (path /), whose
/via-api calls api through http://api.svc.internal (DNS responder + internal proxy).

From the host, a loop of fresh connections mixes short requests and 1-2 s requests; a
response is good with status 200 and the complete body `<version> <path>`. Through it:

1. 5 commits = 5 redeploys of each service (agent-assigned and fixed port);
2. `systemctl restart` of berth-proxy, berth-internal-proxy and berth-dns;
3. `berth agent upgrade` to a rebuilt wheel with a higher version (restarts every unit);

0 failed requests, and events for each step. Then `kill -9` of each proxy: no connection
refused, and the proxy back on the socket systemd kept (the requests in flight in the
killed process itself die with it: the one loss nothing can prevent).
"""

import tomllib
from pathlib import Path

import pytest
import requests

from controlplane.demo import make_example_repo
from tests.installer.machine import Server
from tests.installer.test_install_e2e import ControlPlane, all_active, debug, main_pid, sh, world
from tests.installer.test_upgrade_e2e import publish
from tests.integration.test_gapless_restarts import FreshConnections, Tally
from tests.support.berth import wait_until
from tests.support.container import REPO

pytestmark = [pytest.mark.root, pytest.mark.slow]
__all__ = ["world"]  # the install test's fixture: the container and the control plane

BASE = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
PROXY_PORT = 8080
WEB_PORT = 9100
COMPONENTS = ("berth-proxy.service", "berth-internal-proxy.service", "berth-dns.service")
PROXIES = COMPONENTS[:2]
# short and long requests through the external proxy, to both services and through the
# internal proxy (web's /via-api)
PATHS = ("/api/x", "/api/slow?1.5", "/x", "/slow?1", "/via-api", "/slow?2")

APP = """\
import os, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "VERSION")).read().strip()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if "/slow?" in self.path:
            time.sleep(float(self.path.rsplit("?", 1)[1]))
        if self.path == "/via-api":
            try:
                url = os.environ["SERVICE_API_URL"] + "/api/x"
                with urllib.request.urlopen(url, timeout=20) as resp:
                    body = resp.read().decode()
                if not body.endswith(" /api/x"):
                    return self.answer(502, "api answered " + body)
            except OSError as exc:
                return self.answer(502, "api: " + str(exc))
        self.answer(200, VERSION + " " + self.path)

    def answer(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def stack_spec(repo_url: str) -> dict:  # type: ignore[type-arg]
    common = {
        "repo": repo_url,
        "ref": "main",
        "build": "true",
        "run": "python3 app.py",
        "env": {},
        "health": {"path": "/healthz", "interval_s": 2, "timeout_s": 1, "retries": 3},
    }
    return {
        "name": "gapless",
        "security_mode": "open",
        "poll_interval_s": 1,
        "proxy": {"port": PROXY_PORT},
        "services": [
            {"name": "api", "path": "/api", **common},
            {"name": "web", "path": "/", "port": WEB_PORT, **common},
        ],
    }


def commit_version(cp: ControlPlane, src: Path, version: str) -> None:
    src.mkdir(exist_ok=True)
    (src / "app.py").write_text(APP)
    (src / "VERSION").write_text(version + "\n")
    assert cp.repos is not None
    make_example_repo(cp.repos / "example", src=src)


def version_served(base: str, path: str) -> str:
    resp = requests.get(base + path, headers={"Connection": "close"}, timeout=10)
    return resp.text.partition(" ")[0] if resp.status_code == 200 else ""


def events(cp: ControlPlane, stack_id: str, kind: str) -> list[str]:
    got = cp.api("GET", f"/stacks/{stack_id}/events?type={kind}&limit=500")["events"]
    return [f"{e.get('service') or ''}: {e['message']}" for e in got]


def count(cp: ControlPlane, stack_id: str, kind: str, needle: str) -> int:
    return sum(needle in line for line in events(cp, stack_id, kind))


def refused(t: Tally) -> list[str]:
    """Refused connections, at the host's client or at web's call to the internal proxy."""
    return t.refused + [line for line in t.failed if "refused" in line.lower()]


def restarted(server: Server, unit: str, before: int) -> bool:
    now = main_pid(server, unit)
    state = server.exec(["systemctl", "is-active", unit]).stdout.strip()
    return now not in (0, before) and state == "active"


def took_its_socket_back(server: Server, unit: str) -> bool:
    """The unit's current process started on the socket systemd kept."""
    pid = main_pid(server, unit)
    log = server.exec(["journalctl", "--no-pager", "-o", "cat", f"_PID={pid}"]).stdout
    return "inherited socket" in log


def more_served(loop: FreshConnections, n: int = 20) -> None:
    """Wait for `n` more good responses: traffic really went through the last step."""
    before = loop.snapshot().ok
    wait_until(f"{n} more good responses", lambda: loop.snapshot().ok >= before + n, 60)


def test_redeploys_restarts_upgrade_and_kill9_lose_nothing(
    world: tuple[Server, ControlPlane, str], tmp_path: Path
) -> None:
    server, cp, repo_url = world
    src = tmp_path / "app"
    commit_version(cp, src, "v0")
    stack = cp.api("POST", "/stacks", json=stack_spec(repo_url))
    sid = stack["id"]
    token = cp.api("POST", f"/stacks/{sid}/install-tokens")["token"]
    done = sh(server, f"curl -fsSL {cp.url}/install.sh | sh -s -- --token {token}", timeout=400)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{debug(server)}"
    base = f"http://{server.ip}:{PROXY_PORT}"
    host = f"{server.ip}:{PROXY_PORT}"
    wait_until("v0 served", lambda: version_served(base, "/via-api") == "v0", 180)
    for unit in COMPONENTS:
        assert server.exec(["systemctl", "show", "-p", "NFileDescriptorStore", "--value",
                            unit]).stdout.strip() != "0", unit  # fmt: skip

    with FreshConnections([(base, host, p) for p in PATHS]) as loop:
        more_served(loop)
        # --- 1. five redeploys: api on an agent-assigned port, web on a fixed one -------
        for i in range(1, 6):
            commit_version(cp, src, f"v{i}")
            cp.api("POST", f"/stacks/{sid}/refresh")  # as a push webhook would
            for path in ("/api/x", "/x"):
                wait_until(f"v{i} at {path}", lambda p=path, v=f"v{i}": version_served(base, p) == v, 120)  # fmt: skip
            more_served(loop)
        for service in ("api", "web"):
            wait_until(f"5 drains of {service} reported",
                       lambda s=service: count(cp, sid, "deploy", f"{s}: old release") >= 5, 60)  # fmt: skip
        # --- 2. systemctl restart of each component ----------------------------------
        for unit in COMPONENTS:
            before = main_pid(server, unit)
            server.exec(["systemctl", "restart", unit], check=True, timeout=90)
            wait_until(f"{unit} restarted", lambda u=unit, b=before: restarted(server, u, b), 60)
            assert took_its_socket_back(server, unit), debug(server)
            more_served(loop)
        # --- 3. an agent upgrade to a higher version ----------------------------------
        newer = f"{BASE}.post1"
        publish(cp, tmp_path, newer)
        up = sh(server, "/opt/berth/venv/bin/berth agent upgrade", timeout=600)
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}\n{debug(server)}"
        assert f"upgraded from {BASE} to {newer}" in up.stderr, up.stderr
        assert all_active(server), debug(server)
        more_served(loop)
    tally = loop.snapshot()
    assert tally.failed == [] and tally.refused == [], f"{tally}\n{debug(server)}"
    assert tally.ok > 100, tally
    wait_until("the upgrade's event",
               lambda: count(cp, sid, "upgrade", f"upgraded from {BASE} to {newer}") >= 1, 60)  # fmt: skip
    wait_until(
        "the restarted proxies' events", lambda: count(cp, sid, "proxy", " is live") >= 2, 60
    )

    # --- 4. kill -9 of each proxy: nothing refused, the proxy back ---------------------
    with FreshConnections([(base, host, p) for p in PATHS]) as loop:
        more_served(loop)
        for unit in PROXIES:
            before = main_pid(server, unit)
            server.exec(["systemctl", "kill", "--kill-whom=main", "-s", "KILL", unit], check=True)
            wait_until(f"{unit} back", lambda u=unit, b=before: restarted(server, u, b), 60)
            assert took_its_socket_back(server, unit), debug(server)
            more_served(loop)
    tally = loop.snapshot()
    assert refused(tally) == [], f"{tally}\n{debug(server)}"
    # only the requests in flight in the killed processes themselves may be lost
    assert len(tally.failed) <= 2 * len(PATHS), tally

"""Issue 15, items 1, 2, 4 and 6, under `berth agent run-all` as root (the demo's mode): the
services run as a uid of their own, cannot rewrite the proxies' route cache, reach the
bus, or read agent state and mirrors; the install token is on no command line; and a
forged route cache never outranks the live reconciler."""

import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from agent.bus.messages import Route, RouteTable
from controlplane.demo import example_stack, make_example_repo
from tests.integration.faultkit import child_pid
from tests.support.berth import Api, agent_argv, start_agent, start_controlplane, stop, wait_until
from tests.support.dirs import world_dir
from tests.support.env import require_root
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]

# Run as root, then become `uid:gid` (the interpreter under /root is not readable by other
# users: switch after loading it) and try what an attacker with that identity would.
AS_USER = """
import json, os, socket, sys
uid, gid, cache, bus = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
tried = {}
def attempt(name, fn):
    try:
        fn()
        tried[name] = "ok"
    except OSError as exc:
        tried[name] = type(exc).__name__
attempt("rewrite cache", lambda: open(cache, "r+b").close())  # opening to write is enough
def replace():
    tmp = os.path.join(os.path.dirname(cache), ".attacker.tmp")
    open(tmp, "wb").close()
    os.unlink(tmp)
attempt("replace cache", replace)
def connect():
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(bus)
attempt("connect bus", connect)
print(json.dumps(tried))
"""


class Attacker(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"pwned"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def workspace():
    with world_dir("berth-priv-") as d:
        yield d


def as_user(user: str, cache: Path, bus: Path) -> dict[str, str]:
    entry = pwd.getpwnam(user)
    out = subprocess.run(
        [sys.executable, "-c", AS_USER, str(entry.pw_uid), str(entry.pw_gid), str(cache), str(bus)],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def uid_of(pid: int) -> int:
    return os.stat(f"/proc/{pid}").st_uid


def test_services_are_separated_from_berth_under_run_all(xprocess, workspace):
    require_root()
    repo_url = make_example_repo(workspace / "example-repo")
    cp = start_controlplane(xprocess, "cp-priv", workspace, free_port())
    api = Api(cp)
    name = "agent-priv"
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=attacker.serve_forever, name="attacker", daemon=True).start()
    state = workspace / "agent"
    try:
        proxy_port = free_port()
        stack = api("POST", "/stacks", expect=201,
                    json=example_stack(repo_url, poll_interval_s=1, proxy_port=proxy_port))  # fmt: skip
        token = api("POST", f"/stacks/{stack['id']}/install-tokens", expect=201)["token"]
        start_agent(xprocess, name, agent_argv(state, cp.url, token, proxy_port=proxy_port,
                    dns_port=free_port(), internal_bind=f"127.0.0.1:{free_port()}"))  # fmt: skip

        def instance():
            items = api("GET", f"/stacks/{stack['id']}/instances")["instances"]
            return items[0] if items and items[0]["state"] == "applied" else None

        inst = wait_until("the stack to be applied", instance)
        front = f"http://127.0.0.1:{proxy_port}/"
        real = wait_until("web to answer", lambda: requests.get(front, timeout=5).text)
        assert "pwned" not in real

        # 15.1: services run as a uid of their own, distinct from every Berth process
        runall = int(xprocess.getinfo(name).pid)
        children = [p for p in (child_pid(runall, f"agent {c} ") for c in
                    ("reconciler", "proxy", "internal-proxy", "dns", "firewall")) if p]  # fmt: skip
        assert len(children) == 5
        berth_uids = {uid_of(p) for p in [runall, *children]}
        service_uids = {uid_of(s["pid"]) for s in inst["services"]}
        assert service_uids == {pwd.getpwnam("berth-svc").pw_uid}
        assert not service_uids & berth_uids, (service_uids, berth_uids)

        # 15.6: the install token is on no command line
        for entry in Path("/proc").iterdir():
            try:
                assert token.encode() not in (entry / "cmdline").read_bytes(), entry
            except (FileNotFoundError, ProcessLookupError, NotADirectoryError, PermissionError):
                pass

        # 15.1 and 15.6, as the services' user: no cache write, no bus
        cache = state / "cache" / "proxy-routes.json"
        bus = state / "run" / "bus-snapshot.sock"
        tried = as_user("berth-svc", cache, bus)
        assert tried == {"rewrite cache": "PermissionError", "replace cache": "PermissionError",
                         "connect bus": "PermissionError"}, tried  # fmt: skip
        assert as_user("berth-proxy", cache, bus)["connect bus"] == "ok"  # the proxies may
        assert stat.S_IMODE(bus.stat().st_mode) == 0o660

        # 15.2 and 15.4: agent state and mirrors are the reconciler's alone
        for suffix in ("", "-wal", "-shm"):
            db = state / f"agent.sqlite3{suffix}"
            assert stat.S_IMODE(db.stat().st_mode) == 0o600, db
        assert stat.S_IMODE((state / "git").stat().st_mode) == 0o700

        # 15.1: a forged cache (written past the permissions, as root here) with an epoch
        # from the future is never served; one with a huge sequence gives way to the live
        # reconciler once it answers, and is overwritten by it
        live = RouteTable.from_json(cache.read_bytes())
        attacker_port = attacker.server_address[1]
        forged_routes = tuple(
            Route(r.service, attacker_port, r.path) if r.path == "/" else r for r in live.routes
        )
        future = RouteTable((live.version[0] + 10**15, 1), live.suffix, forged_routes,
                            live.external_bind)  # fmt: skip
        later = RouteTable((live.version[0], live.version[1] + 10**6), live.suffix,
                           forged_routes, live.external_bind)  # fmt: skip
        for forged, strict in ((future, True), (later, False)):
            cache.write_bytes(forged.to_json())
            old = child_pid(runall, "agent proxy ")
            assert old is not None
            os.kill(old, signal.SIGKILL)
            seen: list[str] = []

            def serves_real() -> bool:
                new = child_pid(runall, "agent proxy ")
                if new in (None, old):  # noqa: B023
                    return False
                seen.append(requests.get(front, timeout=5).text)  # noqa: B023
                return seen[-3:] == [real] * 3  # noqa: B023

            wait_until("the restarted proxy to serve the live routes", serves_real)
            if strict:
                assert "pwned" not in seen, seen
            assert RouteTable.from_json(cache.read_bytes()).routes == live.routes
    finally:
        attacker.shutdown()
        stop(xprocess, name)
        stop(xprocess, cp.name)

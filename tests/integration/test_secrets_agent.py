"""A secret with a real agent: the control plane and `berth agent reconciler` as real
processes, a real git repository and real builds. The value reaches the service's
environment (and a change redeploys it), while every build and run log line and event the
agent ships carries `[secret:NAME]` instead, in all the forms the service prints it; the
local log keeps what the service wrote, 0600 to the services user, and the agent's store
is 0600."""

import base64
import os
import sqlite3
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from agent.reconciler.shutdown import stop_recorded_services
from agent.settings import AgentSettings
from controlplane.dburl import parse_db_url
from tests.support.berth import Api, start_controlplane, stop, wait_until
from tests.support.dirs import world_dir
from tests.support.gitrepo import commit_files, init_repo
from tests.support.ports import free_port
from tests.support.procs import terminate

APP = """
import base64, os, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

value = os.environ.get("DB_URL", "")
print("plain", value, flush=True)
print("url", urllib.parse.quote(value, safe=""), flush=True)
print("b64", base64.b64encode(value.encode()).decode(), flush=True)


class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = (value if self.path == "/env" else "ok").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


@pytest.fixture
def workspace():
    with world_dir("berth-secrets-") as d:
        try:
            yield d
        finally:
            if (d / "agent" / "agent.sqlite3").exists():
                stop_recorded_services(AgentSettings(state_dir=d / "agent", run_dir=d / "run"))


def test_a_secret_reaches_the_service_and_never_its_shipped_logs(xprocess, workspace: Path):
    v1, v2 = (f"pg://app:{uuid.uuid4().hex}@db/x?a=1&b=/" for _ in range(2))
    repo = init_repo(workspace / "repo")
    commit_files(repo, {"app.py": APP}, "app")
    cp = start_controlplane(xprocess, "cp-secrets", workspace, free_port())
    api = Api(cp)
    port = free_port()
    secret = {"DB_URL": {"secret": True, "value": v1}}
    body = {
        "name": "secrets", "security_mode": "open", "poll_interval_s": 0.5,
        "proxy": {"port": free_port()},
        "services": [
            {"name": "web", "repo": f"file://{repo}", "ref": "main", "port": port, "path": "/",
             "build": 'echo "building with $DB_URL"', "run": "python3 app.py", "env": secret,
             "health": {"path": "/healthz", "interval_s": 0.5, "timeout_s": 1, "retries": 3}},
            {"name": "bad", "repo": f"file://{repo}", "ref": "main", "run": "sleep 60",
             "build": 'echo "cannot build with $DB_URL"; exit 1', "env": secret},
        ],
    }  # fmt: skip
    stack = api("POST", "/stacks", expect=201, json=body)
    token = api("POST", f"/stacks/{stack['id']}/install-tokens", expect=201)["token"]
    state = workspace / "agent"
    log = (workspace / "reconciler.log").open("wb")
    argv = [sys.executable, "-m", "agent.cli", "agent", "reconciler", "--control-plane", cp.url,
            "--state-dir", str(state), "--run-dir", str(workspace / "run"),
            "--allow-file-repos", str(workspace), "--stop-services-on-exit"]  # fmt: skip
    env = {**os.environ, "BERTH_INSTALL_TOKEN": token}  # never on argv
    agent = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)  # fmt: skip
    db = Path(parse_db_url(cp.db).sync_url.database or "")
    try:
        env_of = lambda: requests.get(f"http://127.0.0.1:{port}/env", timeout=2).text  # noqa: E731
        wait_until("the service to run with the secret", lambda: env_of() == v1, 180)

        def shipped(stream: str) -> str:
            with sqlite3.connect(db) as conn:
                rows = conn.execute(
                    "SELECT data FROM log_chunks WHERE stream = ? ORDER BY seq", (stream,)
                )
                return "".join(r[0] for r in rows)

        want = ("plain [secret:DB_URL]", "url [secret:DB_URL]", "b64 [secret:DB_URL]")
        wait_until("the run log to be shipped", lambda: all(w in shipped("run") for w in want))
        wait_until("the build logs to be shipped", lambda: "building with [secret:DB_URL]" in shipped("build")
                   and "cannot build with [secret:DB_URL]" in shipped("build"))  # fmt: skip

        def failed_build() -> list:
            events = api("GET", f"/stacks/{stack['id']}/events?service=bad")["events"]
            return [e for e in events if "[secret:DB_URL]" in str(e.get("log_tail", ""))]

        wait_until("the failed build's event", failed_build)

        # the service's own log file keeps what it wrote, readable by its user alone
        local = state / "logs" / "web" / "service.log"
        assert f"plain {v1}" in local.read_text()
        st = local.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600
        if os.geteuid() == 0:
            import pwd

            assert st.st_uid == pwd.getpwnam("berth-svc").pw_uid
        assert stat.S_IMODE((state / "agent.sqlite3").stat().st_mode) == 0o600

        # a changed secret redeploys the service that uses it
        got = api("GET", f"/stacks/{stack['id']}")
        for svc in got["services"]:
            svc["env"]["DB_URL"] = {"secret": True, "value": v2}
        assert api("PUT", f"/stacks/{stack['id']}", json=got)["changed"] is True
        wait_until("the service to restart with the new value", lambda: env_of() == v2, 180)
        wait_until("the new value's output shipped redacted",
                   lambda: shipped("run").count("plain [secret:DB_URL]") >= 2)  # fmt: skip

        # a restarted agent ships the log's recent past again, old value included: it
        # remembers the values it redacted (in its 0600 store)
        terminate(agent, 30)
        before = shipped("run").count("plain [secret:DB_URL]")
        agent = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)  # fmt: skip
        wait_until("the log's backlog shipped again",
                   lambda: shipped("run").count("plain [secret:DB_URL]") >= before + 2)  # fmt: skip
        wait_until("the service to run again", lambda: env_of() == v2, 180)

        seen = [
            requests.get(f"{cp.url}/api/v1{path}", headers=api.http.headers, timeout=10).text
            for path in (f"/stacks/{stack['id']}", f"/stacks/{stack['id']}/events",
                         f"/stacks/{stack['id']}/instances", f"/stacks/{stack['id']}/desired-state")
        ]  # fmt: skip
        stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
        for value in (v1, v2):
            forms = (value, quote(value, safe=""), base64.b64encode(value.encode()).decode())
            for form in forms:
                assert form.encode() not in stored
                assert all(form not in text for text in seen)
    finally:
        terminate(agent, 30)
        log.close()
        stop(xprocess, "cp-secrets")

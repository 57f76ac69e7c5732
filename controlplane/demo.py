"""`berth demo` (`make demo`): Berth's main job on one machine.

Starts a control plane on embedded SQLite, turns the bundled `examples/app` into a local
git repository, creates the example stack and an install token, starts a local agent in
security mode `open` with its external proxy on 127.0.0.1:8080, waits until the stack is
applied and prints the URLs. Ctrl-C stops every process it started. State is kept in
/var/lib/berth-demo (root) or ~/.local/state/berth-demo, so running it again reuses it.

As root the agent runs in a private mount namespace with its own /etc/hosts, so services
resolve <service>.svc.internal without touching the machine's resolver.
"""

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from agent.settings import TOKEN_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SRC = REPO_ROOT / "examples" / "app"
STACK_NAME = "example"
DEMO_USER = "admin"
BERTH = [sys.executable, "-m", "agent.cli"]


def default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/berth-demo")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "berth-demo"


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Berth demo",
        "GIT_AUTHOR_EMAIL": "demo@berth.invalid",
        "GIT_COMMITTER_NAME": "Berth demo",
        "GIT_COMMITTER_EMAIL": "demo@berth.invalid",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_example_repo(dest: Path, src: Path = EXAMPLE_SRC) -> str:
    """Copy the example app into a git repository at `dest` (commit only when it changed)."""
    if not (dest / ".git").exists():
        dest.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "-b", "main", cwd=dest)
    for item in dest.iterdir():
        if item.name != ".git":
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    git("add", "-A", cwd=dest)
    if git("status", "--porcelain", cwd=dest):
        git("commit", "-q", "-m", "Example stack", cwd=dest)
    return f"file://{dest}"


def example_stack(
    repo_url: str, *, name: str = STACK_NAME, poll_interval_s: float = 2.0, proxy_port: int = 8080
) -> dict[str, Any]:
    health = {
        "path": "/healthz",
        "interval_s": 2,
        "timeout_s": 1,
        "retries": 3,
        "start_period_s": 0,
    }
    common = {
        "repo": repo_url,
        "ref": "main",
        "build": "python3 build.py",
        "env": {},
        "health": health,
    }
    return {
        "name": name,
        "security_mode": "open",
        "poll_interval_s": poll_interval_s,
        "proxy": {"port": proxy_port},
        "services": [
            {"name": "api", "run": "python3 api/app.py", "path": "/api", **common},
            {"name": "web", "run": "python3 web/app.py", "path": "/", **common},
        ],
    }


def private_hosts_prefix(state_dir: Path) -> list[str]:
    """Run a command in a private mount namespace whose /etc/hosts is our own copy."""
    hosts = state_dir / "hosts"
    if not hosts.exists():
        shutil.copyfile("/etc/hosts", hosts)
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(hosts)]


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.http.request(method, self.base + "/api/v1" + path, timeout=60, **kw)
        if resp.status_code >= 400:
            raise SystemExit(f"{method} {path} failed: HTTP {resp.status_code}: {resp.text}")
        return resp.json() if resp.content else None

    def upsert_stack(self, body: dict[str, Any]) -> dict[str, Any]:
        stacks = self.call("GET", "/stacks")
        items = stacks.get("stacks", stacks) if isinstance(stacks, dict) else stacks
        for s in items:
            if s["name"] == body["name"]:
                return self.call("PUT", f"/stacks/{s['id']}", json=body)
        return self.call("POST", "/stacks", json=body)


def wait_for(
    what: str, check: Any, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(
                f"{what}: the process exited with {proc.returncode}; see the log above"
            )
        try:
            result = check()
            if result:
                return result
        except (requests.RequestException, KeyError, ValueError) as exc:
            last = exc
        time.sleep(0.3)
    raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what} ({last})")


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="berth demo", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=default_state_dir())
    parser.add_argument("--control-plane-port", type=int, default=8000)
    parser.add_argument("--proxy-port", type=int, default=8080)
    parser.add_argument("--no-wait", action="store_true", help="exit once applied (for tests)")
    return parser.parse_args(argv)


def _state_dir(args: argparse.Namespace) -> Path:
    state: Path = args.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        state.chmod(0o755)  # services run as an unprivileged user and must reach their releases
    for port in (args.control_plane_port, args.proxy_port):
        if not port_free("127.0.0.1", port):
            raise SystemExit(
                f"port {port} on 127.0.0.1 is in use; stop what holds it or pass --control-plane-port/--proxy-port"
            )
    return state


def _prepare_database(db: str) -> tuple[str, str]:
    """Migrate with the real commands a user runs; (admin token, fresh dashboard password)."""
    subprocess.run([*BERTH, "controlplane", "migrate", "--db", db], check=True)
    admin = subprocess.run(
        [*BERTH, "controlplane", "token", "create", "--name", "demo", "--db", db],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    from controlplane.dashboard.cli import ensure_user

    # a fresh password each run: the demo's state dir outlives the printed one
    password = secrets.token_urlsafe(12)
    ensure_user(db, DEMO_USER, password)
    return admin, password


def _control_plane_command(db: str, port: int, cp_url: str, state: Path) -> list[str]:
    return [
        *BERTH, "controlplane", "serve", "--db", db, "--bind", f"127.0.0.1:{port}",
        "--public-url", cp_url,
        "--allow-file-repos", str(state),  # the demo's own example repository, nothing else
    ]  # fmt: skip


def _agent_command(cp_url: str, state: Path, proxy_port: int) -> list[str]:
    cmd = [
        *BERTH, "agent", "run-all", "--control-plane", cp_url,
        "--state-dir", str(state / "agent"), "--proxy-bind", f"127.0.0.1:{proxy_port}",
        "--stop-services-on-exit", "--allow-file-repos", str(state),
    ]  # fmt: skip
    if os.geteuid() == 0:
        return [*private_hosts_prefix(state), *cmd, "--dns-wiring", "hosts"]
    print(
        "!!  not root: the internal proxy cannot bind 127.0.0.1:80, so http://<service>.svc.internal"
        " will not resolve for services; run `sudo make demo` for the full picture",
        flush=True,
    )
    return [*cmd, "--dns-wiring", "none", "--internal-bind", "127.0.0.1:0",
            "--dns-bind", "127.0.0.1:0"]  # fmt: skip


def _applied(api: Api, stack: dict[str, Any], since: datetime) -> bool:
    instances = api.call("GET", f"/stacks/{stack['id']}/instances")
    items = instances.get("instances", instances) if isinstance(instances, dict) else instances
    # a re-run finds the previous run's last report ("applied") in the database:
    # only a heartbeat from the agent just started counts
    return any(
        i.get("applied_version") == stack["version"]
        and i.get("state") == "applied"
        and datetime.fromisoformat(i["last_seen"]) >= since
        for i in items
        if i.get("last_seen")
    )


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    # a second Ctrl-C (the terminal signals every process of the group) must not cut
    # the orderly stop short and leave processes behind
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def _ready_text(cp_url: str, proxy_port: int, admin: str, password: str, state: Path,
                stack_id: str) -> str:  # fmt: skip
    return f"""
Berth demo is running.

  Dashboard:   {cp_url}/   (log in as {DEMO_USER} / {password})
  App (web):   http://127.0.0.1:{proxy_port}/
  App (api):   http://127.0.0.1:{proxy_port}/api/hello
  Admin token: {admin}
  API:         curl -H 'Authorization: Bearer {admin}' {cp_url}/api/v1/stacks

Edit {state / "example-repo"}, commit, then
  curl -X POST -H 'Authorization: Bearer {admin}' {cp_url}/api/v1/stacks/{stack_id}/refresh
to deploy the new commit. Press Ctrl-C to stop everything.
"""


def _run(args: argparse.Namespace, state: Path, procs: list[subprocess.Popen[bytes]]) -> int:
    db = f"sqlite:///{state / 'controlplane.sqlite3'}"
    print(f"==> state in {state}", flush=True)
    repo_url = make_example_repo(state / "example-repo")
    admin, password = _prepare_database(db)
    cp_url = f"http://127.0.0.1:{args.control_plane_port}"
    print("==> starting the control plane", flush=True)
    procs.append(
        subprocess.Popen(_control_plane_command(db, args.control_plane_port, cp_url, state))
    )
    api = Api(cp_url, admin)
    wait_for(
        "the control plane",
        lambda: api.http.get(cp_url + "/api/v1/stacks", timeout=2).ok,
        30,
        procs[0],
    )
    stack = api.upsert_stack(example_stack(repo_url, proxy_port=args.proxy_port))
    print(f"==> stack {stack['name']} ({stack['id']}) at version {stack['version']}", flush=True)
    token = api.call("POST", f"/stacks/{stack['id']}/install-tokens")["token"]
    agent_cmd = _agent_command(cp_url, state, args.proxy_port)
    print("==> starting the agent (reconciler, proxies, DNS)", flush=True)
    agent_started = datetime.now(UTC)
    # the token goes in the environment: a command line is visible to every local user
    procs.append(subprocess.Popen(agent_cmd, env={**os.environ, TOKEN_ENV: token}))
    print("==> waiting for the stack to be built, started and healthy", flush=True)
    wait_for("the stack to be applied", lambda: _applied(api, stack, agent_started), 300, procs[1])
    print(_ready_text(cp_url, args.proxy_port, admin, password, state, stack["id"]), flush=True)
    if args.no_wait:
        return 0
    while all(p.poll() is None for p in procs):
        time.sleep(0.5)
    print("a Berth process exited unexpectedly; stopping the demo", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    args = _parse_args(argv)
    state = _state_dir(args)
    procs: list[subprocess.Popen[bytes]] = []
    # SIGINT may be ignored when started from a script's background job: take it explicitly
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _run(args, state, procs)
    except KeyboardInterrupt:
        print("\n==> stopping", flush=True)
        return 0
    finally:
        _stop_all(procs)

"""Berth's own processes for integration tests, started with pytest-xprocess.

`start_controlplane` and `start_agent` run the real `berth` commands as separate
processes; `Api` is a small client for the user API; `stop` ends a process by its PID
(SIGTERM first, so the agent's run-all stops the services it started).
"""

import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from xprocess import ProcessStarter

from controlplane.demo import private_hosts_prefix
from tests.support.controlplane import create_admin_token, migrate

BERTH = [sys.executable, "-m", "agent.cli"]


@dataclass
class ControlPlane:
    url: str
    db: str
    admin_token: str
    name: str


def start_controlplane(xprocess: Any, name: str, workdir: Path, port: int) -> ControlPlane:
    db = f"sqlite:///{workdir / 'controlplane.sqlite3'}"
    migrate(db)
    token = create_admin_token(db, "tests")
    url = f"http://127.0.0.1:{port}"

    class Starter(ProcessStarter):  # type: ignore[misc]
        pattern = "serving on"  # Berth's own line, whichever ASGI server runs it
        args = [
            *BERTH,
            "controlplane",
            "serve",
            "--db",
            db,
            "--bind",
            f"127.0.0.1:{port}",
            "--public-url",
            url,
            "--allow-file-repos",  # the tests' repositories live under the temp directory
            tempfile.gettempdir(),
        ]
        timeout = 60
        terminate_on_interrupt = True

        def startup_check(self) -> bool:
            def answers() -> bool:
                return requests.get(url + "/healthz", timeout=2).ok

            return bool(wait_until("the control plane to answer", answers, 30))

    _start_fresh(xprocess, name, Starter)
    return ControlPlane(url, db, token, name)


def start_agent(xprocess: Any, name: str, argv: list[str]) -> None:
    """Start `argv` (an `agent_argv` command line) under xprocess, once it runs them all."""

    class Starter(ProcessStarter):  # type: ignore[misc]
        pattern = "started reconciler"
        args = argv
        timeout = 60
        terminate_on_interrupt = True

    _start_fresh(xprocess, name, Starter)


def agent_argv(
    state_dir: Path,
    cp_url: str,
    token: str,
    *,
    proxy_port: int,
    dns_port: int,
    internal_bind: str = "127.0.0.1:80",
) -> list[str]:
    """A test's `berth agent run-all` (creates its state directory): as root in a private
    mount namespace with its own /etc/hosts (hosts wiring)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    token_file = state_dir / "install-token"  # never on a command line (issue 15.6)
    token_file.touch(mode=0o600)
    token_file.write_text(token)
    argv = [
        *BERTH,
        "agent",
        "run-all",
        "--control-plane",
        cp_url,
        "--token-file",
        str(token_file),
        "--state-dir",
        str(state_dir),
        "--proxy-bind",
        f"127.0.0.1:{proxy_port}",
        "--internal-bind",
        internal_bind,
        "--dns-bind",
        f"127.0.0.1:{dns_port}",
        "--dns-wiring",
        "hosts",
        "--stop-services-on-exit",
        "--allow-file-repos",
        tempfile.gettempdir(),
    ]
    if os.geteuid() == 0:
        argv = [*private_hosts_prefix(state_dir), *argv]
    return argv


def _start_fresh(xprocess: Any, name: str, starter: type) -> None:
    """Start `name` anew. xprocess.ensure would reuse a process of that name left by an
    earlier, interrupted run (ours would then never start); and a failed start is cleaned
    up here, since the caller's own cleanup never runs."""
    xprocess.getinfo(name).terminate()
    try:
        xprocess.ensure(name, starter)
    except BaseException:
        xprocess.getinfo(name).terminate()
        raise


def stop(xprocess: Any, name: str, timeout_s: float = 30) -> None:
    info = xprocess.getinfo(name)
    if info.isrunning():
        os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while info.isrunning() and time.monotonic() < deadline:
            time.sleep(0.1)
    info.terminate()


class Api:
    def __init__(self, cp: ControlPlane) -> None:
        self.base = cp.url + "/api/v1"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {cp.admin_token}"

    def __call__(self, method: str, path: str, expect: int | None = None, **kw: Any) -> Any:
        resp = self.http.request(method, self.base + path, timeout=30, **kw)
        if expect is not None:
            assert resp.status_code == expect, f"{method} {path}: {resp.status_code} {resp.text}"
        elif resp.status_code >= 400:
            raise AssertionError(f"{method} {path}: {resp.status_code} {resp.text}")
        return resp.json() if resp.content else None


def wait_until(what: str, check: Any, timeout_s: float = 90, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except (OSError, requests.RequestException, AssertionError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last: {last!r}")


def text(url: str) -> str:
    resp = requests.get(url, timeout=5)
    resp.raise_for_status()
    return resp.text


def replace_in_file(path: Path, old: str, new: str) -> None:
    content = path.read_text()
    assert old in content, f"{old!r} not in {path}"
    path.write_text(re.sub(re.escape(old), new, content))

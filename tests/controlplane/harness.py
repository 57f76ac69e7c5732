"""Real control-plane processes for tests: migrated database, admin token, HTTP client."""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.ports import free_port
from tests.support.procs import terminate

REPO = Path(__file__).resolve().parents[2]


def berth(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `berth ...` as a real process (the console script's module)."""
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
        input=input, stdin=None if input is not None else subprocess.DEVNULL,
    )  # fmt: skip


class ControlPlane:
    """`berth controlplane serve` on a free loopback port, stopped by PID."""

    def __init__(self, db_url: str, log_dir: Path, *extra: str, port: int | None = None) -> None:
        self.db_url = db_url
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"controlplane-{self.port}.log"
        self._log = self.log_path.open("ab")  # a restart on the same port keeps the old log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "controlplane", "serve",
             "--db", db_url, "--bind", f"127.0.0.1:{self.port}",
             "--allow-file-repos", tempfile.gettempdir(), *extra],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"control plane exited {self.proc.returncode}: {self.log()}")
            try:
                requests.get(self.url + "/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"control plane did not start: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        terminate(self.proc, 10)
        self._log.close()


class Api:
    """A tiny client: `api.post("/stacks", json=...)` → requests.Response."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base = base_url.rstrip("/") + "/api/v1"
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        return self.http.request(method, self.base + path, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.call("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.call("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.call("DELETE", path, **kw)


def agent_api(base_url: str, credential: str | None) -> Api:
    return Api(base_url, credential)


def stack_body(name: str, repo: Path | str, **overrides: Any) -> dict[str, Any]:
    """A valid two-service stack on `repo` (a local git repository)."""
    url = repo if isinstance(repo, str) else f"file://{repo}"
    body: dict[str, Any] = {
        "name": name,
        "security_mode": "open",
        "poll_interval_s": 2,
        "proxy": {"port": 18080},
        "services": [
            {"name": "web", "repo": url, "ref": "main", "build": "", "run": "python3 app.py",
             "port": 19001, "path": "/", "env": {"GREETING": "hi"},
             "health": {"path": "/healthz", "interval_s": 1, "timeout_s": 1, "retries": 3, "start_period_s": 0}},
            {"name": "api", "repo": url, "ref": "main", "run": "python3 app.py", "port": 19002, "path": "/api"},
        ],
    }  # fmt: skip
    body.update(overrides)
    return body

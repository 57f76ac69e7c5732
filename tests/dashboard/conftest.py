"""Fixtures of the dashboard tests: a real control plane process with a dashboard user,
headless Chromium driven by Playwright, a logged-in page, screenshots, and a stand-in
agent that registers with a real install token and posts what an agent posts.

Chromium is Debian's (`/usr/bin/chromium`); Playwright never downloads a browser here.
Screenshots go to `test-artifacts/dashboard/` (repo-relative, gitignored) at 1280 and
390 px width.
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from controlplane.dashboard.cli import ensure_user
from tests.controlplane.harness import Api, ControlPlane
from tests.support.controlplane import create_admin_token, migrate
from tests.support.env import require
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]  # fmt: skip
USER, PASSWORD = "alice", "correct horse battery"
WIDTHS = (1280, 390)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: Playwright's sync API runs an event loop in the main
    # thread while it is open, and every later asyncio.run() in the session would fail.
    require(shutil.which("chromium") is not None or os.path.exists(CHROMIUM),
            "needs Debian's chromium (apt-get install chromium)")  # fmt: skip
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Server:
    """A control plane with a migrated SQLite database, an admin token and a user."""

    def __init__(self, workdir: Path) -> None:
        self.db_url = f"sqlite:///{workdir / 'cp.sqlite3'}"
        # Playwright's sync API runs an event loop in this thread: asyncio.run elsewhere
        with ThreadPoolExecutor(1) as pool:
            pool.submit(migrate, self.db_url).result()
            pool.submit(ensure_user, self.db_url, USER, PASSWORD).result()
            self.admin_token = pool.submit(create_admin_token, self.db_url, "tests").result()
        self.workdir = workdir
        self.start()

    def start(self, port: int | None = None, *extra: str) -> None:
        """Start `berth controlplane serve` (on `port`, or a free one; `extra` options)
        and wait for it."""
        port = port or free_port()
        self.cp = ControlPlane(
            self.db_url, self.workdir, "--public-url", f"http://127.0.0.1:{port}", *extra,
            port=port,
        )  # fmt: skip
        self.port, self.url = self.cp.port, self.cp.url
        self.api = Api(self.url, self.admin_token)

    def log(self) -> str:
        return self.cp.log()

    def stop(self) -> None:
        self.cp.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("dashboard-cp"))
    yield s
    s.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


def log_in(page: Any, base: str, user: str = USER, password: str = PASSWORD) -> None:
    page.goto(base + "/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)


@pytest.fixture
def page(context: Any, server: Server) -> Any:
    pg = context.new_page()
    log_in(pg, server.url)
    return pg


def snap(page: Any, name: str) -> list[Path]:
    """Full-page screenshots of the current page at every width in WIDTHS."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    paths = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 860})
        page.wait_for_timeout(50)  # one layout pass
        path = ARTIFACTS / f"{name}-{width}.png"
        page.screenshot(path=str(path), full_page=True)
        paths.append(path)
    page.set_viewport_size(original)
    return paths


class FakeAgent:
    """Stands in for an agent over the real agent API: registers with a real install
    token, then posts heartbeats, events and log chunks with its own credential. Used
    where a real agent would add nothing but minutes (the real one runs in test_flow)."""

    def __init__(self, server: Server, stack_id: str, hostname: str) -> None:
        token = server.api.post(f"/stacks/{stack_id}/install-tokens", json={}).json()["token"]
        resp = requests.post(
            server.url + "/api/v1/agent/register",
            json={"token": token, "hostname": hostname}, timeout=10,
        )  # fmt: skip
        assert resp.status_code == 201, resp.text
        reg = resp.json()
        self.instance_id, self.credential = reg["instance_id"], reg["credential"]
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.credential}"
        self.base = server.url + "/api/v1/agent"

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self.http.post(self.base + path, json=body, timeout=10)

    def heartbeat(
        self, version: int, state: str, services: list[dict[str, Any]], **extra: Any
    ) -> None:
        body = {
            "agent_version": "0.1.0-test", "applied_version": version, "state": state,
            "services": services,
            "security": {"mode": "open", "exposure": "unrestricted", "backend": None, "tunnel": None},
            **extra,
        }  # fmt: skip
        resp = self.post("/heartbeat", body)
        assert resp.status_code == 200, resp.text

    def event(self, type_: str, message: str, service: str | None = None, **extra: Any) -> None:
        ev = {"id": uuid.uuid4().hex, "type": type_, "message": message, "service": service,
              "at": datetime.now(UTC).isoformat(), **extra}  # fmt: skip
        resp = self.post("/events", {"events": [ev]})
        assert resp.status_code == 200, resp.text

    def log(
        self, service: str, stream: str, data: str, commit: str | None = None
    ) -> requests.Response:
        return self.post(
            "/logs",
            {"chunks": [{"service": service, "stream": stream, "commit": commit, "data": data}]},
        )


def service_snapshot(
    name: str, commit: str, state: str = "running", health: str = "healthy", restarts: int = 0
) -> dict[str, Any]:
    return {"name": name, "commit": commit, "desired_commit": commit, "pid": 4242, "port": 20000,
            "state": state, "health": health, "restarts": restarts, "last_exit": None, "last_error": None}  # fmt: skip

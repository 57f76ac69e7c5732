"""Issue 22: status as fast as the config. With a 60 s poll interval, a real agent's
"applied vN" reaches `/instances` and the dashboard within 2 s of the apply, because the
agent sends a heartbeat as soon as its state changes (the poll interval no longer paces
heartbeats; a change reaches the agent by long poll). The dashboard is checked twice: the
instances page as served, and the same page open in Chromium, updated live (no reload)."""

import os
import re
import shutil
import time
from datetime import datetime

import pytest
import requests

from controlplane.dashboard.cli import ensure_user
from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS, log_in
from tests.integration.faultkit import Site, make_repo, new_version, service
from tests.support.berth import Api, start_controlplane, wait_until
from tests.support.dirs import world_dir
from tests.support.env import require, require_root
from tests.support.ports import free_port

USER, PASSWORD = "status-reader", "a long enough password"
LAG_S = 2.0  # the bound: "applied vN" shown within 2 s of the apply


@pytest.fixture
def workspace():
    require_root()  # services run as an unprivileged user, the agent in a mount namespace
    with world_dir("berth-status-") as d:
        yield d


def dashboard_session(base: str) -> requests.Session:
    http = requests.Session()
    page = http.get(base + "/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    resp = http.post(base + "/login", data={"csrf_token": token, "username": USER,
                     "password": PASSWORD}, allow_redirects=False, timeout=10)  # fmt: skip
    assert resp.status_code == 302, resp.text
    return http


def page_shows_applied(http: requests.Session, url: str, version: int) -> bool:
    """The instances page's row says state `applied` and applied version `vN`."""
    html = http.get(url, timeout=10).text
    row = re.search(r"<tr data-instance=.*?</tr>", html, re.S)
    return bool(
        row
        and '<span class="badge badge-ok">applied</span>' in row.group(0)
        and f"<td>v{version}</td>" in row.group(0)
    )


def first_seen(checks: dict[str, object], timeout_s: float = 30.0) -> dict[str, float]:
    """Poll every check until each has been true once; when (wall clock) each first was."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(checks) and time.monotonic() < deadline:
        for name, check in checks.items():
            if name not in seen and check():  # type: ignore[operator]
                seen[name] = time.time()
        time.sleep(0.05)
    assert len(seen) == len(checks), f"never seen: {set(checks) - set(seen)}"
    return seen


def applied_at(site: Site, version: int) -> float:
    """When the agent itself reached `applied` for `version` (its `stack` event's time)."""
    [event] = [e for e in site.events("stack") if e["message"] == f"v{version} applied"] or [None]
    assert event is not None, site.events("stack")
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()


def test_applied_shows_within_two_seconds_at_a_60_s_poll_interval(xprocess, workspace):
    url = make_repo(workspace / "repo")
    repo = workspace / "repo"
    cp = start_controlplane(xprocess, "cp-status", workspace, free_port())
    ensure_user(cp.db, USER, PASSWORD)
    api = Api(cp)
    proxy_port = free_port()
    body = {
        "name": "status",
        "security_mode": "open",
        "poll_interval_s": 60,
        "proxy": {"port": proxy_port},
        "services": [service("app", url, "/")],
    }
    stack = api("POST", "/stacks", expect=201, json=body)
    site = Site(xprocess, workspace, cp, api, stack["id"], proxy_port)
    require(shutil.which("chromium") is not None or os.path.exists(CHROMIUM),
            "needs Debian's chromium (apt-get install chromium)")  # fmt: skip
    from playwright.sync_api import sync_playwright

    try:
        http = dashboard_session(cp.url)
        page = f"{cp.url}/stacks/{site.stack_id}/instances"
        with sync_playwright() as p:
            # the page is open (no server yet) before the agent starts: every figure is
            # measured from the moment it could first be seen
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            tab = browser.new_page()
            log_in(tab, cp.url, USER, PASSWORD)
            tab.goto(page)
            tab.evaluate("window.__sameDocument = true")
            row = tab.locator("tr[data-instance]")
            site.add_agent("agent-status")

            def live(version: int) -> bool:
                text = row.inner_text() if row.count() else ""
                return "applied" in text and f"v{version}" in text

            for version in (1, 2):
                if version == 2:
                    new_version(repo, "v2")
                    assert api("POST", f"/stacks/{site.stack_id}/refresh")["version"] == 2
                seen = first_seen(
                    {
                        "api": lambda v=version: site.all_applied(v),
                        "page": lambda v=version: page_shows_applied(http, page, v),
                        "live page": lambda v=version: live(v),
                    }
                )
                wait_until("the applied event", lambda v=version: applied_at(site, v))
                done = applied_at(site, version)
                lags = {where: round(at - done, 2) for where, at in seen.items()}
                print(f"v{version}: shown after the apply by {lags} s")  # figures for the report
                assert all(lag < LAG_S for lag in lags.values()), lags
            assert tab.evaluate("window.__sameDocument === true"), "the page was reloaded"
            browser.close()
        [instance] = site.instances()
        assert instance["status"] == "online"
    finally:
        site.close()

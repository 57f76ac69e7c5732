"""Every dashboard page in headless Chromium, fed by a stand-in agent over the real agent
API (registration with a real install token, heartbeats, events, log chunks): forms,
validation errors, live updates without reloading, logs streamed as they arrive, the
event timeline, install tokens, rollback, logout. Each page is screenshotted at 1280 and
390 px and passes the automated accessibility check. `test_flow.py` repeats the main
path with a real agent (root)."""

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.dashboard.a11y import assert_accessible
from tests.dashboard.conftest import (
    PASSWORD,
    USER,
    FakeAgent,
    Server,
    log_in,
    service_snapshot,
    snap,
)
from tests.support.gitrepo import commit_files, git, init_repo


def visit(page: Any, name: str) -> None:
    """Screenshot the page at both widths and check its accessibility."""
    assert_accessible(page)
    snap(page, name)


def fill_service(page: Any, i: int, **fields: str) -> None:
    for key, value in fields.items():
        page.locator(f"#f-services-{i}-{key.replace('.', '-')}").fill(value)


def mark_no_reload(page: Any) -> None:
    page.evaluate("window.__sameDocument = true")


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = init_repo(tmp_path_factory.mktemp("git") / "shop")
    commit_files(path, {"app.py": "print('v1')\n"}, "v1")
    return path


def test_login_page_with_the_keyboard(context: Any, server: Server) -> None:
    page = context.new_page()
    page.goto(server.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    visit(page, "login")
    expect(page.locator("#username")).to_be_focused()  # autofocus
    page.keyboard.type(USER)
    page.keyboard.press("Tab")
    expect(page.locator("#password")).to_be_focused()
    page.keyboard.type("not the password")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("Wrong user name or password")
    expect(page.locator("#username")).to_have_value(USER)
    snap(page, "login-failed")
    page.locator("#password").fill(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Stacks")).to_be_visible()
    visit(page, "stacks-empty")


def test_stack_lifecycle(page: Any, server: Server, repo: Path) -> None:
    url = f"file://{repo}"
    page.get_by_role("link", name="New stack").click()
    page.locator("#f-name").fill("shop")
    page.locator("#f-security_mode").select_option("proxy-only")
    page.locator("#f-poll_interval_s").fill("0.5")
    fill_service(page, 0, name="web", repo=url, ref="main", run="python3 app.py", path="/")
    page.locator("#f-services-0-env-0-name").fill("GREETING")
    page.locator("#f-services-0-env-0-value").fill("hello")
    page.locator("#f-services-0-health-enabled").check()
    fill_service(page, 0, **{"health.path": "/healthz", "health.interval_s": "1"})
    page.get_by_role("button", name="Add service").click()
    # the server re-rendered the form: nothing typed so far is lost
    expect(page.locator("#f-services-0-env-0-value")).to_have_value("hello")
    fill_service(
        page, 1, name="api", repo=url, ref="main", run="python3 app.py", path="/api", port="80"
    )
    visit(page, "stack-new")
    page.get_by_role("button", name="Create stack").click()
    # a bad field: the error sits next to it, and the input is kept
    error = page.locator("#f-services-1-port-err")
    expect(error).to_contain_text("between 1024 and 65535")
    expect(page.locator("#f-services-1-port")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-services-1-name")).to_have_value("api")
    expect(page.locator("#f-services-0-env-0-value")).to_have_value("hello")
    expect(page.get_by_role("alert")).to_contain_text("Service 2 (api): port")
    visit(page, "stack-new-error")
    # a ref that does not exist is caught when saving too (git ls-remote), at the ref input
    page.locator("#f-services-1-port").fill("")
    page.locator("#f-services-1-ref").fill("no-such-branch")
    page.locator("#f-services-1-ref").press("Enter")  # Enter saves (the default button)
    expect(page.locator("#f-services-1-ref-err")).to_be_visible()
    page.locator("#f-services-1-ref").fill("main")
    page.get_by_role("button", name="Create stack").click()
    expect(page.get_by_role("status").filter(has_text="Stack created")).to_be_visible()
    stack_id = page.url.rsplit("/", 1)[-1].split("?")[0]
    commit = git(repo, "rev-parse", "HEAD")
    expect(page.locator("#matrix")).to_contain_text(commit[:10])
    visit(page, "overview-empty")

    # install token: the one-line command with a copy button and its expiry
    page.get_by_role("link", name="Install", exact=True).click()
    page.get_by_label("Valid for").select_option("86400")
    page.get_by_role("button", name="Create install token").click()
    command = page.locator("#install-command").inner_text()
    assert re.fullmatch(
        rf"curl -fsSL {server.url}/install\.sh \| sudo sh -s -- --token berth_ins_\S+", command
    )
    expect(page.locator("#new-token")).to_contain_text("expires in")
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).not_to_be_empty()
    expect(page.locator("#tokens")).to_contain_text("active")
    visit(page, "install")

    # an agent registers and reports: the overview follows without a reload
    page.get_by_role("link", name="Overview").click()
    mark_no_reload(page)
    expect(page.locator("#live-status")).to_have_text("Live")
    agent = FakeAgent(server, stack_id, "edge-1")
    expect(page.locator("#instances-table")).to_contain_text("edge-1")
    agent.heartbeat(None, "applying", [service_snapshot("web", commit, "building", "none"),  # type: ignore[arg-type]
                                       service_snapshot("api", commit, "starting", "none")])  # fmt: skip
    expect(page.locator("#instances-table")).to_contain_text("applying")
    agent.event("build", "build started", "web")
    agent.event("health", "healthy", "web")
    agent.heartbeat(
        1, "applied", [service_snapshot("web", commit), service_snapshot("api", commit)]
    )
    expect(page.locator('.cell-health[data-health="healthy"]')).to_have_count(2)
    expect(page.locator("#recent-events")).to_contain_text("build started")
    assert_not_reloaded(page)
    visit(page, "overview")

    # degraded with the agent's reason; restarts counted
    agent.event("crash", "exited with 1", "api")
    agent.heartbeat(1, "degraded", [service_snapshot("web", commit),
                    service_snapshot("api", commit, "backoff", "unhealthy", restarts=3)],
                    reasons=["api: crash loop: exit 1"])  # fmt: skip
    expect(page.locator("#instances-table")).to_contain_text("api: crash loop: exit 1")
    expect(page.locator('[data-service="api"][data-host="edge-1"]')).to_contain_text("↻ 3")
    assert_not_reloaded(page)
    visit(page, "overview-degraded")

    # the service page: state, health history, and logs as they are written
    page.locator('[data-service="api"] a').click()
    expect(page.locator("#svc-restarts")).to_have_text("3")
    mark_no_reload(page)
    agent.log("api", "build", "Collecting requirements\n", commit=commit)
    agent.log("api", "run", "listening on 20000\n", commit=commit)
    expect(page.locator("#run-log")).to_contain_text("listening on 20000")
    expect(page.locator("#build-log")).to_contain_text("Collecting requirements")
    agent.log("api", "run", "GET /api 200\n", commit=commit)
    expect(page.locator("#run-log")).to_have_text(
        re.compile(r"listening on 20000\nGET /api 200\n$")
    )
    agent.event("health", "unhealthy: GET /healthz answered 503", "api")
    expect(page.locator("#hh-h + .timeline")).to_contain_text("unhealthy")
    assert_not_reloaded(page)
    visit(page, "service")

    # instances: hostname, agent version, security, last heartbeat
    page.get_by_role("link", name="Instances").click()
    row = page.locator('#instances tr[data-instance="edge-1"]')
    for text in ("0.1.0-test", "open", "unrestricted", "degraded"):
        expect(row).to_contain_text(text)
    visit(page, "instances")

    # the event timeline: filters and paging
    for i in range(55):
        agent.event("deploy", f"deploy step {i}", "web")
    page.get_by_role("link", name="Events", exact=True).click()
    expect(page.locator("#events tbody tr")).to_have_count(50)
    expect(page.locator("#events tbody tr").first).to_contain_text("deploy step 54")
    visit(page, "events")
    page.get_by_role("link", name="Older »").click()
    expect(page.locator("#events")).to_contain_text("build started")
    page.get_by_label("Type").select_option("crash")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#events tbody tr")).to_have_count(1)
    expect(page.locator("#events")).to_contain_text("exited with 1")
    page.get_by_label("Service").select_option("web")
    page.get_by_label("Type").select_option("")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#events tbody tr").first).to_contain_text("deploy step 54")
    mark_no_reload(page)
    agent.event("config", "brand new event", "web")
    expect(page.locator("#events tbody tr").first).to_contain_text("brand new event")
    assert_not_reloaded(page)
    visit(page, "events-filtered")

    # edit: the stored stack is in the form; a new commit → v2; then roll back to v1
    page.get_by_role("link", name="Edit").click()
    expect(page.locator("#f-services-0-env-0-name")).to_have_value("GREETING")
    expect(page.locator("#f-services-0-ref-hint")).to_contain_text(commit[:12])
    visit(page, "edit")
    second = commit_files(repo, {"app.py": "print('v2')\n"}, "v2")
    page.get_by_role("link", name="Overview").click()
    page.get_by_role("button", name="Re-resolve refs").click()
    expect(page.locator(".notice")).to_contain_text("Refs re-resolved")
    expect(page.locator("#matrix")).to_contain_text(second[:10])
    page.get_by_role("link", name="Versions").click()
    visit(page, "versions")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Roll back to v1").click()
    expect(page.locator(".notice")).to_contain_text("Rolled back")
    expect(page.locator(".stackbar")).to_contain_text("v3")
    expect(page.locator("#matrix")).to_contain_text(commit[:10])
    versions = server.api.get(f"/stacks/{stack_id}/versions").json()["versions"]
    assert [(v["version"], v["reason"]) for v in versions] == [
        (3, "rollback"),
        (2, "refresh"),
        (1, "create"),
    ]

    # the stacks list, then revoke, then log out
    page.get_by_role("link", name="Stacks").click()
    expect(page.locator("table.grid")).to_contain_text("shop")
    visit(page, "stacks")
    page.goto(f"{server.url}/stacks/{stack_id}/instances")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Revoke edge-1").click()
    expect(page.locator('#instances tr[data-instance="edge-1"]')).to_contain_text("revoked")
    assert agent.post("/heartbeat", {}).status_code == 401
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(server.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))


def test_offline_badge_and_reconnect_after_a_control_plane_restart(
    context: Any, server: Server, repo: Path
) -> None:
    from tests.controlplane.harness import stack_body

    # heartbeats due every second: no heartbeat for 3 s is stale, for 8 s offline
    server.stop()
    server.start(server.port, "--heartbeat-interval", "1")
    stack = server.api.post("/stacks", json=stack_body("edge", repo, poll_interval_s=0.5)).json()
    agent = FakeAgent(server, stack["id"], "edge-2")
    commit = stack["services"][0]["commit"]
    agent.heartbeat(
        1, "applied", [service_snapshot("web", commit), service_snapshot("api", commit)]
    )
    page = context.new_page()
    log_in(page, server.url)
    page.goto(f"{server.url}/stacks/{stack['id']}")
    mark_no_reload(page)
    row = page.locator('#instances-table tr[data-instance="edge-2"]')
    # Nothing is written for stale and offline: the watcher notices the status change
    # itself.
    expect(row).to_contain_text("offline", timeout=20_000)
    snap(page, "overview-offline")
    server.stop()
    expect(page.locator("#live-status")).to_have_text(re.compile("Connection lost"))
    snap(page, "connection-lost")
    server.start(port=server.port)  # the default heartbeat interval again
    expect(page.locator("#live-status")).to_have_text("Live", timeout=20_000)
    agent.heartbeat(
        1, "applied", [service_snapshot("web", commit), service_snapshot("api", commit)]
    )
    expect(row).to_contain_text("online")
    assert_not_reloaded(page)

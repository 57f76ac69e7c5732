"""The issue's whole path with a real agent, in headless Chromium: log in, create a stack
with two services from a local git repository (a bad field first), create an install
token, start `berth agent run-all` with it, watch the server appear and its services turn
healthy without reloading, see the events, deploy a new commit, roll back to the first
version, log out. Needs root (services run as an unprivileged user; the internal proxy
binds 127.0.0.1:80), like tests/integration/test_walking_skeleton.py."""

import re
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from playwright.sync_api import expect

from controlplane.demo import make_example_repo, port_free
from tests.dashboard.a11y import assert_accessible
from tests.dashboard.conftest import Server, log_in, snap
from tests.support.berth import agent_argv, replace_in_file, start_agent, stop
from tests.support.dirs import world_dir
from tests.support.env import require, require_root
from tests.support.gitrepo import commit_files, git
from tests.support.ports import free_port

DEPLOY_TIMEOUT_MS = 240_000  # clone, build and health checks on a busy 2-core machine


def fill(page: Any, i: int, **fields: str) -> None:
    for key, value in fields.items():
        page.locator(f"#f-services-{i}-{key.replace('.', '-')}").fill(value)


def test_dashboard_with_a_real_agent(context: Any, xprocess: Any) -> None:
    require_root()
    require(
        port_free("127.0.0.1", 80), "127.0.0.1:80 is taken (the agent's internal proxy needs it)"
    )
    with world_dir("berth-dash-") as workspace:
        repo = workspace / "example-repo"
        with ThreadPoolExecutor(1) as pool:  # git + sqlite setup off Playwright's loop thread
            repo_url = pool.submit(make_example_repo, repo).result()
            server = pool.submit(Server, workspace).result()
        agent_name = "agent-dashboard"
        try:
            run(context, xprocess, server, repo, repo_url, agent_name, workspace)
        finally:
            stop(xprocess, agent_name)
            server.stop()


def run(context: Any, xprocess: Any, server: Server, repo: Any, repo_url: str,
        agent_name: str, workspace: Any) -> None:  # fmt: skip
    page = context.new_page()
    log_in(page, server.url)
    first = git(repo, "rev-parse", "HEAD")
    proxy_port = free_port()

    # the stack, from the form; a bad path is shown at its field and nothing is lost
    page.get_by_role("link", name="New stack").click()
    page.locator("#f-name").fill("example")
    page.locator("#f-security_mode").select_option("open")
    page.locator("#f-poll_interval_s").fill("1")
    page.locator("#f-proxy-port").fill(str(proxy_port))
    health = {"health.path": "/healthz", "health.interval_s": "2", "health.timeout_s": "1"}
    common = {"repo": repo_url, "ref": "main", "build": "python3 build.py"}
    fill(page, 0, name="api", run="python3 api/app.py", path="/api", **common)
    page.locator("#f-services-0-health-enabled").check()
    fill(page, 0, **health)
    page.get_by_role("button", name="Add service").click()
    fill(page, 1, name="web", run="python3 web/app.py", path="no-slash", **common)
    page.locator("#f-services-1-health-enabled").check()
    fill(page, 1, **health)
    page.get_by_role("button", name="Create stack").click()
    expect(page.locator("#f-services-1-path-err")).to_contain_text("must start with /")
    expect(page.locator("#f-services-1-run")).to_have_value("python3 web/app.py")
    snap(page, "agent-stack-error")
    page.locator("#f-services-1-path").fill("/")
    page.get_by_role("button", name="Create stack").click()
    expect(page.locator(".notice")).to_contain_text("Stack created")

    # install token → the command → a real agent
    page.get_by_role("link", name="Install", exact=True).click()
    page.get_by_role("button", name="Create install token").click()
    command = page.locator("#install-command").inner_text()
    token = re.search(r"--token (\S+)", command).group(1)  # type: ignore[union-attr]
    snap(page, "agent-install")
    page.get_by_role("link", name="Overview").click()
    page.evaluate("window.__sameDocument = true")
    start_agent(xprocess, agent_name, agent_argv(workspace / "agent", server.url, token,
                proxy_port=proxy_port, dns_port=free_port()))  # fmt: skip

    # the server appears, its services turn healthy: all without a reload
    row = page.locator("#instances-table tr").filter(has_text=socket.gethostname())
    expect(row).to_be_visible(timeout=60_000)
    healthy = page.locator('.cell-health[data-health="healthy"]')
    expect(healthy).to_have_count(2, timeout=DEPLOY_TIMEOUT_MS)
    expect(row).to_contain_text("applied", timeout=30_000)
    expect(row).to_contain_text("online")
    expect(page.locator("#recent-events")).to_contain_text("deploy")
    assert page.evaluate("window.__sameDocument === true"), "the overview was reloaded"
    assert_accessible(page)
    snap(page, "agent-overview")

    # events in the timeline, filtered by type
    page.get_by_role("link", name="Events", exact=True).click()
    for kind in ("build", "deploy", "run", "stack"):
        expect(page.locator("#events")).to_contain_text(kind)
    page.get_by_label("Type").select_option("build")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#events tbody tr").first).to_contain_text("build")
    snap(page, "agent-events")

    # a new commit, refs re-resolved: v2 rolls out live
    replace_in_file(repo / "api" / "app.py", "Hello from the api service", "Hello from api v2")
    second = commit_files(repo, {}, "second release")
    page.get_by_role("link", name="Overview").click()
    page.get_by_role("button", name="Re-resolve refs").click()
    expect(page.locator(".notice")).to_contain_text("Refs re-resolved")
    api_cell = page.locator('[data-service="api"]').first
    expect(api_cell).to_contain_text(second[:7], timeout=DEPLOY_TIMEOUT_MS)
    expect(row).to_contain_text("v2", timeout=DEPLOY_TIMEOUT_MS)

    # roll back to v1: a new version (v3) with the first commit, deployed live
    page.get_by_role("link", name="Versions").click()
    snap(page, "agent-versions")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Roll back to v1").click()
    expect(page.locator(".notice")).to_contain_text("Rolled back")
    expect(api_cell).to_contain_text(first[:7], timeout=DEPLOY_TIMEOUT_MS)
    expect(row).to_contain_text("v3", timeout=DEPLOY_TIMEOUT_MS)
    expect(healthy).to_have_count(2, timeout=DEPLOY_TIMEOUT_MS)
    snap(page, "agent-rolled-back")

    # the service page of a real service
    page.locator('[data-service="web"] a').first.click()
    expect(page.locator("#svc-state")).to_contain_text("running")
    snap(page, "agent-service")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))

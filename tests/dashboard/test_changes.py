"""The audit trail and version-diff pages in headless Chromium against a real control
plane: filters, paging links, the diff reached from the Versions tab, secret-looking
values hidden, and the accessibility check at both widths."""

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.controlplane.harness import stack_body
from tests.controlplane.receivers import WebhookReceiver
from tests.dashboard.a11y import assert_accessible
from tests.dashboard.conftest import USER, Server, snap
from tests.support.gitrepo import commit_files, init_repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = init_repo(tmp_path_factory.mktemp("git") / "diffs")
    commit_files(path, {"app.py": "print('v1')\n"}, "v1")
    return path


def test_audit_page_filters_and_links_to_the_diff(page: Any, server: Server, repo: Path) -> None:
    created = server.api.post("/stacks", json=stack_body("audited", repo)).json()
    body = server.api.get(f"/stacks/{created['id']}").json()
    body["services"][0]["env"] = {"GREETING": "hello", "NEW_KEY": "x"}
    body["services"][0]["run"] = "python3 -u app.py"
    body["security_mode"] = "proxy-only"
    assert server.api.put(f"/stacks/{created['id']}", json=body).json()["version"] == 2

    page.get_by_role("link", name="Audit", exact=True).click()
    expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()
    rows = page.locator("#audit tbody tr")
    expect(rows.filter(has_text="stack.update")).to_have_count(1)
    expect(rows.filter(has_text="login.success").first).to_contain_text(USER)
    assert_accessible(page)
    snap(page, "audit")

    page.get_by_label("Action").select_option("stack.create")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"action=stack\.create"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("audited")
    page.get_by_label("Since (UTC, ISO 8601)").fill("not a time")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("alert")).to_contain_text("since")

    page.goto(server.url + "/audit?action=stack.update")
    page.get_by_role("link", name="v1 → v2").click()
    expect(page).to_have_url(re.compile(rf"/stacks/{created['id']}/versions/1/diff/2$"))
    expect(page.get_by_role("heading", name="Changes from v1 to v2")).to_be_visible()
    web = page.get_by_role("region", name="Service web changed")
    expect(web).to_contain_text("env.GREETING")
    expect(web).to_contain_text("hello")
    expect(web).to_contain_text("python3 -u app.py")
    expect(page.get_by_role("region", name="Stack settings")).to_contain_text("proxy-only")
    assert_accessible(page)
    snap(page, "diff")

    page.goto(server.url + f"/stacks/{created['id']}/versions")
    page.get_by_role("link", name="from v1").click()
    expect(page).to_have_url(re.compile(r"/versions/1/diff/2$"))
    page.get_by_label("From version").fill("2")
    page.get_by_label("To version").fill("9")
    page.get_by_role("button", name="Compare").click()
    expect(page.get_by_role("alert")).to_contain_text("versions are 1 to 2")


def test_notification_channels_send_test_and_delivery_log(page: Any, server: Server) -> None:
    hook = WebhookReceiver()
    try:
        page.get_by_role("link", name="Notifications", exact=True).click()
        expect(page.get_by_role("heading", name="Notifications", exact=True)).to_be_visible()
        page.get_by_label("Name", exact=True).fill("team-hook")
        page.get_by_label("Kind").select_option("webhook")
        page.get_by_label("URL (webhook, slack)").fill("ftp://nowhere")
        page.locator("input[value='deploy.failed']").check()
        page.get_by_role("button", name="Add channel").click()
        expect(page.locator("#f-url-err")).to_contain_text("http:// or https://")
        expect(
            page.locator("input[value='deploy.failed']")
        ).to_be_checked()  # nothing typed is lost
        assert_accessible(page)
        snap(page, "notifications")

        page.get_by_label("URL (webhook, slack)").fill(hook.url)
        page.get_by_role("button", name="Add channel").click()
        expect(page.get_by_role("heading", name="team-hook")).to_be_visible()
        expect(page.get_by_role("status")).to_contain_text("Channel added")
        page.get_by_role("button", name="Send test").click()
        got = hook.wait_for(lambda g: bool(g))
        assert got[0].json()["event"] == "test"
        assert f"requested by user:{USER}" in got[0].json()["message"]
        row = page.locator("#deliveries tbody tr").filter(has_text="[Berth] test:")
        for _ in range(100):  # the log row is written right after the receiver answers
            if row.count():
                break
            page.reload()
        expect(row).to_have_count(1)
        expect(row).to_contain_text("sent")
        assert_accessible(page)
        snap(page, "channel")

        page.get_by_role("button", name="Disable").click()
        expect(page.get_by_role("status")).to_contain_text("Channel disabled")
        expect(page.locator(".kv")).to_contain_text("stopped")
        page.get_by_role("button", name="Enable").click()
        expect(page.locator(".kv")).to_contain_text("active")

        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name="Delete").click()
        expect(page.get_by_role("status")).to_contain_text("Channel deleted")
        expect(page.locator("#channels")).not_to_contain_text("team-hook")
        trail = server.api.get("/audit", params={"action": "channel."}).json()["records"]
        assert [(r["action"], r["actor"]["name"]) for r in trail][:4] == [
            ("channel.delete", USER), ("channel.update", USER), ("channel.update", USER),
            ("channel.create", USER)]  # fmt: skip
    finally:
        hook.close()

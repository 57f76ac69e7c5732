"""A secret env value set through the dashboard's edit form (real HTTP form posts with a
session and CSRF token): never in any page, not even a rejected save's, nor in the API or
the database file; kept when its input is left empty, replaced when typed; the stack's
agent gets it."""

import re
import uuid
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from controlplane.dburl import parse_db_url
from tests.dashboard.a11y import assert_accessible
from tests.dashboard.conftest import FakeAgent, Server, snap
from tests.dashboard.test_auth import csrf_of, logged_in
from tests.support.berth import wait_until
from tests.support.gitrepo import commit_files, init_repo


def form(csrf: str, repo: Path, name: str, secret_value: str, **extra: str) -> dict[str, str]:
    fields = {
        "csrf_token": csrf, "action": "save", "name": name, "security_mode": "open",
        "poll_interval_s": "2", "proxy.port": "18080", "dns.suffix": "svc.internal",
        "services[0].name": "web", "services[0].repo": f"file://{repo}",
        "services[0].ref": "main", "services[0].run": "python3 app.py", "services[0].path": "/",
        "services[0].env[0].name": "DB_URL", "services[0].env[0].value": secret_value,
        "services[0].env[0].secret": "1",
        "services[0].env[1].name": "PLAIN", "services[0].env[1].value": "plain-value",
    }  # fmt: skip
    fields.update(extra)
    return fields


def test_a_secret_set_in_the_form_never_shows(server: Server, tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    commit_files(repo, {"app.py": "print(1)\n"}, "v1")
    v1, v2 = (f"form-secret-{uuid.uuid4().hex}" for _ in range(2))
    http = logged_in(server.url)
    csrf = csrf_of(http, server.url)
    pages: list[str] = []

    def post(path: str, data: dict[str, str]) -> tuple[int, str, str]:
        resp = http.post(server.url + path, data=data, allow_redirects=False, timeout=30)
        pages.append(resp.text)
        return resp.status_code, resp.text, resp.headers.get("Location", "")

    # a rejected save re-renders the form without the typed value, and says so
    name = f"form-{uuid.uuid4().hex[:6]}"
    code, page, _ = post("/stacks/new", form(csrf, repo, name, v1, **{"services[0].port": "x"}))
    assert code == 422 and "Type the new value again" in page and "plain-value" in page
    code, _, where = post("/stacks/new", form(csrf, repo, name, v1))
    assert code == 302, where
    stack_id = re.search(r"/stacks/([0-9a-f-]{36})", where).group(1)  # type: ignore[union-attr]

    edit = http.get(f"{server.url}/stacks/{stack_id}/edit", timeout=10).text
    pages.append(edit)
    secret_inputs = re.findall(r'<input id="f-services-0-env-\d-value"[^>]*type="password"[^>]*>', edit)  # fmt: skip
    assert len(secret_inputs) == 1 and 'value=""' in secret_inputs[0]
    fingerprint = server.api.get(f"/stacks/{stack_id}").json()["services"][0]["env"]["DB_URL"]["fingerprint"]  # fmt: skip
    assert fingerprint in edit

    agent = FakeAgent(server, stack_id, "form-host")
    doc = agent.http.get(agent.base + "/desired-state", timeout=10).json()
    assert doc["services"][0]["env"]["DB_URL"]["value"] == v1

    # left empty: kept (no new version); typed: replaced
    keep = form(csrf, repo, name, "", **{"services[0].env[0].fingerprint": fingerprint})
    assert post(f"/stacks/{stack_id}/edit", keep)[2].endswith("notice=unchanged")
    assert post(f"/stacks/{stack_id}/edit", form(csrf, repo, name, v2))[2].endswith("notice=saved")
    # (the agent directory may serve the previous version until its next refresh tick)
    wait_until("the agent to get the new value", lambda: agent.http.get(
        agent.base + "/desired-state", timeout=10).json()["services"][0]["env"]["DB_URL"].get("value") == v2, 10)  # fmt: skip

    for path in ("/", f"/stacks/{stack_id}", f"/stacks/{stack_id}/edit",
                 f"/stacks/{stack_id}/versions", f"/stacks/{stack_id}/events"):  # fmt: skip
        resp = http.get(server.url + path, timeout=10)
        assert resp.status_code == 200, path
        pages.append(resp.text)
    for path in (f"/stacks/{stack_id}", f"/stacks/{stack_id}/desired-state",
                 f"/stacks/{stack_id}/versions/1", f"/stacks/{stack_id}/versions/2"):  # fmt: skip
        pages.append(server.api.get(path).text)
    db_file = Path(parse_db_url(server.db_url).sync_url.database or "")
    stored = b"".join(
        p.read_bytes() for p in (db_file, db_file.with_name(db_file.name + "-wal")) if p.exists()
    )
    assert stack_id.encode() in stored
    for value in (v1, v2):
        assert value.encode() not in stored
        for page in pages:
            assert value not in page


def test_the_form_in_a_browser_marks_and_keeps_a_secret(page: Any, server: Server, tmp_path: Path) -> None:  # fmt: skip
    repo = init_repo(tmp_path / "repo")
    commit_files(repo, {"app.py": "print(1)\n"}, "v1")
    value = f"browser-secret-{uuid.uuid4().hex}"
    page.goto(server.url + "/stacks/new")
    page.locator("#f-name").fill(f"browser-{uuid.uuid4().hex[:6]}")
    page.locator("#f-security_mode").select_option("open")
    for key, text in (("name", "web"), ("repo", f"file://{repo}"), ("ref", "main"),
                      ("run", "python3 app.py"), ("path", "/")):  # fmt: skip
        page.locator(f"#f-services-0-{key}").fill(text)
    page.locator("#f-services-0-env-0-name").fill("API_KEY")
    page.locator("#f-services-0-env-0-value").fill(value)
    page.locator("#f-services-0-env-0-secret").check()
    page.get_by_role("button", name="Create stack").click()
    expect(page.locator(".notice")).to_contain_text("Stack created")
    page.get_by_role("link", name="Edit").click()
    secret = page.locator("#f-services-0-env-0-value")
    expect(secret).to_have_attribute("type", "password")
    expect(secret).to_have_value("")
    expect(page.locator("#f-services-0-env-0-secret")).to_be_checked()
    expect(page.locator("#f-services-0-env-0-value-hint")).to_contain_text("set · fingerprint")
    assert value not in page.content()
    assert_accessible(page)
    snap(page, "stack-edit-secret")
    page.get_by_role("button", name="Save").click()  # left empty: kept, nothing new
    expect(page.locator(".notice")).to_contain_text("Nothing changed")

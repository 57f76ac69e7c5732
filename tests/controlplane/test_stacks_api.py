"""The user API's stacks over real HTTP, real git repositories and a real database."""

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane.harness import Api, stack_body
from tests.support.gitrepo import commit_files, git, init_repo


def create(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post("/stacks", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_create_get_roundtrip_and_versions(api: Api, repo: Path, unique: str) -> None:
    head = git(repo, "rev-parse", "HEAD")
    created = create(api, stack_body(f"rt-{unique}", repo))
    assert created["version"] == 1 and len(created["hash"]) == 64
    assert [s["commit"] for s in created["services"]] == [head, head]

    got = api.get(f"/stacks/{created['id']}").json()
    assert got == created
    # GET → PUT unchanged (read-only keys included) changes nothing
    same = api.put(f"/stacks/{created['id']}", json=got)
    assert same.status_code == 200, same.text
    assert same.json()["version"] == 1 and same.json()["changed"] is False
    assert same.json()["hash"] == created["hash"]

    edited = copy.deepcopy(got)
    edited["services"][0]["env"]["GREETING"] = "hello"
    v2 = api.put(f"/stacks/{created['id']}", json=edited).json()
    assert v2["version"] == 2 and v2["changed"] is True and v2["hash"] != created["hash"]
    assert api.get(f"/stacks/{created['id']}").json()["services"][0]["env"] == {"GREETING": "hello"}

    doc = api.get(f"/stacks/{created['id']}/desired-state")
    assert doc.headers["ETag"] == f'"{v2["hash"]}"'
    assert doc.json()["version"] == 2 and doc.json()["stack_id"] == created["id"]

    versions = api.get(f"/stacks/{created['id']}/versions").json()["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert api.get(f"/stacks/{created['id']}/versions/1").json()["hash"] == created["hash"]

    listed = api.get("/stacks").json()["stacks"]
    assert created["id"] in [s["id"] for s in listed]


def test_rollback_makes_a_new_version_with_old_content(api: Api, repo: Path, unique: str) -> None:
    created = create(api, stack_body(f"rb-{unique}", repo))
    edited = stack_body(f"rb-{unique}", repo, poll_interval_s=5)
    assert api.put(f"/stacks/{created['id']}", json=edited).json()["version"] == 2
    back = api.post(f"/stacks/{created['id']}/rollback", json={"version": 1})
    assert back.status_code == 200, back.text
    assert back.json()["version"] == 3 and back.json()["poll_interval_s"] == 2
    doc = api.get(f"/stacks/{created['id']}/desired-state").json()
    assert doc["version"] == 3
    bad = api.post(f"/stacks/{created['id']}/rollback", json={"version": 99})
    assert bad.status_code == 422 and bad.json()["field"] == "version"
    assert api.post(f"/stacks/{created['id']}/rollback", json={"version": "1"}).status_code == 422


def test_refresh_picks_up_new_commits_only(api: Api, tmp_path: Path, unique: str) -> None:
    repo = init_repo(tmp_path / "moving")
    first = commit_files(repo, {"app.py": "1"}, "one")
    created = create(api, stack_body(f"rf-{unique}", repo))
    same = api.post(f"/stacks/{created['id']}/refresh").json()
    assert same["changed"] is False and same["version"] == 1
    second = commit_files(repo, {"app.py": "2"}, "two")
    moved = api.post(f"/stacks/{created['id']}/refresh").json()
    assert moved["changed"] is True and moved["version"] == 2
    assert {s["commit"] for s in moved["services"]} == {second} != {first}


def test_refs_tags_and_shas(api: Api, tmp_path: Path, unique: str) -> None:
    repo = init_repo(tmp_path / "tags")
    tagged = commit_files(repo, {"a": "1"}, "one")
    git(repo, "tag", "-a", "v1", "-m", "release 1")  # annotated: must peel to the commit
    git(repo, "tag", "light", tagged)
    later = commit_files(repo, {"a": "2"}, "two")
    body = stack_body(f"tags-{unique}", repo)
    body["services"][0]["ref"] = "v1"
    body["services"][1]["ref"] = "light"
    got = create(api, body)
    assert [s["commit"] for s in got["services"]] == [tagged, tagged]
    body["services"][0]["ref"] = later  # a full SHA is taken as is
    body["services"][1]["ref"] = "HEAD"
    got = api.put(f"/stacks/{got['id']}", json=body).json()
    assert [s["commit"] for s in got["services"]] == [later, later]


def _bad(body: dict[str, Any], where: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    target: Any = body
    *path, last = where.split(".")
    for key in path:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return body


_DELETE = object()

BAD_INPUTS = [
    # (where, value, status, field)
    ("colour", "blue", 422, "colour"),
    ("services.0.colour", "blue", 422, "services[0].colour"),
    ("services.0.port", 80, 422, "services[0].port"),
    ("services.0.port", 70000, 422, "services[0].port"),
    ("services.0.port", "8000", 422, "services[0].port"),
    ("services.1.port", 19001, 422, "services[1].port"),
    ("services.1.path", "/", 422, "services[1].path"),
    ("services.1.name", "web", 422, "services[1].name"),
    ("services.0.name", "Web_1", 422, "services[0].name"),
    ("services.0.path", "no-slash", 422, "services[0].path"),
    ("services.0.env", {"bad-name": "x"}, 422, "services[0].env.bad-name"),
    ("services.0.env", {"lower": "x"}, 422, "services[0].env.lower"),
    ("services.0.health.timeout_s", 0, 422, "services[0].health.timeout_s"),
    ("services.0.repo", "ext::sh -c touch% /tmp/pwned", 422, "services[0].repo"),
    ("services.0.repo", "/local/path", 422, "services[0].repo"),
    ("services.0.ref", "no-such-branch", 422, "services[0].ref"),
    ("services.0.repo", "file:///nonexistent/repo", 422, "services[0].repo"),
    ("services.0.run", _DELETE, 422, "services[0].run"),
    ("security_mode", "wide-open", 422, "security_mode"),
    ("poll_interval_s", -1, 422, "poll_interval_s"),
    # NUL bytes (the agent looped on "embedded null byte") and trailing newlines
    ("services.0.env", {"GREETING": "hi\x00"}, 422, "services[0].env.GREETING"),
    ("services.0.run", "python3 app.py\x00", 422, "services[0].run"),
    ("services.0.name", "api\n", 422, "services[0].name"),
    ("services.0.path", "/x\n", 422, "services[0].path"),
    ("proxy.port", 22, 422, "proxy.port"),
]


@pytest.mark.parametrize(
    ("where", "value", "status", "field"),
    BAD_INPUTS,
    ids=[f"{w}={v!r}"[:40] for w, v, *_ in BAD_INPUTS],
)
def test_bad_input_is_rejected_and_loses_nothing(
    api: Api, repo: Path, unique: str, where: str, value: Any, status: int, field: str
) -> None:
    good = stack_body(f"bad-{unique}", repo)
    created = create(api, good)
    bad = _bad(good, where, value)
    # on create: nothing is stored
    resp = api.post("/stacks", json={**bad, "name": f"other-{unique}"})
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["field"] == field and body["error"] and body["detail"], body
    assert f"other-{unique}" not in [s["name"] for s in api.get("/stacks").json()["stacks"]]
    # on replace: the stored stack is unchanged
    resp = api.put(f"/stacks/{created['id']}", json=bad)
    assert resp.status_code == status and resp.json()["field"] == field, resp.text
    assert api.get(f"/stacks/{created['id']}").json() == created


def test_unknown_ref_names_service_and_ref(api: Api, repo: Path, unique: str) -> None:
    body = stack_body(f"ref-{unique}", repo)
    body["services"][1]["ref"] = "feature/missing"
    resp = api.post("/stacks", json=body)
    assert resp.status_code == 422
    assert resp.json()["field"] == "services[1].ref"
    assert "'api'" in resp.json()["detail"] and "feature/missing" in resp.json()["detail"]


def test_duplicate_stack_name_is_a_conflict(api: Api, repo: Path, unique: str) -> None:
    first = create(api, stack_body(f"dup-{unique}", repo))
    resp = api.post("/stacks", json=stack_body(f"dup-{unique}", repo))
    assert resp.status_code == 409 and resp.json()["field"] == "name"
    other = create(api, stack_body(f"dup2-{unique}", repo))
    resp = api.put(f"/stacks/{other['id']}", json=stack_body(f"dup-{unique}", repo))
    assert resp.status_code == 409
    assert api.get(f"/stacks/{first['id']}").json() == first
    assert api.get(f"/stacks/{other['id']}").json() == other


@pytest.mark.parametrize(
    ("data", "error"),
    [(b"{not json", "malformed_json"), (b"", "malformed_json"), (b"\xff\xfe", "malformed_json")],
)
def test_malformed_bodies_are_400(api: Api, data: bytes, error: str) -> None:
    resp = api.post("/stacks", data=data, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"] == error and resp.json()["detail"]


def test_non_object_body_is_rejected(api: Api) -> None:
    resp = api.post("/stacks", json=[1, 2])
    assert resp.status_code == 422 and resp.json()["field"] == "body"


def test_admin_token_is_required(server_url: str) -> None:
    for token in (None, "wrong", "berth_adm_forged"):
        resp = Api(server_url, token).get("/stacks")
        assert resp.status_code == 401 and resp.json()["error"] == "unauthorized", resp.text
    resp = Api(server_url, None).call("GET", "/stacks", headers={"Authorization": "Basic abc"})
    assert resp.status_code == 401


def test_unknown_stack_and_endpoint_are_404(api: Api, repo: Path) -> None:
    for method, path in [("GET", "/stacks/nope"), ("DELETE", "/stacks/nope"),
                         ("GET", "/stacks/nope/instances"), ("GET", "/stacks/nope/events"),
                         ("GET", "/stacks/nope/desired-state"), ("POST", "/stacks/nope/install-tokens"),
                         ("POST", "/stacks/nope/refresh"), ("GET", "/no-such-thing")]:  # fmt: skip
        resp = api.call(method, path)
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json()["error"] == "not_found" and resp.json()["detail"]
    resp = api.put("/stacks/nope", json=stack_body("x", repo))
    assert resp.status_code == 404


def test_delete_removes_stack(api: Api, repo: Path, unique: str) -> None:
    created = create(api, stack_body(f"del-{unique}", repo))
    assert api.delete(f"/stacks/{created['id']}").status_code == 204
    assert api.get(f"/stacks/{created['id']}").status_code == 404
    assert api.get(f"/stacks/{created['id']}/versions").status_code == 404
    # the name is free again
    create(api, stack_body(f"del-{unique}", repo))


def test_git_push_webhook_verified_by_hmac(
    api: Api, server_url: str, tmp_path: Path, unique: str
) -> None:
    import requests

    from controlplane.api_hooks import sign

    repo = init_repo(tmp_path / "hooked")
    commit_files(repo, {"a": "1"}, "one")
    created = create(api, stack_body(f"hook-{unique}", repo))
    hook = api.get(f"/stacks/{created['id']}/webhook").json()
    assert hook["url"] == f"{server_url}/api/v1/hooks/git/{created['id']}"
    new = commit_files(repo, {"a": "2"}, "two")
    body = b'{"ref": "refs/heads/main"}'
    for headers in (
        {},
        {"X-Hub-Signature-256": sign("wrong", body)},
        {"X-Hub-Signature-256": "sha1=abc"},
    ):
        resp = requests.post(hook["url"], data=body, headers=headers, timeout=30)
        assert resp.status_code == 401, resp.text
    assert api.get(f"/stacks/{created['id']}").json()["version"] == 1
    good = {"X-Hub-Signature-256": sign(hook["secret"], body)}
    ping = requests.post(
        hook["url"], data=body, headers={**good, "X-GitHub-Event": "ping"}, timeout=30
    )
    assert ping.status_code == 200 and ping.json()["changed"] is False
    resp = requests.post(hook["url"], data=body, headers=good, timeout=30)
    assert resp.status_code == 200 and resp.json() == {"ok": True, "changed": True, "version": 2}
    assert {s["commit"] for s in api.get(f"/stacks/{created['id']}").json()["services"]} == {new}
    # an unknown stack looks the same as a bad signature
    resp = requests.post(f"{server_url}/api/v1/hooks/git/nope", data=body, headers=good, timeout=30)
    assert resp.status_code == 401


def test_file_repos_only_from_the_operators_directories(api: Api, repo: Path, unique: str) -> None:
    """Issue 15.4: a file:// repo outside --allow-file-repos (here the temp directory) is
    refused, even with a 40-hex ref that skips `git ls-remote`; escapes by `..`, escapes
    and symlinks are resolved first."""
    head = git(repo, "rev-parse", "HEAD")
    link = repo.parent / f"link-{unique}"
    link.symlink_to("/root")
    for url in ("file:///root/secret-repo", f"file://{repo}" + "/.." * 12 + "/root/secret",
                f"file://{link}/secret", f"file://{repo}%2f..%2f..%2froot"):  # fmt: skip
        body = stack_body(f"fr-{unique}", repo)
        body["services"][0].update(repo=url, ref=head)
        resp = api.post("/stacks", json=body)
        assert resp.status_code == 422, (url, resp.text)
        assert resp.json()["field"] == "services[0].repo"
    created = create(api, stack_body(f"fr-{unique}", repo))  # the temp directory is allowed
    assert created["version"] == 1


def test_webhook_replays_are_ignored_and_floods_limited(
    api: Api, tmp_path: Path, unique: str
) -> None:
    """Issue 15 item 16: a delivery id is acted on once; at most 20 deliveries per stack
    per minute (429 with Retry-After), whatever ids they claim."""
    import requests

    from controlplane.api_hooks import sign
    from controlplane.deliveries import DEFAULT_WEBHOOKS_PER_MINUTE

    repo = init_repo(tmp_path / "replayed")
    commit_files(repo, {"a": "1"}, "one")
    created = create(api, stack_body(f"replay-{unique}", repo))
    hook = api.get(f"/stacks/{created['id']}/webhook").json()
    body = b'{"ref": "refs/heads/main"}'
    signed = {"X-Hub-Signature-256": sign(hook["secret"], body)}

    def deliver(delivery: str) -> requests.Response:
        headers = {**signed, "X-GitHub-Delivery": delivery}
        return requests.post(hook["url"], data=body, headers=headers, timeout=30)

    commit_files(repo, {"a": "2"}, "two")
    first = deliver("d-1")
    assert first.status_code == 200 and first.json()["changed"] is True, first.text
    commit_files(repo, {"a": "3"}, "three")  # a replay must not be what picks this up
    replay = deliver("d-1")
    assert replay.status_code == 200 and replay.json().get("duplicate") is True, replay.text
    assert api.get(f"/stacks/{created['id']}").json()["version"] == 2
    for i in range(2, DEFAULT_WEBHOOKS_PER_MINUTE + 1):
        assert deliver(f"d-{i}").status_code == 200
    flood = deliver("d-flood")
    assert flood.status_code == 429 and flood.json()["error"] == "rate_limited", flood.text
    assert 1 <= int(flood.headers["Retry-After"]) <= 60
    # an unsigned flood is 401, not counted against the stack
    assert requests.post(hook["url"], data=body, timeout=30).status_code == 401

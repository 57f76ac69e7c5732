"""The audit trail over real HTTP, a real database (SQLite and PostgreSQL), real git and
real CLI processes: every kind of change is recorded with who, when, where from, what
and the request id; the list filters and pages; nothing deletes a record but retention."""

import asyncio
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import update

from controlplane import audit
from controlplane.api_hooks import sign
from controlplane.db import Database
from controlplane.dburl import parse_db_url
from controlplane.models import AuditRecord, utcnow
from tests.controlplane.harness import Api, ControlPlane, berth, stack_body
from tests.support.controlplane import create_admin_token
from tests.support.gitrepo import commit_files, init_repo


def records(api: Api, **query: Any) -> list[dict[str, Any]]:
    resp = api.get("/audit", params={"limit": 500, **query})
    assert resp.status_code == 200, resp.text
    return resp.json()["records"]


def test_every_api_change_is_recorded(
    api: Api, server: ControlPlane, tmp_path: Path, unique: str
) -> None:
    repo = init_repo(tmp_path / "app")
    commit_files(repo, {"a": "1"}, "one")
    rid = f"req-{unique}"
    created = api.post("/stacks", json=stack_body(f"au-{unique}", repo),
                       headers={"X-Request-Id": rid})  # fmt: skip
    assert created.status_code == 201 and created.headers["X-Request-Id"] == rid
    sid = created.json()["id"]
    body = api.get(f"/stacks/{sid}").json()
    body["services"][0]["env"]["GREETING"] = "hello"
    assert api.put(f"/stacks/{sid}", json=body).json()["version"] == 2
    assert api.post(f"/stacks/{sid}/refresh").json()["changed"] is False
    assert api.post(f"/stacks/{sid}/rollback", json={"version": 1}).json()["version"] == 3
    commit_files(repo, {"a": "2"}, "two")
    hook = api.get(f"/stacks/{sid}/webhook").json()
    raw = b'{"ref": "refs/heads/main"}'
    pushed = requests.post(hook["url"], data=raw, timeout=30,
                           headers={"X-Hub-Signature-256": sign(hook["secret"], raw)})  # fmt: skip
    assert pushed.json()["version"] == 4
    tok = api.post(f"/stacks/{sid}/install-tokens").json()
    reg = Api(server.url, None).post(
        "/agent/register", json={"token": tok["token"], "hostname": f"host-{unique}"}
    )
    assert reg.status_code == 201
    instance_id = reg.json()["instance_id"]
    spare = api.post(f"/stacks/{sid}/install-tokens").json()
    assert api.delete(f"/stacks/{sid}/install-tokens/{spare['id']}").status_code == 204
    assert api.delete(f"/instances/{instance_id}").status_code == 204
    other = f"ci-{unique}"
    create_admin_token(server.db_url, other)
    assert api.delete(f"/tokens/{other}").status_code == 204
    assert api.delete(f"/stacks/{sid}").status_code == 204

    got = list(reversed(records(api, stack=sid)))
    assert [r["action"] for r in got] == [
        "stack.create", "stack.update", "stack.refresh", "stack.rollback", "stack.webhook",
        "install_token.create", "install_token.use", "install_token.create",
        "install_token.revoke", "instance.revoke", "stack.delete",
    ]  # fmt: skip
    versions = [(r["version_from"], r["version_to"]) for r in got[:5]]
    assert versions == [(None, 1), (1, 2), (2, 2), (2, 3), (3, 4)]
    assert got[0]["request_id"] == rid and all(r["request_id"] for r in got)
    assert got[2]["detail"] == {"changed": False}
    assert got[3]["detail"] == {"changed": True, "restored": 1}
    by_token = [r for r in got if r["actor"]["kind"] == "token"]
    assert {r["actor"]["name"] for r in by_token} == {"tests"}
    assert got[4]["actor"] == {"kind": "webhook", "name": "git push"}
    assert got[6]["actor"] == {"kind": "agent", "name": f"host-{unique}"}
    assert got[6]["target"] == instance_id and got[9]["target"] == instance_id
    assert got[8]["target"] == spare["id"]
    assert {r["client_addr"] for r in got} == {"127.0.0.1"}
    # the records outlive the stack they name, by id and by name
    assert got[-1]["stack"] == {"id": sid, "name": f"au-{unique}"}
    assert len(records(api, stack=f"au-{unique}")) == len(got)
    revoked = records(api, action="admin_token.revoke", actor="tests")
    assert revoked[0]["target"] == other


def test_cli_and_dashboard_actions_are_recorded(
    api: Api, server: ControlPlane, repo: Path, unique: str
) -> None:
    env = {"BERTH_DB": server.db_url}
    name = f"ops-{unique}"
    assert berth("controlplane", "token", "create", "--name", name, env=env).returncode == 0
    assert berth("controlplane", "token", "revoke", name, env=env).returncode == 0
    user, password = f"u{unique}", "correct horse battery"
    made = berth("controlplane", "user", "create", user, env=env, input=password + "\n")
    assert made.returncode == 0, made.stderr
    created = records(api, action="admin_token.create")
    assert created[0]["detail"] == {"name": name} and created[0]["actor"]["kind"] == "cli"
    assert records(api, action="admin_token.revoke")[0]["detail"] == {"count": 1}
    assert records(api, action="user.create")[0]["detail"] == {"name": user}

    http = requests.Session()
    form = http.get(server.url + "/login", timeout=10).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    bad = http.post(server.url + "/login", data={"csrf_token": csrf, "username": user,
                    "password": "wrong password!"}, timeout=10)  # fmt: skip
    assert bad.status_code == 401
    good = http.post(server.url + "/login", data={"csrf_token": csrf, "username": user,
                     "password": password}, allow_redirects=False, timeout=10)  # fmt: skip
    assert good.status_code == 302
    logins = records(api, actor=user, action="login.")
    assert [r["action"] for r in logins] == ["login.success", "login.failure"]
    assert "wrong password!" not in str(logins)

    sid = api.post("/stacks", json=stack_body(f"dash-{unique}", repo)).json()["id"]
    page = http.get(f"{server.url}/stacks/{sid}", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = http.post(f"{server.url}/stacks/{sid}/refresh", data={"csrf_token": token},
                     allow_redirects=False, timeout=30)  # fmt: skip
    assert resp.status_code == 302
    (refresh,) = records(api, stack=sid, action="stack.refresh")
    assert refresh["actor"] == {"kind": "user", "name": user}


def test_filters_paging_and_no_delete(
    api: Api, server: ControlPlane, repo: Path, unique: str
) -> None:
    for i in range(3):
        api.post("/stacks", json=stack_body(f"pg{i}-{unique}", repo))
    first = api.get("/audit", params={"action": "stack.create", "limit": 2}).json()
    assert len(first["records"]) == 2 and first["next_before"] == first["records"][-1]["seq"]
    second = api.get("/audit", params={"action": "stack.create", "limit": 2,
                                       "before": first["next_before"]}).json()  # fmt: skip
    assert all(r["seq"] < first["next_before"] for r in second["records"])
    seqs = [r["seq"] for r in first["records"] + second["records"]]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert records(api, since=future) == []
    assert records(api, until=future, action="stack.create")
    for params, field in (({"action": "nope"}, "action"), ({"limit": "0"}, "limit"),
                          ({"since": "yesterday"}, "since"), ({"until": "2026-01-01T00:00:00"}, "until"),
                          ({"before": "x"}, "before")):  # fmt: skip
        resp = api.get("/audit", params=params)
        assert resp.status_code == 400 and resp.json()["field"] == field, resp.text
    assert api.delete("/audit").status_code == 405
    assert Api(server.url, None).get("/audit").status_code == 401
    assert Api(server.url, "berth_adm_wrong").get("/audit").status_code == 401


def test_retention_removes_only_old_records(db_url: str, unique: str) -> None:
    async def run() -> tuple[int, int]:
        db = Database(parse_db_url(db_url))
        try:
            for age in (40, 1):
                await audit.record(db, "stack.refresh", audit.Actor("cli", f"ret-{unique}"),
                                   target=str(age))  # fmt: skip
                async with db.write() as session:
                    await session.execute(
                        update(AuditRecord)
                        .where(AuditRecord.target == str(age), AuditRecord.actor == f"ret-{unique}")
                        .values(at=utcnow() - timedelta(days=age))
                    )
            kept_forever = await audit.prune(db, 0)
            gone = await audit.prune(db, 30)
            rows, _ = await audit.query(db, audit.AuditQuery(actor=f"ret-{unique}"))
            assert [r.target for r in rows] == ["1"]
            return kept_forever, gone
        finally:
            await db.close()

    kept_forever, gone = asyncio.run(run())
    assert kept_forever == 0 and gone >= 1


def test_unknown_action_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown audit action"):
        asyncio.run(audit.record(None, "stack.explode", audit.Actor("cli", "x")))  # type: ignore[arg-type]

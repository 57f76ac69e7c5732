"""Enrollment and the agent API over real HTTP: register, ETag/304, long poll (also
across two control-plane processes on one database), heartbeats, events, revocation."""

import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, update

from controlplane.dburl import parse_db_url
from controlplane.models import InstallToken, utcnow
from tests.controlplane.harness import Api, ControlPlane, stack_body


def new_stack(api: Api, repo: Path, name: str) -> dict[str, Any]:
    resp = api.post("/stacks", json=stack_body(name, repo))
    assert resp.status_code == 201, resp.text
    return resp.json()


def install_token(api: Api, stack_id: str, **body: Any) -> dict[str, Any]:
    resp = api.post(f"/stacks/{stack_id}/install-tokens", json=body or None)
    assert resp.status_code == 201, resp.text
    return resp.json()


def register(server_url: str, token: str, hostname: str = "host-1") -> requests.Response:
    return Api(server_url, None).post(
        "/agent/register", json={"token": token, "hostname": hostname}
    )


@pytest.fixture
def enrolled(api: Api, server_url: str, repo: Path, unique: str) -> dict[str, Any]:
    stack = new_stack(api, repo, f"agent-{unique}")
    tok = install_token(api, stack["id"])
    reg = register(server_url, tok["token"])
    assert reg.status_code == 201, reg.text
    return {"stack": stack, "agent": Api(server_url, reg.json()["credential"]), **reg.json()}


def test_install_token_shape(api: Api, server_url: str, repo: Path, unique: str) -> None:
    stack = new_stack(api, repo, f"tok-{unique}")
    tok = install_token(api, stack["id"])
    assert tok["token"].startswith("berth_ins_") and tok["expires_at"].endswith("Z")
    assert tok["install_command"] == (
        f"curl -fsSL {server_url}/install.sh | sudo sh -s -- --token {tok['token']}"
    )
    bad = api.post(f"/stacks/{stack['id']}/install-tokens", json={"ttl_s": 5})
    assert bad.status_code == 422 and bad.json()["field"] == "ttl_s"


def test_register_then_desired_state_with_etag(enrolled: dict[str, Any]) -> None:
    assert enrolled["stack_id"] == enrolled["stack"]["id"]
    agent: Api = enrolled["agent"]
    first = agent.get("/agent/desired-state")
    assert first.status_code == 200
    doc = first.json()
    assert first.headers["ETag"] == f'"{doc["hash"]}"'
    assert doc["stack_id"] == enrolled["stack_id"] and doc["version"] == 1
    assert set(doc) >= {
        "stack_id",
        "version",
        "hash",
        "poll_interval_s",
        "security_mode",
        "proxy",
        "dns",
        "services",
    }
    assert all(len(s["commit"]) == 40 for s in doc["services"])
    again = agent.get("/agent/desired-state", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.headers["ETag"] == first.headers["ETag"]
    other = agent.get("/agent/desired-state", headers={"If-None-Match": '"0000"'})
    assert other.status_code == 200


def test_install_token_is_one_time(api: Api, server_url: str, repo: Path, unique: str) -> None:
    stack = new_stack(api, repo, f"once-{unique}")
    tok = install_token(api, stack["id"])
    assert register(server_url, tok["token"]).status_code == 201
    again = register(server_url, tok["token"])
    assert again.status_code == 401 and "already used" in again.json()["detail"]


def test_concurrent_registrations_with_one_token(
    api: Api, server_url: str, repo: Path, unique: str
) -> None:
    stack = new_stack(api, repo, f"race-{unique}")
    tok = install_token(api, stack["id"])
    codes: list[int] = []

    def go(i: int) -> None:
        codes.append(register(server_url, tok["token"], f"h{i}").status_code)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201, 401, 401, 401, 401, 401]
    assert len(api.get(f"/stacks/{stack['id']}/instances").json()["instances"]) == 1


def test_expired_revoked_and_unknown_tokens(
    api: Api, server_url: str, db_url: str, repo: Path, unique: str
) -> None:
    stack = new_stack(api, repo, f"exp-{unique}")
    expired = install_token(api, stack["id"])
    engine = create_engine(parse_db_url(db_url).sync_url)
    with engine.begin() as conn:  # time travel: the token was issued two hours ago
        conn.execute(
            update(InstallToken)
            .where(InstallToken.id == expired["id"])
            .values(expires_at=utcnow() - timedelta(hours=1))
        )
    engine.dispose()
    resp = register(server_url, expired["token"])
    assert resp.status_code == 401 and "expired" in resp.json()["detail"]

    revoked = install_token(api, stack["id"])
    assert api.delete(f"/stacks/{stack['id']}/install-tokens/{revoked['id']}").status_code == 204
    resp = register(server_url, revoked["token"])
    assert resp.status_code == 401 and "revoked" in resp.json()["detail"]
    listed = api.get(f"/stacks/{stack['id']}/install-tokens").json()["install_tokens"]
    assert {t["id"] for t in listed} == {expired["id"], revoked["id"]}
    assert all("token" not in t for t in listed)

    resp = register(server_url, "berth_ins_nope")
    assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    "body",
    [{}, {"token": 5, "hostname": "h"}, {"token": "x"}, {"token": "x", "hostname": ""}, [1]],
)
def test_register_bad_bodies(server_url: str, body: Any) -> None:
    resp = Api(server_url, None).post("/agent/register", json=body)
    assert resp.status_code in (400, 422) and resp.json()["field"], resp.text


def test_agent_needs_a_valid_credential(server_url: str) -> None:
    for cred in (None, "berth_agt_forged"):
        agent = Api(server_url, cred)
        for method, path in [
            ("GET", "/agent/desired-state"),
            ("POST", "/agent/heartbeat"),
            ("POST", "/agent/events"),
        ]:
            resp = agent.call(method, path, json={})
            assert resp.status_code == 401, (cred, path, resp.text)


def test_long_poll_returns_on_change(api: Api, enrolled: dict[str, Any], repo: Path) -> None:
    agent: Api = enrolled["agent"]
    etag = agent.get("/agent/desired-state").headers["ETag"]
    # nothing changes: 304 after the wait
    resp = agent.get(
        "/agent/desired-state", params={"wait": "0.5"}, headers={"If-None-Match": etag}
    )
    assert resp.status_code == 304
    result: dict[str, requests.Response] = {}
    waiter = threading.Thread(
        target=lambda: result.update(
            r=agent.get(
                "/agent/desired-state", params={"wait": "30"}, headers={"If-None-Match": etag}
            )
        )
    )
    waiter.start()
    changed = stack_body(enrolled["stack"]["name"], repo, poll_interval_s=3)
    assert api.put(f"/stacks/{enrolled['stack_id']}", json=changed).json()["version"] == 2
    waiter.join(25)
    assert not waiter.is_alive(), "long poll did not return after the change"
    assert result["r"].status_code == 200 and result["r"].json()["version"] == 2


def test_long_poll_across_two_processes(
    api: Api, enrolled: dict[str, Any], repo: Path, db_url: str, tmp_path: Path
) -> None:
    second = ControlPlane(db_url, tmp_path)
    try:
        agent_b = Api(second.url, enrolled["agent"].http.headers["Authorization"].split()[1])
        etag = agent_b.get("/agent/desired-state").headers["ETag"]
        result: dict[str, requests.Response] = {}
        waiter = threading.Thread(
            target=lambda: result.update(
                r=agent_b.get(
                    "/agent/desired-state", params={"wait": "30"}, headers={"If-None-Match": etag}
                )
            )
        )
        waiter.start()
        changed = stack_body(enrolled["stack"]["name"], repo, poll_interval_s=4)
        assert api.put(f"/stacks/{enrolled['stack_id']}", json=changed).status_code == 200  # node A
        waiter.join(25)
        assert not waiter.is_alive(), "node B's waiter was not woken by node A's change"
        assert result["r"].status_code == 200 and result["r"].json()["poll_interval_s"] == 4
    finally:
        second.stop()


@pytest.mark.parametrize("wait", ["-1", "61", "soon", "nan"])
def test_bad_wait_is_400(enrolled: dict[str, Any], wait: str) -> None:
    resp = enrolled["agent"].get("/agent/desired-state", params={"wait": wait})
    assert resp.status_code == 400 and resp.json()["field"] == "wait"


HEARTBEAT = {
    "agent_version": "0.1.0",
    "applied_version": 1,
    "state": "applied",
    "services": [
        {"name": "web", "commit": "a" * 40, "state": "running", "health": "healthy", "restarts": 2}
    ],
    "security": {"mode": "open", "exposure": "daemon-port"},
    "uptime_s": 12,
}


def test_heartbeat_becomes_instance_status(api: Api, enrolled: dict[str, Any]) -> None:
    resp = enrolled["agent"].post("/agent/heartbeat", json=HEARTBEAT)
    assert resp.status_code == 200, resp.text
    [inst] = api.get(f"/stacks/{enrolled['stack_id']}/instances").json()["instances"]
    assert inst["id"] == enrolled["instance_id"] and inst["hostname"] == "host-1"
    assert inst["status"] == "online" and inst["last_seen"].endswith("Z")
    assert inst["applied_version"] == 1 and inst["state"] == "applied"
    assert inst["services"] == HEARTBEAT["services"] and inst["security"] == HEARTBEAT["security"]
    assert inst["agent_version"] == "0.1.0" and inst["uptime_s"] == 12


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"applied_version": "1"}, "applied_version"),
        ({"services": {"web": 1}}, "services"),
        ({"services": [1]}, "services"),
        ({"security": []}, "security"),
        ({"state": 5}, "state"),
        ({"services": [{"name": "web", "pid": "12"}]}, "services[0].pid"),
        ({"services": [{"commit": "a" * 40}]}, "services[0].name"),
        ([1], "body"),
    ],
)
def test_bad_heartbeats(enrolled: dict[str, Any], body: Any, field: str) -> None:
    resp = enrolled["agent"].post("/agent/heartbeat", json=body)
    assert resp.status_code in (400, 422) and resp.json()["field"] == field, resp.text


def _event(**kw: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": "build",
        "service": "web",
        "message": "built",
        "at": "2024-05-01T12:00:00.000Z",
        **kw,
    }


def test_events_are_idempotent_and_keep_extra_keys(api: Api, enrolled: dict[str, Any]) -> None:
    agent: Api = enrolled["agent"]
    batch = [
        _event(duration_s=3.5),
        _event(type="crash", service="api", exit_code=1),
        _event(service=None, type="config"),
    ]
    first = agent.post("/agent/events", json={"events": batch})
    assert first.status_code == 200 and first.json()["accepted"] == [e["id"] for e in batch]
    resent = agent.post("/agent/events", json={"events": [batch[1], _event(id=batch[0]["id"])]})
    assert resent.json()["accepted"] == [batch[1]["id"], batch[0]["id"]]
    listed = api.get(f"/stacks/{enrolled['stack_id']}/events").json()["events"]
    assert [e["id"] for e in listed] == [e["id"] for e in reversed(batch)]  # newest first
    crash = listed[1]
    assert crash["instance_id"] == enrolled["instance_id"] and crash["exit_code"] == 1
    assert crash["at"] == "2024-05-01T12:00:00.000Z" and crash["type"] == "crash"
    assert listed[2]["duration_s"] == 3.5


def test_event_filters_and_pages(api: Api, enrolled: dict[str, Any]) -> None:
    agent: Api = enrolled["agent"]
    batch = [
        _event(type="health" if i % 2 else "build", at=f"2024-05-01T12:00:{i:02d}Z")
        for i in range(7)
    ]
    agent.post("/agent/events", json={"events": batch})
    base = f"/stacks/{enrolled['stack_id']}/events"
    assert len(api.get(base, params={"type": "health"}).json()["events"]) == 3
    assert len(api.get(base, params={"since": "2024-05-01T12:00:05Z"}).json()["events"]) == 2
    assert api.get(base, params={"service": "nope"}).json()["events"] == []
    assert len(api.get(base, params={"instance": enrolled["instance_id"]}).json()["events"]) == 7
    seen, before = [], None
    while True:
        page = api.get(base, params={"limit": 3, **({"before": before} if before else {})}).json()
        seen += [e["id"] for e in page["events"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == [e["id"] for e in reversed(batch)]
    for params in ({"limit": 0}, {"limit": "x"}, {"since": "yesterday"}):
        resp = api.get(base, params=params)
        assert resp.status_code in (400, 422) and resp.json()["field"], params


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"id": ""}, "events[0].id"),
        ({"id": 7}, "events[0].id"),
        ({"type": ""}, "events[0].type"),
        ({"at": "yesterday"}, "events[0].at"),
        ({"at": "2024-05-01T12:00:00"}, "events[0].at"),
        ({"message": ["x"]}, "events[0].message"),
    ],
)
def test_bad_events_store_nothing(
    api: Api, enrolled: dict[str, Any], event: dict[str, Any], field: str
) -> None:
    good = _event()
    resp = enrolled["agent"].post("/agent/events", json={"events": [_event(**event), good]})
    assert resp.status_code == 422 and resp.json()["field"] == field, resp.text
    assert api.get(f"/stacks/{enrolled['stack_id']}/events").json()["events"] == []
    assert enrolled["agent"].post("/agent/events", json={"oops": []}).status_code == 400


def test_revoked_instance_loses_access_at_once(api: Api, enrolled: dict[str, Any]) -> None:
    agent: Api = enrolled["agent"]
    assert agent.get("/agent/desired-state").status_code == 200
    assert api.delete(f"/instances/{enrolled['instance_id']}").status_code == 204
    resp = agent.get("/agent/desired-state")
    assert resp.status_code == 401 and "revoked" in resp.json()["detail"]
    assert agent.post("/agent/heartbeat", json=HEARTBEAT).status_code == 401
    [inst] = api.get(f"/stacks/{enrolled['stack_id']}/instances").json()["instances"]
    assert inst["status"] == "revoked"
    assert api.delete("/instances/nope").status_code == 404


def test_deleted_stack_disowns_its_agents(api: Api, enrolled: dict[str, Any]) -> None:
    assert api.delete(f"/stacks/{enrolled['stack_id']}").status_code == 204
    assert enrolled["agent"].get("/agent/desired-state").status_code == 401

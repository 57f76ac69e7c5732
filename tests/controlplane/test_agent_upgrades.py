"""Agent versions through a real control plane serving a wheelhouse (issue 16): the served
version, each instance's version and whether it is behind (API and `berth stack
instances`), and the rolling upgrade's signal in the heartbeat answers: one server at a
time, the next only after the previous one's healthy heartbeat, none after a failure."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane.harness import Api, ControlPlane, berth
from tests.controlplane.test_agent_api import install_token, new_stack, register
from tests.support.berth import wait_until

SERVED = "0.2.0"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("wheelhouse")
    # only the file name says the version (the control plane never opens the wheel)
    (where / f"berth-{SERVED}-py3-none-any.whl").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    (where / "requests-2.31.0-py3-none-any.whl").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    return where


@pytest.fixture(scope="module")
def server(  # the conftest's, with a wheelhouse
    db_url: str, admin_token: str, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    cp = ControlPlane(db_url, tmp_path_factory.mktemp("logs"), "--wheelhouse", str(wheelhouse))
    yield cp
    cp.stop()


def beat(agent: Api, version: str, state: str = "applied", **extra: Any) -> dict[str, Any]:
    body = {"agent_version": version, "applied_version": 1, "state": state, **extra}
    resp = agent.post("/agent/heartbeat", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def test_served_version_and_behind(api: Api, server_url: str, repo: Path, unique: str) -> None:
    assert Api(server_url, None).get("/version").json()["agent"] == SERVED
    stack = new_stack(api, repo, f"ver-{unique}")
    reg = register(server_url, install_token(api, stack["id"])["token"]).json()
    agent = Api(server_url, reg["credential"])
    beat(agent, "0.1.0")
    [inst] = api.get(f"/stacks/{stack['id']}/instances").json()["instances"]
    assert (inst["agent_version"], inst["served_version"], inst["agent_behind"]) == (
        "0.1.0", SERVED, True,
    )  # fmt: skip
    listing = berth("stack", "instances", stack["name"],
                    env={"BERTH_URL": server_url, "BERTH_TOKEN": api.http.headers["Authorization"][7:]})  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert "agent 0.1.0\tbehind 0.2.0" in listing.stdout, listing.stdout
    beat(agent, SERVED)
    [inst] = api.get(f"/stacks/{stack['id']}/instances").json()["instances"]
    assert inst["agent_behind"] is False


def test_rolling_upgrade_signals_one_server_at_a_time(
    api: Api, server_url: str, repo: Path, unique: str
) -> None:
    stack = new_stack(api, repo, f"roll-{unique}")
    agents = []
    for _ in range(3):
        reg = register(server_url, install_token(api, stack["id"])["token"]).json()
        agents.append((reg["instance_id"], Api(server_url, reg["credential"])))
    for _, agent in agents:
        assert "upgrade" not in beat(agent, "0.1.0")  # off by default
    path = f"/stacks/{stack['id']}/agent-upgrades"
    assert api.get(path).json()["state"] == "off"
    bad = api.put(path, json={"auto": "yes"})
    assert bad.status_code == 422 and bad.json()["field"] == "auto"
    on = api.put(path, json={"auto": True}).json()
    assert (on["auto"], on["state"], on["upgrading"]) == (True, "rolling", agents[0][0])

    (_, first), (_, second), (third_id, third) = agents
    assert beat(first, "0.1.0")["upgrade"] == {"version": SERVED}
    assert "upgrade" not in beat(second, "0.1.0")
    # the first upgraded but is still applying: nobody else goes yet
    beat(first, SERVED, state="applying")
    wait_until("waiting for the first", lambda: api.get(path).json()["state"] == "waiting", 10)
    assert "upgrade" not in beat(second, "0.1.0")
    # healthy now: the second's turn (the answer follows within the cache's refresh)
    beat(first, SERVED)
    wait_until("the second's turn", lambda: "upgrade" in beat(second, "0.1.0"), 10)
    # the second fails and switches back: the rollout stops, the third is never told
    failed = {"to": SERVED, "outcome": "failed", "detail": "berth-reconciler.service is failed"}
    beat(second, "0.1.0", upgrade=failed)
    wait_until("stopped", lambda: api.get(path).json()["state"] == "stopped", 10)
    got = api.get(path).json()
    assert "berth-reconciler.service is failed" in got["message"] and got["upgrading"] is None
    # (the answers follow within the cache's refresh; the agent also refuses a version that
    # just failed on it: agent/reconciler/upgraderequest.py)
    wait_until("no signal after the failure",
               lambda: "upgrade" not in beat(second, "0.1.0", upgrade=failed), 10)  # fmt: skip
    assert "upgrade" not in beat(third, "0.1.0")
    off = api.put(path, json={"auto": False}).json()
    assert (off["auto"], off["state"]) == (False, "off")
    assert third_id

"""The servers page with a wheelhouse (issue 16): the agent version served, a server marked
behind, and the rolling agent upgrade switched on with its button (real Chromium)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from controlplane.demo import example_stack, make_example_repo
from tests.controlplane.harness import Api, ControlPlane
from tests.dashboard.a11y import assert_accessible
from tests.dashboard.conftest import FakeAgent, Server, snap
from tests.support.ports import free_port


class ServerWithWheelhouse(Server):
    def start(self, port: int | None = None) -> None:
        wheelhouse = self.workdir / "wheelhouse"
        wheelhouse.mkdir(exist_ok=True)
        (wheelhouse / "berth-0.2.0-py3-none-any.whl").write_bytes(b"PK\x05\x06" + b"\0" * 18)
        port = port or free_port()
        self.cp = ControlPlane(self.db_url, self.workdir, "--public-url",
                               f"http://127.0.0.1:{port}", "--wheelhouse", str(wheelhouse),
                               port=port)  # fmt: skip
        self.port, self.url = self.cp.port, self.cp.url
        self.api = Api(self.url, self.admin_token)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = ServerWithWheelhouse(tmp_path_factory.mktemp("dashboard-upgrades"))
    yield s
    s.stop()


def test_behind_and_the_rolling_upgrade_button(page: Any, server: Server, tmp_path: Path) -> None:
    spec = example_stack(make_example_repo(tmp_path / "repos" / "example"))
    spec["name"] = "fleet"
    resp = server.api.post("/stacks", json=spec)
    assert resp.status_code == 201, resp.text
    stack_id = resp.json()["id"]
    old, new = FakeAgent(server, stack_id, "edge-1"), FakeAgent(server, stack_id, "edge-2")
    old.heartbeat(1, "applied", [], agent_version="0.1.0")
    new.heartbeat(1, "applied", [], agent_version="0.2.0")

    page.goto(f"{server.url}/stacks/{stack_id}/instances")
    panel = page.locator("#agent-upgrades")
    expect(panel).to_contain_text("0.2.0")
    expect(panel).to_contain_text("off")
    expect(page.locator('#instances tr[data-instance="edge-1"]')).to_contain_text("behind")
    expect(page.locator('#instances tr[data-instance="edge-2"]')).not_to_contain_text("behind")
    assert_accessible(page)
    snap(page, "instances-agent-upgrades")

    page.get_by_role("button", name="Upgrade agents automatically").click()
    expect(panel).to_contain_text("rolling")
    expect(panel).to_contain_text("upgrading edge-1 to 0.2.0 (2 of 2)")
    assert server.api.get(f"/stacks/{stack_id}/agent-upgrades").json()["upgrading"] == (
        old.instance_id
    )
    page.get_by_role("button", name="Stop automatic agent upgrades").click()
    expect(panel).to_contain_text("off")

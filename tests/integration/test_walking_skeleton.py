"""Issue 2's walking skeleton, end to end: control plane and agent as real processes, a
real git repository, the example stack served through the external proxy, then a new
commit deployed by re-resolving the ref, with nothing restarted by hand."""

import os

import pytest

from controlplane.demo import example_stack, make_example_repo, port_free
from tests.support.berth import (
    Api,
    agent_argv,
    replace_in_file,
    start_agent,
    start_controlplane,
    stop,
    text,
    wait_until,
)
from tests.support.dirs import world_dir
from tests.support.env import require, require_root
from tests.support.gitrepo import commit_files, git
from tests.support.ports import free_port


@pytest.fixture
def workspace():
    with world_dir("berth-it-") as d:
        yield d


def test_example_stack_deploys_and_follows_a_new_commit(xprocess, workspace):
    require_root()  # services run as an unprivileged user; the internal proxy binds :80
    require(
        port_free("127.0.0.1", 80),
        "127.0.0.1:80 is taken by another process (the internal proxy needs it)",
    )
    repo = workspace / "example-repo"
    repo_url = make_example_repo(repo)
    cp = start_controlplane(xprocess, "cp-skeleton", workspace, free_port())
    api = Api(cp)
    agent_name = "agent-skeleton"
    try:
        proxy_port = free_port()
        stack = api(
            "POST",
            "/stacks",
            expect=201,
            json=example_stack(repo_url, poll_interval_s=1, proxy_port=proxy_port),
        )
        first_commit = git(repo, "rev-parse", "HEAD")
        assert {s["commit"] for s in stack["services"]} == {first_commit}
        token = api("POST", f"/stacks/{stack['id']}/install-tokens", expect=201)["token"]
        start_agent(
            xprocess,
            agent_name,
            agent_argv(
                workspace / "agent", cp.url, token, proxy_port=proxy_port, dns_port=free_port()
            ),
        )

        def applied(version):
            instances = api("GET", f"/stacks/{stack['id']}/instances")["instances"]
            return (
                instances
                and instances[0]["applied_version"] == version
                and instances[0]["state"] == "applied"
            )

        wait_until("the stack to be applied", lambda: applied(1))
        proxy = f"http://127.0.0.1:{proxy_port}"
        assert "Hello from the api service" in text(proxy + "/api/hello")
        # web fetched that from api through http://api.svc.internal (DNS wiring + internal proxy)
        assert "Hello from the api service" in text(proxy + "/")

        instance = api("GET", f"/stacks/{stack['id']}/instances")["instances"][0]
        assert {s["name"]: s["commit"] for s in instance["services"]} == {
            "api": first_commit,
            "web": first_commit,
        }
        assert all(s["health"] == "healthy" for s in instance["services"])

        # a new commit, the ref re-resolved: the proxy serves it without anything restarted by hand
        replace_in_file(
            repo / "api" / "app.py", "Hello from the api service", "Hello from api, second release"
        )
        second_commit = commit_files(repo, {}, "second release")
        refreshed = api("POST", f"/stacks/{stack['id']}/refresh")
        assert refreshed["version"] == 2 and refreshed["changed"]
        wait_until(
            "the new commit to be served", lambda: "second release" in text(proxy + "/api/hello")
        )
        wait_until("web to show it", lambda: "second release" in text(proxy + "/"))
        wait_until("version 2 to be applied", lambda: applied(2))
        instance = api("GET", f"/stacks/{stack['id']}/instances")["instances"][0]
        assert {s["commit"] for s in instance["services"]} == {second_commit}

        events = api("GET", f"/stacks/{stack['id']}/events")
        types = {e["type"] for e in events["events"]}
        assert {"config", "deploy", "build", "run"} <= types
        assert all(e["instance_id"] == instance["id"] for e in events["events"])

        # services never run as root
        for svc in instance["services"]:
            assert os.stat(f"/proc/{svc['pid']}").st_uid != 0
    finally:
        stop(xprocess, agent_name)
        stop(xprocess, cp.name)

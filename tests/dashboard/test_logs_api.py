"""`POST /api/v1/agent/logs` over HTTP: the agent's credential, bad bodies, the bounded
tail, and the live stream that a service page listens to."""

import json
import threading
from pathlib import Path

import requests

from controlplane.dashboard.logstore import TAIL_BYTES
from tests.controlplane.harness import stack_body
from tests.dashboard.conftest import FakeAgent, Server
from tests.dashboard.test_auth import logged_in
from tests.support.gitrepo import commit_files, init_repo


def make_stack(server: Server, tmp_path: Path, name: str) -> dict:
    repo = init_repo(tmp_path / "repo")
    commit_files(repo, {"app.py": "print(1)\n"}, "v1")
    resp = server.api.post("/stacks", json=stack_body(name, repo))
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_log_chunks_need_an_agent_credential(server: Server, tmp_path: Path) -> None:
    stack = make_stack(server, tmp_path, "logs-auth")
    url = server.url + "/api/v1/agent/logs"
    body = {"chunks": [{"service": "web", "stream": "run", "data": "hi\n"}]}
    assert requests.post(url, json=body, timeout=10).status_code == 401
    assert requests.post(url, json=body, headers={"Authorization": f"Bearer {server.admin_token}"},
                         timeout=10).status_code == 401  # fmt: skip
    agent = FakeAgent(server, stack["id"], "logs-auth-1")
    assert agent.log("web", "run", "hello\n").json() == {"accepted": 1}
    bad = agent.post("/logs", {"chunks": [{"service": "web", "stream": "stderr", "data": "x"}]})
    assert bad.status_code == 422 and bad.json()["field"] == "chunks[0].stream"
    raw = agent.http.post(agent.base + "/logs", data=b"{not json", timeout=10)
    assert raw.status_code == 400 and raw.json()["error"] == "malformed_json"
    server.api.delete(f"/instances/{agent.instance_id}")
    assert agent.log("web", "run", "after revoke\n").status_code == 401


def test_tail_is_bounded_and_build_log_shows_the_newest_commit(
    server: Server, tmp_path: Path
) -> None:
    stack = make_stack(server, tmp_path, "logs-tail")
    agent = FakeAgent(server, stack["id"], "logs-tail-1")
    line = "x" * 1023 + "\n"
    for i in range(5):  # 5 × 64 KiB = 320 KiB > the 256 KiB tail
        chunk = f"batch {i}\n" + line * 63
        assert agent.log("web", "run", chunk).status_code == 200
    agent.log("web", "build", "old build\n", commit="a" * 40)
    agent.log("web", "build", "new build\n", commit="b" * 40)
    http = logged_in(server.url)
    page = http.get(f"{server.url}/stacks/{stack['id']}/instances/{agent.instance_id}/services/web",
                    timeout=10).text  # fmt: skip
    run_log = page.split('id="run-log"')[1].split("</pre>")[0]
    assert "batch 0" not in run_log and "batch 4" in run_log
    assert len(run_log) <= TAIL_BYTES + 1000
    build_log = page.split('id="build-log"')[1].split("</pre>")[0]
    assert "new build" in build_log and "old build" not in build_log


def test_live_stream_delivers_chunks_of_the_followed_service_only(
    server: Server, tmp_path: Path
) -> None:
    stack = make_stack(server, tmp_path, "logs-live")
    agent = FakeAgent(server, stack["id"], "logs-live-1")
    agent.log("web", "run", "before\n")
    http = logged_in(server.url)
    got: list[tuple[str, dict]] = []
    done = threading.Event()

    def listen() -> None:
        url = f"{server.url}/live?stack={stack['id']}&logs={agent.instance_id}/web&after=0"
        with http.get(url, stream=True, timeout=20) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            event = None
            for raw in resp.iter_lines(decode_unicode=True):
                if raw.startswith("event: "):
                    event = raw[7:]
                elif raw.startswith("data: ") and event:
                    got.append((event, json.loads(raw[6:])))
                    if event == "log" and "after\n" in got[-1][1]["data"]:
                        done.set()
                        return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    deadline = 0
    while not any(e == "hello" for e, _ in got) and deadline < 100:
        threading.Event().wait(0.05)
        deadline += 1
    agent.log("api", "run", "other service\n")
    agent.log("web", "run", "after\n")
    assert done.wait(10), got
    logs = [d["data"] for e, d in got if e == "log"]
    assert logs == ["before\n", "after\n"]  # catch-up from `after=0`, then live; no "api"
    assert got[0][0] == "hello"

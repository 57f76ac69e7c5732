"""Issue 15 item 12, the agent's side: a 429 from the control plane keeps the outbox and
the log offsets, and the agent waits as long as Retry-After says before sending again.
A real HTTP server on loopback stands in for the control plane's agent API."""

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.reconciler.cpclient import ControlPlaneClient, Throttled, retry_after_s
from agent.reconciler.reconciler import Reconciler
from agent.schema.report import LogChunk
from agent.settings import AgentSettings


class FakeControlPlane(ThreadingHTTPServer):
    """Answers 429 (Retry-After: 7) while `throttled`, else acknowledges every event id."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.throttled = True
        self.posts: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeControlPlane

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.posts.append(self.path)
        if self.server.throttled:
            self.send_response(429)
            self.send_header("Retry-After", "7")
            answer = {"error": "rate_limited", "detail": "wait"}
        else:
            self.send_response(200)
            answer = {"accepted": [e["id"] for e in body.get("events", [])]}
        data = json.dumps(answer).encode()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def cp() -> Iterator[FakeControlPlane]:
    server = FakeControlPlane()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_client_raises_throttled_with_the_wait(cp: FakeControlPlane) -> None:
    client = ControlPlaneClient(cp.url, "berth_agt_x")
    with pytest.raises(Throttled) as err:
        client.send_logs([LogChunk("a", "run", None, "x")])
    assert err.value.retry_after_s == 7
    assert retry_after_s(None) == 60 and retry_after_s("junk") == 60
    assert retry_after_s("0") == 1 and retry_after_s("99999") == 600


def test_outbox_is_kept_and_not_resent_before_retry_after(
    cp: FakeControlPlane, tmp_path: Path
) -> None:
    rec = Reconciler(AgentSettings(state_dir=tmp_path, run_dir=tmp_path / "run")).uplink
    client = ControlPlaneClient(cp.url, "berth_agt_x")
    ids = [rec.store.add_event("run", f"event {i}") for i in range(3)]

    async def scenario() -> None:
        before = time.monotonic()
        await rec.flush_events(client)
        assert [e["id"] for e in rec.store.pending_events()] == ids  # kept
        assert 7 <= rec.events_resume_at - before <= 8
        await rec.flush_events(client)  # within the wait: nothing is sent
        assert cp.posts == ["/api/v1/agent/events"]
        cp.throttled = False
        rec.events_resume_at = time.monotonic()  # the wait is over
        await rec.flush_events(client)
        assert rec.store.pending_events() == []

    asyncio.run(scenario())

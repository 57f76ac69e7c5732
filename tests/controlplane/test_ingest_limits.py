"""Issue 15 item 12, the control plane's side: an agent's events and logs are kept only
for its stack's services, bounded per instance per minute (429 with Retry-After), and
deleted after their retention. A real control plane started with small limits."""

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, update

from controlplane.db import Database
from controlplane.dburl import parse_db_url
from controlplane.ingest import Retention
from controlplane.limits import Limits
from controlplane.models import Event, LogChunk, utcnow
from tests.controlplane.harness import Api, ControlPlane
from tests.controlplane.test_agent_api import _event, install_token, new_stack, register

EVENTS_PER_MINUTE, LOG_BYTES_PER_MINUTE = 10, 3000


@pytest.fixture(scope="module")
def limited(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(db_url, tmp_path_factory.mktemp("limited"),
                      "--agent-events-per-minute", str(EVENTS_PER_MINUTE),
                      "--agent-log-bytes-per-minute", str(LOG_BYTES_PER_MINUTE))  # fmt: skip
    yield cp
    cp.stop()


def enroll(cp: ControlPlane, admin_token: str, repo: Path) -> tuple[Api, Api, str]:
    api = Api(cp.url, admin_token)
    stack = new_stack(api, repo, f"ingest-{uuid.uuid4().hex[:8]}")
    reg = register(cp.url, install_token(api, stack["id"])["token"])
    assert reg.status_code == 201, reg.text
    return api, Api(cp.url, reg.json()["credential"]), stack["id"]


def chunk(service: str, data: str) -> dict[str, Any]:
    return {"service": service, "stream": "run", "commit": None, "data": data}


def stored_log_services(db_url: str, stack_id: str) -> set[str]:
    engine = create_engine(parse_db_url(db_url).sync_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(LogChunk.service).where(LogChunk.stack_id == stack_id))
            return {r[0] for r in rows}
    finally:
        engine.dispose()


def test_only_the_stacks_services(
    limited: ControlPlane, admin_token: str, repo: Path, db_url: str
) -> None:
    api, agent, stack_id = enroll(limited, admin_token, repo)
    batch = [_event(service="web"), _event(service="ghost-1"), _event(service=None)]
    resp = agent.post("/agent/events", json={"events": batch})
    assert resp.status_code == 200, resp.text
    # every id may be forgotten (no endless resend); the invented service is refused
    assert resp.json()["accepted"] == [e["id"] for e in batch]
    assert resp.json()["refused"] == [{"id": batch[1]["id"], "field": "events[1].service",
                                       "detail": "not a service of this stack"}]  # fmt: skip
    listed = api.get(f"/stacks/{stack_id}/events").json()["events"]
    assert {e["id"] for e in listed} == {batch[0]["id"], batch[2]["id"]}
    logs = agent.post("/agent/logs", json={"chunks": [chunk("web", "ok\n"), chunk("ghost-2", "x")]})
    assert logs.status_code == 200 and logs.json()["accepted"] == 1, logs.text
    assert logs.json()["refused"]["services"] == ["ghost-2"]
    assert stored_log_services(db_url, stack_id) == {"web"}


def test_events_and_log_bytes_are_capped_per_minute(
    limited: ControlPlane, admin_token: str, repo: Path
) -> None:
    _, agent, _ = enroll(limited, admin_token, repo)
    ok = agent.post("/agent/events", json={"events": [_event() for _ in range(EVENTS_PER_MINUTE)]})
    assert ok.status_code == 200, ok.text
    over = agent.post("/agent/events", json={"events": [_event()]})
    assert over.status_code == 429 and over.json()["error"] == "rate_limited", over.text
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    assert agent.post("/agent/logs", json={"chunks": [chunk("web", "x" * 2000)]}).ok
    logs_over = agent.post("/agent/logs", json={"chunks": [chunk("api", "y" * 2000)]})
    assert logs_over.status_code == 429 and "Retry-After" in logs_over.headers
    # a batch into an empty window always fits, however large (no batch is stuck for ever)
    _, fresh, _ = enroll(limited, admin_token, repo)
    assert fresh.post("/agent/logs", json={"chunks": [chunk("web", "z" * 5000)]}).ok


def test_retention_deletes_old_events_and_logs(
    limited: ControlPlane, admin_token: str, repo: Path, db_url: str
) -> None:
    _, agent, stack_id = enroll(limited, admin_token, repo)
    old, new = _event(), _event()
    assert agent.post("/agent/events", json={"events": [old, new]}).ok
    assert agent.post("/agent/logs", json={"chunks": [chunk("web", "old\n")]}).ok
    engine = create_engine(parse_db_url(db_url).sync_url)
    with engine.begin() as conn:
        long_ago = utcnow() - timedelta(days=40)
        conn.execute(update(Event).where(Event.event_id == old["id"]).values(received_at=long_ago))
        conn.execute(update(LogChunk).where(LogChunk.stack_id == stack_id).values(received_at=long_ago))  # fmt: skip
    engine.dispose()

    async def prune() -> None:
        db = Database(parse_db_url(db_url))
        try:
            await Retention(db, Limits(events_retention_days=30, logs_retention_days=7)).prune()
        finally:
            await db.close()

    asyncio.run(prune())
    listed = Api(limited.url, admin_token).get(f"/stacks/{stack_id}/events").json()["events"]
    assert [e["id"] for e in listed] == [new["id"]]
    assert stored_log_services(db_url, stack_id) == set()

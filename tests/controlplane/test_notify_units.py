"""The notifier's pure parts (classification, backoff, messages, channel validation) and
its database parts driven directly on a real SQLite database: bounded attempts, a server
going offline and coming back, a restart of the scans that enqueues nothing twice."""

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from controlplane.db import Database
from controlplane.dburl import parse_db_url
from controlplane.errors import Unprocessable
from controlplane.models import Instance, NotificationOutbox, Stack, utcnow
from controlplane.notify import channels, messages, outbox, store
from controlplane.notify.events import classify, wanted
from controlplane.notify.notifier import Notifier
from controlplane.notify.outbox import MAX_ATTEMPTS, Notice, backoff_s
from controlplane.secrets import Keyring
from tests.support.controlplane import migrate


@pytest.mark.parametrize(
    ("type_", "message", "extra", "kind"),
    [
        ("run", "serving abc on port 1", {"commit": "a"}, "deploy.succeeded"),
        ("run", "restarted (restart #2)", {}, None),
        ("build", "build failed: exit 1", {"commit": "a"}, "deploy.failed"),
        ("sync", "fetch failed", {"commit": "a"}, "deploy.failed"),
        ("health", "health check failed at deploy", {"commit": "a"}, "deploy.failed"),
        ("build", "build of abc cancelled: superseded by def", {"commit": "a"}, None),
        ("build", "build started for abc", {}, None),
        ("crash", "exited with 1", {"restarts": 0}, None),
        ("crash", "exited with 1", {"restarts": 2}, "crash_loop"),
        ("health", "unhealthy after 3 failed checks: 500", {}, "health.unhealthy"),
        ("health", "healthy", {}, "health.recovered"),
        ("security", "security mode proxy-only confirmed", {}, "security.changed"),
        (
            "security",
            "control plane unreachable after applying open: not confirming (it reverts by itself)",
            {},
            "firewall.reverted",
        ),  # fmt: skip
        ("security", "security mode open applied, awaiting confirmation", {}, None),
        ("config", "applying desired state v3", {}, None),
    ],
)
def test_classify(type_: str, message: str, extra: dict[str, Any], kind: str | None) -> None:
    assert classify(type_, message, extra) == kind


def test_backoff_wanted_and_messages() -> None:
    assert [backoff_s(n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert backoff_s(30) == 3600.0 and backoff_s(2, 0.5) == 1.0
    assert wanted([], "server.offline") and not wanted(["deploy.failed"], "server.offline")
    assert wanted(["deploy.failed"], "test")
    batch = [
        {"event": "crash_loop", "at": "2026-11-29T10:00:00.000Z", "stack": {"name": "shop"},
         "instance": {"hostname": "h1"}, "service": "web", "message": f"exit {i}"}
        for i in range(25)
    ]  # fmt: skip
    assert messages.summary(batch) == (
        "[Berth] crash_loop: shop/web on h1: exit 24 (25 times since 2026-11-29T10:00:00.000Z)"
    )
    body = messages.webhook_body("k", batch)
    assert body["count"] == 25 and len(body["events"]) == messages.MAX_LISTED
    subject, text = messages.email_text(batch)
    assert subject == messages.summary(batch) and "... and 5 earlier events" in text


def test_channel_validation_names_the_field() -> None:
    spec = channels.parse_channel(
        {"name": "mail", "kind": "email", "smtp_host": "smtp.example", "from": "Berth <b@x.io>",
         "to": "ops@x.io", "password": "pw", "events": ["deploy.failed", "deploy.failed"]},
        creating=True,
    )  # fmt: skip
    assert spec.config["to"] == ["ops@x.io"] and spec.config["smtp_port"] == 587
    assert spec.secret == "pw" and "password" not in spec.config
    assert spec.events == ["deploy.failed"]
    hook = channels.parse_channel({"name": "h", "kind": "webhook", "url": "https://h/x"},
                                  creating=True)  # fmt: skip
    assert hook.secret and len(hook.secret) == 64
    with pytest.raises(Unprocessable) as err:
        channels.parse_channel({"name": "h", "kind": "email", "smtp_host": "s", "from": "x",
                                "to": "a@b"}, creating=True)  # fmt: skip
    assert err.value.field == "from"
    with pytest.raises(Unprocessable) as err:
        channels.parse_channel({"name": "h", "kind": "slack", "url": "http://h", "events": ["test"]},
                               creating=True)  # fmt: skip
    assert err.value.field == "events[0]"


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/n.db"
    migrate(url)
    return url


async def _stack_and_instance(d: Database, last_seen_ago_s: float) -> tuple[str, str]:
    now = utcnow()
    sid, iid = str(uuid.uuid4()), str(uuid.uuid4())
    doc = {"name": "s", "poll_interval_s": 1.0, "services": []}
    async with d.write() as session:
        session.add(Stack(id=sid, name=f"s-{sid[:6]}", version=1, content_hash="c", doc_hash="d",
                          document=doc, webhook_secret="w", created_at=now, updated_at=now))  # fmt: skip
    async with d.write() as session:
        session.add(Instance(id=iid, stack_id=sid, hostname="h1", credential_hash=iid,
                             created_at=now, last_seen=now - timedelta(seconds=last_seen_ago_s),
                             services=[], security={}, extra={}))  # fmt: skip
    return sid, iid


def test_attempts_are_bounded_and_offline_online_notify_once(db: str) -> None:
    async def run() -> None:
        d = Database(parse_db_url(db))
        try:
            spec = channels.parse_channel(
                {"name": "c", "kind": "webhook", "url": "http://127.0.0.1:9/x",
                 "events": ["server.offline", "server.online"]}, creating=True)  # fmt: skip
            ch = await store.create(d, spec, Keyring(None))  # a webhook: nothing sealed
            sid, iid = await _stack_and_instance(d, last_seen_ago_s=60)
            notifier = Notifier(d)
            for _ in range(2):  # the second scan (or a restarted process) adds nothing
                await notifier.scan_instances()
                await Notifier(d).scan_instances()
            async with d.read() as session:
                rows = list(await session.scalars(select(NotificationOutbox)))
            assert [r.event for r in rows] == ["server.offline"]
            async with d.write() as session:
                await session.execute(
                    update(Instance).where(Instance.id == iid).values(last_seen=utcnow())
                )
            await notifier.scan_instances()
            await notifier.scan_instances()
            async with d.read() as session:
                events = [r.event for r in await session.scalars(select(NotificationOutbox))]
            assert events == ["server.offline", "server.online"]

            # a message that keeps failing stops after MAX_ATTEMPTS, kept as `failed`
            (batch, _) = await outbox.claim(d)
            for attempt in range(1, MAX_ATTEMPTS + 1):
                await outbox.finish(d, outbox.Batch(batch.id, batch.channel, batch.rows, attempt),
                                    "s", "HTTP 500")  # fmt: skip
            async with d.read() as session:
                row = await session.get(NotificationOutbox, batch.rows[0].id)
            assert row is not None and row.state == "failed" and row.attempts == MAX_ATTEMPTS
            log = await outbox.deliveries(d, ch.id)
            assert len(log) == MAX_ATTEMPTS and not any(x.ok for x in log)

            # enqueueing the same key again is a no-op
            n = Notice(event="server.offline", key="same", stack_id=sid, stack_name="s",
                       message="m", at=utcnow())  # fmt: skip
            assert await outbox.enqueue(d, n) == 1 and await outbox.enqueue(d, n) == 0
        finally:
            await d.close()

    asyncio.run(run())


def test_smtp_password_sealed_and_kept_through_a_key_rotation(db: str, tmp_path: Path) -> None:
    from controlplane.rotation import rotate
    from controlplane.secrets import ensure_key_file, token_key_id

    key_file = tmp_path / "key"
    ensure_key_file(key_file)

    async def run() -> None:
        d = Database(parse_db_url(db))
        try:
            spec = channels.parse_channel(
                {"name": "mail", "kind": "email", "smtp_host": "h", "from": "a@b.c",
                 "to": "d@e.f", "password": "hunter2 smtp"}, creating=True)  # fmt: skip
            row = await store.create(d, spec, Keyring(key_file))
            assert row.secret and "hunter2" not in row.secret
            before = token_key_id(row.secret)
            await rotate(d, key_file)
            again = await store.get(d, row.id)
            assert again.secret and token_key_id(again.secret) != before
            assert store.open_secret(again, Keyring(key_file)) == "hunter2 smtp"
        finally:
            await d.close()

    asyncio.run(run())

"""Pure logic of the control plane, without sockets or databases."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.api_hooks import sign, verify_signature
from controlplane.dburl import parse_db_url
from controlplane.errors import ApiError
from controlplane.gitrefs import parse_ls_remote, pick_commit
from controlplane.httpjson import etag_matches, parse_wait
from controlplane.longpoll import StackWatcher
from controlplane.stacks import editable_body
from controlplane.status import (
    DEFAULT_HEARTBEAT_INTERVAL_S,
    instance_status,
    parse_events,
    parse_heartbeat,
)
from controlplane.tokens import bearer

A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
LS_REMOTE = f"{A}\tHEAD\n{A}\trefs/heads/main\n{B}\trefs/heads/v1\n{C}\trefs/tags/v1\n{D}\trefs/tags/v1^{{}}\n{C}\trefs/tags/rel\n{D}\trefs/tags/rel^{{}}\n"


def test_pick_commit() -> None:
    refs = parse_ls_remote(LS_REMOTE + "garbage line\n")
    assert pick_commit(refs, "HEAD") == A
    assert pick_commit(refs, "main") == A
    assert pick_commit(refs, "v1") == B  # a branch wins over a tag of the same name
    assert pick_commit(refs, "rel") == D  # annotated tag peeled to its commit
    assert pick_commit(refs, "refs/tags/rel") == D
    assert pick_commit(refs, "refs/heads/main") == A
    assert pick_commit(refs, "nope") is None


def test_db_urls() -> None:
    sqlite = parse_db_url("sqlite:///x/y.db")
    assert sqlite.is_sqlite and sqlite.async_url.drivername == "sqlite+aiosqlite"
    pg = parse_db_url("postgresql://u:secret@h/db")
    assert pg.async_url.drivername == "postgresql+psycopg" and "secret" not in pg.display()
    assert parse_db_url("postgres://u@h/db").sync_url.drivername == "postgresql+psycopg"
    for bad in ("mysql://h/db", "sqlite://", "not a url", "sqlite:///:memory:"):
        with pytest.raises(ValueError, match="--db"):
            parse_db_url(bad)


def test_etag_and_wait() -> None:
    assert etag_matches('"abc"', "abc") and etag_matches('W/"abc"', "abc")
    assert etag_matches('"x", "abc"', "abc") and etag_matches("*", "abc")
    assert not etag_matches(None, "abc") and not etag_matches('"abcd"', "abc")
    assert parse_wait(None, 60) == 0 and parse_wait("2.5", 60) == 2.5
    for bad in ("-1", "61", "x", "nan", "inf"):
        with pytest.raises(ApiError):
            parse_wait(bad, 60)


def test_bearer() -> None:
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer(None) is None and bearer("Basic abc") is None and bearer("Bearer ") is None


def test_instance_status_counts_missed_heartbeat_intervals() -> None:
    now = datetime.now(UTC)
    assert instance_status(now - timedelta(seconds=5), now, 10) == "online"
    assert instance_status(now - timedelta(seconds=29), now, 10) == "online"
    assert instance_status(now - timedelta(seconds=30), now, 10) == "stale"
    assert instance_status(now - timedelta(seconds=79), now, 10) == "stale"
    assert instance_status(now - timedelta(seconds=80), now, 10) == "offline"
    assert instance_status(None, now, 10) == "offline"
    # at the default 15 s interval an agent that stopped is offline within 2 minutes
    assert instance_status(now - timedelta(seconds=120), now, DEFAULT_HEARTBEAT_INTERVAL_S) == (
        "offline"
    )


def test_editable_body_strips_only_read_only_keys() -> None:
    body = {"id": "x", "version": 3, "hash": "h", "created_at": "t", "updated_at": "t", "name": "n",
            "services": [{"name": "web", "commit": A, "colour": "red"}, "junk"]}  # fmt: skip
    assert editable_body(body) == {
        "name": "n",
        "services": [{"name": "web", "colour": "red"}, "junk"],
    }
    assert editable_body([1]) == [1]


def test_heartbeat_and_events_parsing() -> None:
    hb = parse_heartbeat({"state": "applied", "services": [], "future_key": 1})
    assert hb.extra == {"future_key": 1} and hb.applied_version is None
    [ev] = parse_events(
        {"events": [{"id": "e", "type": "t", "at": "2024-01-01T00:00:00+02:00", "k": 1}]}
    )
    assert (
        ev.at == datetime(2023, 12, 31, 22, tzinfo=UTC)
        and ev.extra == {"k": 1}
        and ev.message == ""
    )
    with pytest.raises(ApiError):
        parse_events({"events": [{"id": "e", "type": "t", "at": "2024"}] * 1001})


def test_webhook_signature() -> None:
    sig = sign("s3cret", b"body")
    assert verify_signature("s3cret", b"body", sig)
    assert not verify_signature("s3cret", b"body2", sig)
    assert not verify_signature("other", b"body", sig)
    assert not verify_signature("s3cret", b"body", None)
    assert not verify_signature("s3cret", b"body", sig.replace("sha256=", "sha1="))


def test_watcher_wakes_on_notify_and_on_foreign_change() -> None:
    async def scenario() -> None:
        hashes = {"s1": "h1", "s2": "h2"}

        async def fetch() -> dict[str, str]:
            return dict(hashes)

        watcher = StackWatcher(fetch, interval_s=0.01)
        watcher.start()
        try:
            # timeout: nothing changes
            assert await watcher.wait("s1", "h1", 0.05) is False
            # in-process notify
            task = asyncio.create_task(watcher.wait("s1", "h1", 5))
            await asyncio.sleep(0)
            watcher.notify("s1")
            assert await task is True
            # a change made elsewhere (another process) is seen by the poll
            task = asyncio.create_task(watcher.wait("s2", "h2", 5))
            await asyncio.sleep(0.03)
            assert not task.done()
            hashes["s2"] = "h2b"
            assert await task is True
            # a deleted stack wakes its waiters too
            task = asyncio.create_task(watcher.wait("s1", "h1", 5))
            del hashes["s1"]
            assert await task is True
            assert watcher.waiting == 0
        finally:
            await watcher.stop()

    asyncio.run(scenario())


def test_watcher_close_answers_held_polls_and_wakes_many_in_slices() -> None:
    async def scenario() -> None:
        hashes = {"s1": "h1"}

        async def fetch() -> dict[str, str]:
            return dict(hashes)

        watcher = StackWatcher(fetch, interval_s=0.01)
        watcher.start()
        try:
            # more waiters than one wake slice: every one of them wakes on a change
            many = [asyncio.create_task(watcher.wait("s1", "h1", 5)) for _ in range(600)]
            await asyncio.sleep(0)
            hashes["s1"] = "h1b"
            assert all(await asyncio.gather(*many))
            # a waiter whose hash the last tick already saw as old returns at once
            assert await asyncio.wait_for(watcher.wait("s1", "h1", 5), 0.5) is True
            # close: held polls return False (answer 304 now), new ones do not wait
            held = asyncio.create_task(watcher.wait("s1", "h1b", 30))
            await asyncio.sleep(0)
            watcher.close()
            assert await asyncio.wait_for(held, 0.5) is False
            assert await asyncio.wait_for(watcher.wait("s1", "h1b", 30), 0.5) is False
        finally:
            await watcher.stop()

    asyncio.run(scenario())

"""Notifications end to end: a real control plane (SQLite and PostgreSQL), a stand-in
agent posting over the real agent API, and real receivers — an HTTP server checking the
webhook's HMAC signature, and an SMTP server (aiosmtpd) requiring STARTTLS and a login.
Grouping, rate limit, retries, stack-scoped channels, the delivery log, and a control
plane killed mid-delivery that loses nothing and sends nothing twice (by idempotency key)."""

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine
from sqlalchemy import text as sql

from controlplane.dburl import parse_db_url
from controlplane.secrets import ensure_key_file
from tests.controlplane.harness import Api, ControlPlane, stack_body
from tests.controlplane.receivers import Received, SmtpReceiver, WebhookReceiver

NOTIFY_ARGS = ("--notify-interval", "0.1", "--notify-lease", "2", "--notify-backoff", "0.3")
SMTP_USER, SMTP_PASSWORD = "berth", "smtp secret 1"


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpReceiver]:
    s = SmtpReceiver(tmp_path_factory.mktemp("smtp"), SMTP_USER, SMTP_PASSWORD)
    yield s
    s.close()


@pytest.fixture(scope="module")
def cp(
    db_url: str, admin_token: str, smtp: SmtpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    # the control plane trusts the test SMTP server's self-signed certificate (OpenSSL
    # reads SSL_CERT_FILE); nothing else in it talks TLS during these tests
    old = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(smtp.cert)
    logs = tmp_path_factory.mktemp("logs")
    ensure_key_file(logs / "secret-key")  # seals the SMTP password (PostgreSQL has no default)
    try:
        server = ControlPlane(
            db_url, logs, *NOTIFY_ARGS, "--secret-key-file", str(logs / "secret-key")
        )
    finally:
        if old is None:
            os.environ.pop("SSL_CERT_FILE")
        else:
            os.environ["SSL_CERT_FILE"] = old
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(cp: ControlPlane, admin_token: str) -> Api:
    return Api(cp.url, admin_token)


class Agent:
    """Registers with a real install token and posts events and heartbeats."""

    def __init__(self, api: Api, base_url: str, stack_id: str, hostname: str) -> None:
        token = api.post(f"/stacks/{stack_id}/install-tokens", json={}).json()["token"]
        reg = requests.post(base_url + "/api/v1/agent/register",
                            json={"token": token, "hostname": hostname}, timeout=10).json()  # fmt: skip
        self.instance_id = reg["instance_id"]
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {reg['credential']}"
        self.base = base_url + "/api/v1/agent"

    def events(self, *events: dict[str, Any]) -> None:
        body = [{"id": uuid.uuid4().hex, "at": datetime.now(UTC).isoformat(), **e} for e in events]
        resp = self.http.post(self.base + "/events", json={"events": body}, timeout=10)
        assert resp.status_code == 200, resp.text

    def heartbeat(self, version: int, state: str, services: list[dict[str, Any]]) -> None:
        resp = self.http.post(self.base + "/heartbeat", timeout=10, json={
            "agent_version": "test", "applied_version": version, "state": state,
            "services": services, "security": {"mode": "open"}})  # fmt: skip
        assert resp.status_code == 200, resp.text


def channel(api: Api, **body: Any) -> dict[str, Any]:
    resp = api.post("/notifications/channels", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def settled(api: Api, channel_id: str, backlog: dict[str, int]) -> dict[str, Any]:
    """The channel's delivery log once its backlog is `backlog` (the outcome of a send is
    recorded just after the receiver answered it)."""
    deadline = time.monotonic() + 30
    while True:
        log: dict[str, Any] = api.get(f"/notifications/channels/{channel_id}/deliveries").json()
        if log["backlog"] == backlog or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def events_of(got: list[Received], kind: str) -> list[dict[str, Any]]:
    return [r.json() for r in got if r.json()["event"] == kind]


def test_webhook_signed_events_grouping_and_delivery_log(
    api: Api, cp: ControlPlane, repo: Path, unique: str
) -> None:
    hook = WebhookReceiver()
    try:
        ch = channel(api, name=f"hook-{unique}", kind="webhook", url=hook.url, group_window_s=2,
                     events=["install_token.used", "deploy.succeeded", "deploy.failed",
                             "deploy.reverted", "crash_loop", "health.unhealthy",
                             "health.recovered", "security.changed", "firewall.reverted",
                             "stack.deploy.succeeded", "stack.deploy.failed"])  # fmt: skip
        hook.secret = ch["secret"]
        stack = api.post("/stacks", json=stack_body(f"n-{unique}", repo)).json()
        agent = Agent(api, cp.url, stack["id"], f"host-{unique}")
        joined = hook.wait_for(lambda g: bool(events_of(g, "install_token.used")))
        first = joined[0]
        assert first.signed is True and first.headers["X-Berth-Event"] == "install_token.used"
        assert first.headers["Idempotency-Key"] == first.json()["id"]
        assert first.json()["instance"]["hostname"] == f"host-{unique}"

        commit = stack["services"][0]["commit"]
        agent.events({"type": "run", "message": f"serving {commit[:12]} on port 20001",
                      "service": "web", "commit": commit})  # fmt: skip
        # the old release of api is serving (last heartbeat) when its new build fails
        agent.heartbeat(1, "degraded", [{"name": "api", "commit": "e" * 40, "state": "running"}])
        agent.events({"type": "build", "message": "build failed: exit 2", "service": "api",
                      "commit": "f" * 40, "log_tail": "boom"})  # fmt: skip
        # a flapping service: five crashes in one batch arrive as one message, count 5
        agent.events(*({"type": "crash", "message": f"exited with 1 (#{i})", "service": "web",
                        "restarts": i + 2} for i in range(5)))  # fmt: skip
        got = hook.wait_for(lambda g: bool(events_of(g, "crash_loop")))
        assert [e["count"] for e in events_of(got, "crash_loop")] == [5]
        assert events_of(got, "crash_loop")[0]["message"] == "exited with 1 (#4)"
        assert events_of(got, "deploy.succeeded")[0]["service"] == "web"
        failed = events_of(got, "deploy.failed")[0]
        assert failed["service"] == "api" and "log_tail" not in str(failed)

        # more crashes within the window: held back, then one message with their count
        sent_at = [r.at for r in got if r.json()["event"] == "crash_loop"][0]
        agent.events(*({"type": "crash", "message": "exited again", "service": "web",
                        "restarts": 9} for _ in range(3)))  # fmt: skip
        got = hook.wait_for(lambda g: len(events_of(g, "crash_loop")) == 2)
        second = [r for r in got if r.json()["event"] == "crash_loop"][1]
        assert second.json()["count"] == 3 and second.at >= sent_at + 1.5

        agent.events({"type": "health", "message": "healthy", "service": "web"})  # not a recovery
        agent.events({"type": "health", "message": "unhealthy after 3 failed checks: 500",
                      "service": "web"})  # fmt: skip
        agent.events({"type": "health", "message": "healthy", "service": "web"})
        agent.events({"type": "security", "message": "security mode proxy-only confirmed"})
        agent.events({"type": "security", "message": "control plane unreachable after applying "
                      "open: not confirming (it reverts by itself)"})  # fmt: skip
        kinds = ("security.changed", "health.unhealthy", "health.recovered", "deploy.reverted",
                 "firewall.reverted", "stack.deploy.failed")  # fmt: skip
        got = hook.wait_for(lambda g: all(events_of(g, k) for k in kinds))
        assert len(events_of(got, "health.unhealthy")) == 1
        assert len(events_of(got, "health.recovered")) == 1
        assert all(r.signed for r in got)
        assert events_of(got, "deploy.reverted")[0]["service"] == "api"
        assert (
            events_of(got, "stack.deploy.failed")[0]["message"] == f"v1 degraded on host-{unique}"
        )

        agent.heartbeat(1, "applied", [])
        got = hook.wait_for(lambda g: bool(events_of(g, "stack.deploy.succeeded")))
        assert events_of(got, "health.recovered")[0]["instance"] is not None

        total = sum(r.json()["count"] for r in got)
        log = settled(api, ch["id"], {"sent": total})
        assert log["backlog"] == {"sent": total}
        assert all(d["ok"] for d in log["deliveries"]) and len(log["deliveries"]) == len(got)
        assert len({r.json()["id"] for r in got}) == len(got)  # one key per message
    finally:
        hook.close()


def test_rate_limit_retries_and_stack_scope(
    api: Api, cp: ControlPlane, repo: Path, unique: str
) -> None:
    hook = WebhookReceiver(answers=[500, 502])
    other = WebhookReceiver()
    try:
        body = stack_body(f"r-{unique}", repo)
        worker = {
            "name": "worker",
            "repo": f"file://{repo}",
            "ref": "main",
            "run": "python3 app.py",
        }
        body["services"].append(worker)  # three services: the control plane refuses others
        stack = api.post("/stacks", json=body).json()
        elsewhere = api.post("/stacks", json=stack_body(f"o-{unique}", repo)).json()
        ch = channel(api, name=f"rl-{unique}", kind="webhook", url=hook.url, stack=stack["id"],
                     events=["deploy.succeeded"], rate_per_hour=2, group_window_s=0)  # fmt: skip
        scoped = channel(api, name=f"other-{unique}", kind="slack", url=other.url,
                         stack=elsewhere["id"], events=["deploy.succeeded"])  # fmt: skip
        agent = Agent(api, cp.url, stack["id"], f"rl-{unique}")
        for svc in ("web", "api", "worker"):
            agent.events({"type": "run", "message": "serving abc", "service": svc,
                          "commit": "a" * 40})  # fmt: skip
        # two messages within the limit; the two failures (500, 502) were retried with
        # the same key until delivered
        got = hook.wait_for(lambda g: len({r.json()["id"] for r in g}) == 2 and len(g) == 4)
        keys = [r.json()["id"] for r in got]
        assert sorted(Counter(keys).values()) in ([2, 2], [1, 3])
        # the third is held by the rate limit; a test message is not, and comes after it
        assert api.post(f"/notifications/channels/{ch['id']}/test").status_code == 202
        got = hook.wait_for(lambda g: any(r.json()["event"] == "test" for r in g))
        assert [r.json()["event"] for r in got].count("deploy.succeeded") == 4
        log = settled(api, ch["id"], {"sent": 3, "pending": 1})
        assert log["backlog"] == {"sent": 3, "pending": 1}
        attempts = sorted((d["batch"], d["attempt"], d["ok"]) for d in log["deliveries"]
                          if d["batch"] in keys)  # fmt: skip
        assert [ok for _, _, ok in attempts].count(False) == 2
        for batch in set(keys):  # every failure was followed by a success of the same batch
            tries = [(n, ok) for b, n, ok in attempts if b == batch]
            assert tries[-1][1] is True and [n for n, _ in tries] == list(range(1, len(tries) + 1))
        assert any("HTTP 500" in (d["error"] or "") for d in log["deliveries"])
        # the other stack's channel heard nothing of this stack
        assert api.get(f"/notifications/channels/{scoped['id']}/deliveries").json() == {
            "deliveries": [], "backlog": {}}  # fmt: skip
        assert other.got == []
    finally:
        hook.close()
        other.close()


def test_slack_and_email_with_starttls(
    api: Api, cp: ControlPlane, smtp: SmtpReceiver, unique: str
) -> None:
    slack = WebhookReceiver()
    try:
        s = channel(api, name=f"slack-{unique}", kind="slack", url=slack.url)
        e = channel(api, name=f"mail-{unique}", kind="email", smtp_host="127.0.0.1",
                    smtp_port=smtp.port, **{"from": "berth@example.test"},
                    to=["ops@example.test"], username=SMTP_USER, password=SMTP_PASSWORD)  # fmt: skip
        assert "password" not in e and e["password_set"] is True
        assert SMTP_PASSWORD not in api.get(f"/notifications/channels/{e['id']}").text
        # stored sealed (AES-GCM under the control plane's key file), never in clear
        with create_engine(parse_db_url(cp.db_url).sync_url).connect() as conn:
            stored = conn.execute(sql("SELECT secret FROM notification_channels WHERE id = :i"),
                                  {"i": e["id"]}).scalar_one()  # fmt: skip
        assert SMTP_PASSWORD not in stored and stored.startswith("v1.")
        before = len(smtp.messages)
        for c in (s, e):
            assert api.post(f"/notifications/channels/{c['id']}/test").status_code == 202
        text = slack.wait_for(lambda g: bool(g))[0].json()
        assert set(text) == {"text"} and text["text"].startswith("[Berth] test: ")
        mail = smtp.wait_for(before + 1)[-1]
        assert mail["tls"] is True and mail["login"] == SMTP_USER.encode()
        assert mail["to"] == ["ops@example.test"] and "Subject: [Berth] test: " in mail["data"]
        assert "test message requested by token:tests" in mail["data"]

    finally:
        slack.close()


def test_channel_validation_crud_and_audit(api: Api, unique: str) -> None:
    for body, field in (
        ({"name": "x", "kind": "pager", "url": "http://h/"}, "kind"),
        ({"name": "x", "kind": "webhook", "url": "ftp://h/"}, "url"),
        ({"name": "x", "kind": "webhook", "url": "http://h/", "events": ["nope"]}, "events[0]"),
        ({"name": "x", "kind": "email", "smtp_host": "h", "from": "a@b"}, "to"),
        ({"name": "no spaces", "kind": "slack", "url": "http://h/"}, "name"),
        ({"name": "x", "kind": "slack", "url": "http://h/", "rate_per_hour": 0}, "rate_per_hour"),
        ({"name": "x", "kind": "slack", "url": "http://h/", "stack": "missing"}, "stack"),
    ):
        resp = api.post("/notifications/channels", json=body)
        assert resp.status_code == 422 and resp.json()["field"] == field, resp.text
    made = channel(api, name=f"crud-{unique}", kind="webhook", url="http://127.0.0.1:9/h",
                   secret="s3cret")  # fmt: skip
    assert made["secret"] == "s3cret" and made["events"] == [] and made["enabled"] is True
    dup = api.post("/notifications/channels", json={"name": f"crud-{unique}", "kind": "slack",
                                                   "url": "http://h/"})  # fmt: skip
    assert dup.status_code == 409
    put = api.put(f"/notifications/channels/{made['id']}", json={
        "name": f"crud-{unique}", "kind": "webhook", "url": "http://127.0.0.1:9/h2",
        "enabled": False})  # fmt: skip
    assert put.status_code == 200 and put.json()["secret"] == "s3cret"  # kept
    assert put.json()["url"].endswith("/h2") and put.json()["enabled"] is False
    assert api.get(f"/notifications/channels/crud-{unique}").json()["id"] == made["id"]
    assert api.delete(f"/notifications/channels/{made['id']}").status_code == 204
    assert api.get(f"/notifications/channels/{made['id']}").status_code == 404
    trail = api.get("/audit", params={"action": "channel."}).json()["records"]
    mine = [r["action"] for r in trail if r["target"] == made["id"]]
    assert mine == ["channel.delete", "channel.update", "channel.create"]
    names = [e["name"] for e in api.get("/notifications/events").json()["events"]]
    assert "server.offline" in names and "test" not in names


def test_restart_mid_delivery_loses_nothing_and_sends_nothing_twice(
    api: Api, cp: ControlPlane, repo: Path, unique: str
) -> None:
    hook = WebhookReceiver()
    hook.hold.set()  # record requests, never answer: the control plane dies mid-send
    try:
        stack = api.post("/stacks", json=stack_body(f"crash-{unique}", repo)).json()
        ch = channel(api, name=f"crash-{unique}", kind="webhook", url=hook.url,
                     stack=stack["id"], events=["deploy.failed", "deploy.succeeded"])  # fmt: skip
        agent = Agent(api, cp.url, stack["id"], f"c-{unique}")
        agent.events({"type": "run", "message": "serving x", "service": "web", "commit": "a" * 40},
                     {"type": "sync", "message": "sync failed", "service": "api",
                      "commit": "b" * 40})  # fmt: skip
        held = hook.wait_for(lambda g: len(g) == 2)
        keys = {r.json()["id"] for r in held}
        os.killpg(cp.proc.pid, signal.SIGKILL)
        cp.proc.wait(10)
        hook.release.set()
        hook.hold.clear()
        key = ("--secret-key-file", str(cp.log_path.parent / "secret-key"))
        cp.proc = ControlPlane(cp.db_url, cp.log_path.parent, *NOTIFY_ARGS, *key, port=cp.port).proc
        # after the lease, the same batches are sent again, with the same keys
        got = hook.wait_for(lambda g: len(g) == 4)
        assert {r.json()["id"] for r in got[2:]} == keys
        assert sorted(r.json()["event"] for r in got[2:]) == ["deploy.failed", "deploy.succeeded"]
        log = settled(api, ch["id"], {"sent": 2})
        assert log["backlog"] == {"sent": 2}
        assert sorted(d["batch"] for d in log["deliveries"] if d["ok"]) == sorted(keys)
        # a new event after the restart is delivered once; nothing old comes again
        agent.events({"type": "build", "message": "build failed", "service": "web",
                      "commit": "c" * 40})  # fmt: skip
        got = hook.wait_for(lambda g: len(g) >= 5)
        assert got[4].json()["event"] == "deploy.failed" and got[4].json()["id"] not in keys
        assert len(got) == 5
        assert settled(api, ch["id"], {"sent": 3})["backlog"] == {"sent": 3}
    finally:
        hook.close()

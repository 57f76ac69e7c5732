"""The agents' fast path answers exactly as the Quart app does, and `--workers N` serves one
address with N processes that share the database (revocations and stack changes reach
every worker).

Two real control planes on one database: one with the fast path (the default), one
started with `--no-fast-path`. Every request is sent to both over raw HTTP/1.1 and the
answers are compared: status, headers (but Date) and body, byte for byte.
"""

import http.client
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane.harness import Api, ControlPlane, stack_body

Answer = tuple[int, list[tuple[str, str]], bytes]


@pytest.fixture(scope="module")
def slow(
    db_url: str, server: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    cp = ControlPlane(db_url, tmp_path_factory.mktemp("slow"), "--no-fast-path")
    yield cp
    cp.stop()


@pytest.fixture(scope="module")
def agent(api: Api, server: ControlPlane, repo: Path) -> dict[str, Any]:
    stack = api.post("/stacks", json=stack_body("fastpath", repo)).json()
    tok = api.post(f"/stacks/{stack['id']}/install-tokens").json()
    reg = Api(server.url, None).post(
        "/agent/register", json={"token": tok["token"], "hostname": "fast-1"}
    )
    assert reg.status_code == 201, reg.text
    return {"stack": stack, **reg.json()}


def ask(cp: ControlPlane, method: str, path: str, headers: dict[str, str], body: Any = None) -> Answer:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", cp.port, timeout=30)
    try:
        try:
            if isinstance(body, list):  # chunked: an iterable body
                conn.request(method, path, iter(body), headers, encode_chunked=True)
            else:
                conn.request(method, path, body, headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (413) and closed before the whole body was sent: read the answer
        resp = conn.getresponse()
        data = resp.read()
        kept = sorted((k.lower(), v) for k, v in resp.getheaders() if k.lower() != "date")
        return resp.status, kept, data
    finally:
        conn.close()


def same(fast: ControlPlane, slow: ControlPlane, method: str, path: str, headers: dict[str, str], body: Any = None) -> Answer:  # fmt: skip
    a = ask(fast, method, path, headers, body)
    b = ask(slow, method, path, headers, body)
    assert a == b, f"fast path {a!r} != Quart {b!r}"
    return a


POLL = "/api/v1/agent/desired-state"
BEAT = "/api/v1/agent/heartbeat"
GOOD_BEAT = {"agent_version": "1", "applied_version": 1, "state": "applied", "services": [], "security": {}}  # fmt: skip


def test_poll_answers_match(server: ControlPlane, slow: ControlPlane, agent: dict[str, Any]) -> None:  # fmt: skip
    auth = {"Authorization": f"Bearer {agent['credential']}"}
    etag = f'"{agent["stack"]["hash"]}"'
    status, headers, body = same(server, slow, "GET", POLL, {**auth, "If-None-Match": etag})
    assert status == 304 and ("etag", etag) in headers and body == b""
    for inm in (f"W/{etag}", f'"nope", {etag}', "*"):
        assert same(server, slow, "GET", POLL, {**auth, "If-None-Match": inm})[0] == 304
    # the document (200), long polls that end at once, a bad wait
    assert same(server, slow, "GET", POLL, {**auth, "If-None-Match": '"other"'})[0] == 200
    assert same(server, slow, "GET", POLL, auth)[0] == 200
    assert same(server, slow, "GET", POLL + "?wait=0", {**auth, "If-None-Match": etag})[0] == 304
    assert same(server, slow, "GET", POLL + "?wait=", {**auth, "If-None-Match": etag})[0] == 304
    assert same(server, slow, "GET", POLL + "?wait=0.2", {**auth, "If-None-Match": etag})[0] == 304
    assert same(server, slow, "GET", POLL + "?wait=5", {**auth, "If-None-Match": '"x"'})[0] == 200
    assert same(server, slow, "GET", POLL + "?wait=x", {**auth, "If-None-Match": etag})[0] == 400
    assert same(server, slow, "GET", POLL + "?wait=61", {**auth, "If-None-Match": etag})[0] == 400
    # another query: Quart answers on both
    assert (
        same(server, slow, "GET", POLL + "?wait=0&x=1", {**auth, "If-None-Match": etag})[0] == 304
    )


def test_held_long_polls_answer_the_change_alike(
    api: Api, server: ControlPlane, slow: ControlPlane, repo: Path
) -> None:
    stack = api.post("/stacks", json=stack_body("fastpath-held", repo)).json()
    tok = api.post(f"/stacks/{stack['id']}/install-tokens").json()
    reg = Api(server.url, None).post("/agent/register", json={"token": tok["token"], "hostname": "held-1"})  # fmt: skip
    headers = {"Authorization": f"Bearer {reg.json()['credential']}", "If-None-Match": f'"{stack["hash"]}"'}  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(ask, cp, "GET", POLL + "?wait=30", headers) for cp in (server, slow)]
        time.sleep(0.3)  # let both polls be held (if not, they still answer the change)
        assert api.put(f"/stacks/{stack['id']}", json=stack_body("fastpath-held", repo, poll_interval_s=7)).status_code == 200  # fmt: skip
        fast_answer, quart_answer = (f.result(timeout=20) for f in held)
    assert fast_answer == quart_answer
    assert fast_answer[0] == 200 and json.loads(fast_answer[2])["version"] == 2


def test_sigterm_answers_held_long_polls(api: Api, db_url: str, repo: Path, tmp_path: Path) -> None:
    """A stopping control plane answers held polls (304) at once instead of waiting its
    graceful timeout and then cancelling each with a logged traceback."""
    cp = ControlPlane(db_url, tmp_path)
    try:
        stack = api.post("/stacks", json=stack_body("fastpath-sigterm", repo)).json()
        tok = api.post(f"/stacks/{stack['id']}/install-tokens").json()
        reg = Api(cp.url, None).post("/agent/register", json={"token": tok["token"], "hostname": "term-1"})  # fmt: skip
        headers = {"Authorization": f"Bearer {reg.json()['credential']}", "If-None-Match": f'"{stack["hash"]}"'}  # fmt: skip
        with ThreadPoolExecutor(3) as pool:
            held = [pool.submit(ask, cp, "GET", POLL + "?wait=50", headers) for _ in range(3)]
            time.sleep(2)  # let the polls be held (the assertion below checks they were)
            assert not any(f.done() for f in held)
            cp.proc.terminate()
            answers = [f.result(timeout=20) for f in held]
        assert cp.proc.wait(20) == 0
    finally:
        cp.stop()
    assert [a[0] for a in answers] == [304, 304, 304]
    assert "Traceback" not in cp.log() and "graceful shutdown exceeded" not in cp.log()


@pytest.mark.parametrize(
    "auth",
    ["", "Bearer", "Basic abc", "Bearer berth_agt_unknown", "bearer  berth_agt_unknown "],
)
def test_poll_refusals_match(server: ControlPlane, slow: ControlPlane, auth: str) -> None:
    headers = {"If-None-Match": "*"} | ({"Authorization": auth} if auth else {})
    status, _, body = same(server, slow, "GET", POLL, headers)
    assert status == 401 and json.loads(body)["error"] == "unauthorized"


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(GOOD_BEAT).encode(),
        json.dumps({"extra": {"é": 1}, "services": [{"name": "web"}]}).encode(),
        b"",
        b"   ",
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"applied_version": "one"}',
        b'{"applied_version": true}',
        b'{"services": {}}',
        b'{"security": []}',
        b'{"agent_version": 5}',
        b'{"state": "' + b"x" * 70 + b'"}',
    ],
)
def test_heartbeat_answers_match(
    server: ControlPlane, slow: ControlPlane, agent: dict[str, Any], body: bytes
) -> None:
    auth = {"Authorization": f"Bearer {agent['credential']}", "Content-Type": "application/json"}
    status, _, answer = same(server, slow, "POST", BEAT, auth, body)
    if status == 200:
        assert json.loads(answer) == {
            "ok": True,
            "desired_hash": agent["stack"]["hash"],
            "heartbeat_interval_s": 15.0,  # the default: the agent follows what is announced
        }
    else:
        assert status in (400, 422) and "detail" in json.loads(answer)


def test_heartbeat_edge_cases_match(server: ControlPlane, slow: ControlPlane, agent: dict[str, Any]) -> None:  # fmt: skip
    good = json.dumps(GOOD_BEAT).encode()
    assert same(server, slow, "POST", BEAT, {}, good)[0] == 401
    assert same(server, slow, "POST", BEAT, {"Authorization": "Bearer nope"}, good)[0] == 401
    auth = {"Authorization": f"Bearer {agent['credential']}"}
    assert same(server, slow, "POST", BEAT, auth, [good[:10], good[10:]])[0] == 200  # chunked
    assert same(server, slow, "POST", BEAT, auth, b"x" * (1024 * 1024 + 1))[0] == 413
    assert same(server, slow, "GET", BEAT, auth)[0] == 405
    assert same(server, slow, "POST", POLL, auth, good)[0] == 405


METRICS = "/api/v1/agent/metrics"


def test_metric_batch_answers_match(server: ControlPlane, slow: ControlPlane, agent: dict[str, Any]) -> None:  # fmt: skip
    """Stored (with a refused service), invalid, and over the per-minute limit: 429 with
    the same Retry-After from the one error renderer."""
    auth = {"Authorization": f"Bearer {agent['credential']}"}
    t = int(time.time()) - 30
    points = [
        {"t": t, "span": 30, "service": "", "cpu_s": 1.5},
        {"t": t, "span": 30, "service": "nope"},
    ]
    status, _, answer = same(
        server, slow, "POST", METRICS, auth, json.dumps({"points": points}).encode()
    )
    assert status == 200 and json.loads(answer) == {"stored": 1, "refused": ["nope"]}
    assert same(server, slow, "POST", METRICS, auth, b'{"points": 5}')[0] == 422
    assert same(server, slow, "POST", METRICS, auth, b"{nope")[0] == 400
    assert same(server, slow, "POST", METRICS, {}, b"{}")[0] == 401
    answers = [same(server, slow, "POST", METRICS, auth, b'{"points": []}') for _ in range(10)]
    assert [a[0] for a in answers[:9]] == [200] * 9  # 12 a minute, 3 used above
    status, headers, _ = answers[9]
    assert status == 429 and any(k == "retry-after" for k, _ in headers)


def test_metric_batches_sent_at_once_commit_together(api: Api, server: ControlPlane, repo: Path) -> None:  # fmt: skip
    """Batches queued in one group commit, the same point among them more than once (an
    upsert may not touch a row twice on PostgreSQL): all stored, that point once."""
    stack = api.post("/stacks", json=stack_body("fastpath-metrics", repo)).json()
    tok = api.post(f"/stacks/{stack['id']}/install-tokens").json()
    reg = Api(server.url, None).post("/agent/register", json={"token": tok["token"], "hostname": "m-1"})  # fmt: skip
    auth = {"Authorization": f"Bearer {reg.json()['credential']}"}
    t = int(time.time()) // 60 * 60 - 120
    body = json.dumps({"points": [{"t": t, "span": 30, "service": "", "cpu_s": 7.5, "cpus": 1}]})
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(lambda _: ask(server, "POST", METRICS, auth, body.encode()), range(6))
        )
    assert [(a[0], json.loads(a[2])) for a in answers] == [(200, {"stored": 1})] * 6
    series = api.get(f"/stacks/{stack['id']}/metrics", params={"from": t, "step": 30}).json()
    assert [p["cpu_pct"] for p in series["points"]] == [25.0]  # 7.5 CPU s of 30 s, one CPU


def test_heartbeat_through_fast_path_is_stored(api: Api, server: ControlPlane, agent: dict[str, Any]) -> None:  # fmt: skip
    auth = {"Authorization": f"Bearer {agent['credential']}"}
    beat = {**GOOD_BEAT, "agent_version": "fast-9", "note": "kept"}
    assert ask(server, "POST", BEAT, auth, json.dumps(beat).encode())[0] == 200
    [inst] = api.get(f"/stacks/{agent['stack_id']}/instances").json()["instances"]
    assert inst["agent_version"] == "fast-9" and inst["status"] == "online"
    assert inst["note"] == "kept"


def test_revocation_matches(api: Api, server: ControlPlane, slow: ControlPlane, repo: Path) -> None:  # fmt: skip
    stack = api.post("/stacks", json=stack_body("fastpath-revoke", repo)).json()
    tok = api.post(f"/stacks/{stack['id']}/install-tokens").json()
    reg = Api(server.url, None).post("/agent/register", json={"token": tok["token"], "hostname": "r"})  # fmt: skip
    headers = {"Authorization": f"Bearer {reg.json()['credential']}", "If-None-Match": "*"}
    assert same(server, slow, "GET", POLL, headers)[0] == 304  # both have it cached now
    assert api.delete(f"/instances/{reg.json()['instance_id']}").status_code in (200, 204)
    assert ask(server, "GET", POLL, headers)[0] == 401  # through this node: at once
    time.sleep(1.5)  # the other node: within a watcher tick
    status, _, body = same(server, slow, "GET", POLL, headers)
    assert status == 401 and b"revoked at" in body


# ---- --workers N ----------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
                out.add(int(entry))
    return out


def test_workers_share_the_address_and_the_fleet(
    db_url: str, api: Api, repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cp = ControlPlane(db_url, tmp_path_factory.mktemp("workers"), "--workers", "2")
    try:
        workers = _children(cp.proc.pid)
        assert len(workers) == 2, cp.log()
        stack = api.post("/stacks", json=stack_body("fastpath-workers", repo)).json()
        tok = api.post(f"/stacks/{stack['id']}/install-tokens").json()
        reg = Api(cp.url, None).post("/agent/register", json={"token": tok["token"], "hostname": "w"})  # fmt: skip
        assert reg.status_code == 201, reg.text
        headers = {"Authorization": f"Bearer {reg.json()['credential']}", "If-None-Match": "*"}
        # new connections land on either worker (SO_REUSEPORT): every one answers
        assert {ask(cp, "GET", POLL, headers)[0] for _ in range(20)} == {304}
        # a change saved elsewhere reaches a long poll on whichever worker holds it
        etag = f'"{stack["hash"]}"'
        body = stack_body("fastpath-workers", repo, poll_interval_s=7)
        assert api.put(f"/stacks/{stack['id']}", json=body).status_code == 200
        time.sleep(1.5)
        polls = {ask(cp, "GET", POLL, {**headers, "If-None-Match": etag})[0] for _ in range(10)}
        assert polls == {200}
        assert api.delete(f"/instances/{reg.json()['instance_id']}").status_code in (200, 204)
        time.sleep(1.5)
        assert {ask(cp, "GET", POLL, headers)[0] for _ in range(20)} == {401}
    finally:
        cp.stop()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers left running"


def test_workers_option_is_validated(db_url: str) -> None:
    from tests.controlplane.harness import berth

    for bad in ("0", "x", "65"):
        out = berth("controlplane", "serve", "--db", db_url, "--workers", bad)
        assert out.returncode == 2 and "--workers" in out.stderr and "1 to 64" in out.stderr


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000, None)),
        ("[::1]:0", ("::1", 0, None)),
        (":9000", ("0.0.0.0", 9000, None)),
        ("unix:/run/berth/cp.sock", ("", 0, "/run/berth/cp.sock")),
    ],
)
def test_parse_bind(bind: str, expected: tuple[str, int, str | None]) -> None:
    from controlplane.workers import parse_bind

    got = parse_bind(bind)
    assert (got.host, got.port, got.unix_path) == expected


@pytest.mark.parametrize("bind", ["localhost", "host:port", "host:70000", "unix:", ""])
def test_parse_bind_refuses(bind: str) -> None:
    from controlplane.workers import parse_bind

    with pytest.raises(ValueError, match="--bind"):
        parse_bind(bind)


def test_worker_argv_carries_every_serve_option() -> None:
    """`serve --workers N` starts each worker with the parent's settings, all of them."""
    from controlplane import cli
    from controlplane.settings import ServerSettings
    from controlplane.workers import worker_argv

    settings = ServerSettings(
        db_url="sqlite:///x.db", public_url="http://cp.example", wheelhouse="/w", fast_path=False,
        secret_key_file="/keys/cp.key", file_repo_roots=("/srv/a", "/srv/b"),
        heartbeat_interval_s=20.0, audit_retention_days=7, notify_interval_s=3.0,
        notify_lease_s=30.0, notify_backoff_s=2.5,
    )  # fmt: skip
    argv = worker_argv(settings, 7)
    args = cli._parser().parse_args(argv[argv.index("serve") :])
    assert args.bind == "fd://7" and args.db == "sqlite:///x.db"
    assert (args.public_url, args.wheelhouse, args.fast_path) == ("http://cp.example", "/w", False)
    assert args.secret_key_file == "/keys/cp.key"
    assert args.allow_file_repos == ["/srv/a", "/srv/b"]
    assert (args.heartbeat_interval, args.audit_retention_days) == (20.0, 7)
    assert (args.notify_interval, args.notify_lease, args.notify_backoff) == (3.0, 30.0, 2.5)

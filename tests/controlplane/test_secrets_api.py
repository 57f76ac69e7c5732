"""Secret env values through a real control plane (SQLite and PostgreSQL): set through the
API and through `berth stack apply` with a TOML file, they never appear in any response,
CLI output or database row, yet reach the stack's own agents; a database without its key
file opens nothing; `secrets rotate` re-seals everything while serving and the old key
file can then be deleted."""

import itertools
import re
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.schema.document import parse_document
from controlplane import secrets as sec
from controlplane.dburl import parse_db_url
from tests.controlplane.conftest import new_database
from tests.controlplane.harness import Api, ControlPlane, berth, stack_body
from tests.support.controlplane import create_admin_token

TOKEN_RE = re.compile(r"v1\.([0-9a-f]{8})\.")


def new_secret() -> str:
    return f"s3cr3t-{uuid.uuid4().hex}/+&="  # characters that URL encoding changes


@dataclass
class Env:
    db_url: str
    key: Path
    logs: Path
    cp: ControlPlane
    api: Api
    token: str
    bodies: list[str]  # every response body and CLI output seen: none may hold a value

    def call(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        resp = self.api.call(method, path, **kw)
        self.bodies.append(resp.text)
        assert resp.status_code == expect, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def restart(self, *extra: str) -> None:
        self.cp.stop()
        self.cp = ControlPlane(self.db_url, self.logs, "--secret-key-file", str(self.key), *extra)
        self.api = Api(self.cp.url, self.token)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    where = tmp_path_factory.mktemp("secrets")
    db_url = new_database(request.param, request, where)
    key = where / "keys" / "cp.secret-key"
    done = berth("controlplane", "migrate", "--db", db_url, "--secret-key-file", str(key))
    assert done.returncode == 0, done.stderr
    assert "created the secret key file" in done.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    token = create_admin_token(db_url, "tests")
    cp = ControlPlane(db_url, where, "--secret-key-file", str(key))
    e = Env(db_url, key, where, cp, Api(cp.url, token), token, [])
    yield e
    e.cp.stop()


def register(env: Env, stack_id: str) -> Api:
    token = env.call("POST", f"/stacks/{stack_id}/install-tokens", 201, json={})["token"]
    resp = requests.post(env.cp.url + "/api/v1/agent/register",
                         json={"token": token, "hostname": "h"}, timeout=10)  # fmt: skip
    assert resp.status_code == 201, resp.text
    return Api(env.cp.url, resp.json()["credential"])


def agent_env(agent: Api, service: str = "web") -> dict[str, Any]:
    resp = agent.get("/agent/desired-state")
    assert resp.status_code == 200, resp.text
    state = parse_document(resp.json())  # the agent's own check: hash and schema
    svc = state.service(service)
    assert svc is not None
    return svc.spec.environment()


def reaches(agent: Api, value: str, timeout_s: float = 10) -> bool:
    """Whether the agent's document carries `value` for DB_URL within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if agent_env(agent).get("DB_URL") == value:
            return True
        time.sleep(0.05)
    return False


def database_text(db_url: str, rows_only: bool = False) -> str:
    """Everything the database holds, as text: the SQLite files' bytes (free pages and
    the WAL included), or every row of every table."""
    url = parse_db_url(db_url)
    if url.is_sqlite and rows_only:
        import sqlite3

        with sqlite3.connect(url.sync_url.database or "") as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]  # fmt: skip
            return "\n".join(str(row) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"'))  # fmt: skip
    if url.is_sqlite:
        path = Path(url.sync_url.database or "")
        parts = [path, path.with_name(path.name + "-wal")]
        return "".join(p.read_bytes().decode("latin-1") for p in parts if p.exists())
    import psycopg

    with psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql")) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]  # fmt: skip
        return "\n".join(
            str(row[0]) for t in tables for row in conn.execute(f'SELECT t::text FROM "{t}" t')
        )


def test_a_secret_set_through_the_api_and_a_toml_file_never_shows(
    env: Env, repo: Path, tmp_path: Path
) -> None:
    v1, v2, v3, v4 = (new_secret() for _ in range(4))
    body = stack_body(f"sec-{uuid.uuid4().hex[:6]}", repo)
    body["services"][0]["env"] = {
        "GREETING": "hi",
        "DB_URL": {"secret": True, "value": v1},
        "LATER": {"secret": True},  # declared, not set
    }
    created = env.call("POST", "/stacks", 201, json=body)
    sid = created["id"]
    shown = created["services"][0]["env"]
    assert shown["GREETING"] == "hi" and shown["LATER"] == {"secret": True, "set": False, "fingerprint": None}  # fmt: skip
    assert shown["DB_URL"]["set"] is True and re.fullmatch(r"[0-9a-f]{16}", shown["DB_URL"]["fingerprint"])  # fmt: skip
    for path in ("/stacks", f"/stacks/{sid}", f"/stacks/{sid}/desired-state",
                 f"/stacks/{sid}/versions", f"/stacks/{sid}/versions/1", f"/stacks/{sid}/events"):  # fmt: skip
        env.call("GET", path)

    # only the stack's own agents get the value, and the hash they check covers it
    agent = register(env, sid)
    assert agent_env(agent) == {"GREETING": "hi", "DB_URL": v1}
    other = env.call("POST", "/stacks", 201, json=stack_body(f"other-{uuid.uuid4().hex[:6]}", repo))
    assert v1 not in register(env, other["id"]).get("/agent/desired-state").text
    assert env.call("GET", f"/stacks/{sid}/desired-state")["hash"] == created["hash"]

    # GET → PUT keeps the value (no new version); a new value replaces it, never echoed
    got = env.call("GET", f"/stacks/{sid}")
    assert env.call("PUT", f"/stacks/{sid}", json=got)["changed"] is False
    got["services"][0]["env"]["DB_URL"] = {"secret": True, "value": v2}
    updated = env.call("PUT", f"/stacks/{sid}", json=got)
    assert updated["changed"] is True and updated["hash"] != created["hash"]
    assert updated["services"][0]["env"]["DB_URL"]["fingerprint"] != shown["DB_URL"]["fingerprint"]
    assert reaches(agent, v2)
    # a rejected save says which field, never the value it was given
    got["services"][0]["env"]["DB_URL"] = {"secret": True, "value": v3}
    got["services"][0]["port"] = "x"
    env.call("PUT", f"/stacks/{sid}", 422, json=got)
    got["services"][0]["port"] = 19001
    got["services"][0]["env"]["DB_URL"] = {"secret": True, "value": v3, "shade": 1}
    assert env.call("PUT", f"/stacks/{sid}", 422, json=got)["field"] == "services[0].env.DB_URL.shade"  # fmt: skip
    assert agent_env(agent)["DB_URL"] == v2  # nothing was stored
    # a rollback restores the earlier version's value; it and refresh keep what they have
    rolled = env.call("POST", f"/stacks/{sid}/rollback", json={"version": 1})
    assert rolled["changed"] is True and reaches(agent, v1)
    env.call("POST", f"/stacks/{sid}/refresh")
    assert agent_env(agent)["DB_URL"] == v1

    # the stack TOML through the CLI: set, shown masked by apply and get, kept when omitted
    name = f"toml-{uuid.uuid4().hex[:6]}"
    toml = tmp_path / "stack.toml"
    toml.write_text(
        f'name = "{name}"\nsecurity_mode = "open"\n[[services]]\nname = "web"\n'
        f'repo = "file://{repo}"\nrun = "python3 app.py"\n'
        f'[services.env]\nPLAIN = "p"\nAPI_KEY = {{ secret = true, value = "{v4}" }}\n'
    )
    cli = {"BERTH_URL": env.cp.url, "BERTH_TOKEN": env.token}
    for args in (("stack", "apply", "-f", str(toml), "--yes"), ("stack", "get", name)):
        done = berth(*args, env=cli)
        assert done.returncode == 0, done.stderr
        env.bodies += [done.stdout, done.stderr]
    assert '"API_KEY"' in done.stdout and '"set": true' in done.stdout
    toml.write_text(toml.read_text().replace(f', value = "{v4}"', ""))
    kept = berth("stack", "apply", "-f", str(toml), "--yes", env=cli)
    assert kept.returncode == 0 and kept.stdout == "", kept.stdout + kept.stderr  # no change
    toml_stack = env.call("GET", "/stacks")["stacks"]
    toml_id = next(s["id"] for s in toml_stack if s["name"] == name)
    assert agent_env(register(env, toml_id))["API_KEY"] == v4

    text = database_text(env.db_url)
    for value in (v1, v2, v3, v4):
        for seen in env.bodies:
            assert value not in seen
        assert value not in text
    assert sid in text  # the database was read


def test_a_database_without_its_key_file_opens_nothing(
    env: Env, repo: Path, tmp_path: Path
) -> None:
    value = new_secret()
    body = stack_body(f"nokey-{uuid.uuid4().hex[:6]}", repo)
    body["services"][0]["env"] = {"DB_URL": {"secret": True, "value": value}}
    sid = env.call("POST", "/stacks", 201, json=body)["id"]
    agent = register(env, sid)
    wrong = tmp_path / "wrong.key"
    sec.ensure_key_file(wrong)
    stranger = ControlPlane(env.db_url, env.logs, "--secret-key-file", str(wrong))
    try:
        resp = Api(stranger.url, None).http.get(
            stranger.url + "/api/v1/agent/desired-state",
            headers={"Authorization": agent.http.headers["Authorization"]}, timeout=10,
        )  # fmt: skip
        assert resp.status_code == 503 and resp.json()["error"] == "secret_key_unavailable"
        assert value not in resp.text
        masked = Api(stranger.url, env.token).get(f"/stacks/{sid}")  # people's views need no key
        assert masked.status_code == 200 and masked.json()["services"][0]["env"]["DB_URL"]["set"]
    finally:
        stranger.stop()
    assert agent_env(agent)["DB_URL"] == value


def test_rotation_reseals_while_serving_and_the_old_key_file_can_go(
    env: Env, repo: Path, tmp_path: Path
) -> None:
    before, during = new_secret(), new_secret()
    body = stack_body(f"rot-{uuid.uuid4().hex[:6]}", repo)
    body["services"][0]["env"] = {"DB_URL": {"secret": True, "value": before}}
    sid = env.call("POST", "/stacks", 201, json=body)["id"]
    agent = register(env, sid)
    assert agent_env(agent)["DB_URL"] == before
    old_key = sec.parse_key_file(env.key.read_text(), "old")
    old_copy = tmp_path / "old.key"
    sec.write_key_file(old_copy, old_key)

    # saves with new values, and their agent reading each one, all through the rotation
    stop, outcomes = threading.Event(), []

    def save_and_read() -> None:
        http = Api(env.cp.url, env.token)
        for i in itertools.count():
            value = f"{during}-{i}"
            got = http.get(f"/stacks/{sid}").json()
            got["services"][0]["env"]["DB_URL"] = {"secret": True, "value": value}
            saved = http.put(f"/stacks/{sid}", json=got)
            # the directory may serve the previous version for one refresh tick (a save
            # racing its periodic re-read): wait for this value, boundedly
            outcomes.append(saved.status_code == 200 and reaches(agent, value))
            if stop.is_set() and i >= 2:
                return

    writer = threading.Thread(target=save_and_read, name="saves")
    writer.start()
    try:
        done = berth("controlplane", "secrets", "rotate", "--db", env.db_url,
                     "--secret-key-file", str(env.key))  # fmt: skip
    finally:
        stop.set()
        writer.join(60)
    assert done.returncode == 0, done.stderr
    assert len(outcomes) >= 3 and all(outcomes), outcomes
    [new_key] = sec.parse_key_file(env.key.read_text(), "new")
    assert new_key.id not in {k.id for k in old_key}
    assert stat.S_IMODE(env.key.stat().st_mode) == 0o600
    assert set(TOKEN_RE.findall(database_text(env.db_url, rows_only=True))) == {new_key.id}

    # the running server picked up the new key: it seals and opens with it
    got = env.call("GET", f"/stacks/{sid}")
    got["services"][0]["env"]["DB_URL"] = {"secret": True, "value": during}
    assert env.call("PUT", f"/stacks/{sid}", json=got)["changed"] is True
    assert reaches(agent, during)
    assert set(TOKEN_RE.findall(database_text(env.db_url, rows_only=True))) == {new_key.id}

    # the old key file can go: a restarted server (nothing cached) opens every secret
    (env.key.parent / (env.key.name + ".previous")).unlink()
    env.restart()
    agent = Api(env.cp.url, agent.http.headers["Authorization"].split()[1])
    assert agent_env(agent)["DB_URL"] == during
    tokens = re.findall(
        r"v1\.[0-9a-f]{8}\.[A-Za-z0-9_=-]+", database_text(env.db_url, rows_only=True)
    )
    assert tokens
    for token in tokens:  # and the old key opens nothing any more
        with pytest.raises(sec.SecretKeyUnavailable):
            sec.Keyring(old_copy).open(token, "any")

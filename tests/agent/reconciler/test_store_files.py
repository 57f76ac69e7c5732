"""Issue 15.2: every SQLite file of the agent and the control plane (the database and its
-wal and -shm) is the owner's alone after real use, whatever the umask."""

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from agent.reconciler.store import Store
from tests.support.controlplane import create_admin_token, migrate


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)  # the usual default: files born 0644
    yield
    os.umask(old)


def modes(db: Path) -> dict[str, int]:
    found = {}
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = db.with_name(db.name + suffix)
        if path.exists():
            found[path.name] = stat.S_IMODE(path.stat().st_mode)
    return found


def test_agent_store_files_are_private(tmp_path, loose_umask):
    db = tmp_path / "agent.sqlite3"
    store = Store(db)
    store.put("credential", "berth_agt_secret")
    store.add_event("config", "x")
    found = modes(db)
    assert {"agent.sqlite3", "agent.sqlite3-wal", "agent.sqlite3-shm"} <= found.keys()
    assert set(found.values()) == {0o600}, found
    assert b"berth_agt_secret" in db.with_name(db.name + "-wal").read_bytes()  # what is at stake
    store.close()


def test_files_an_older_version_left_readable_are_tightened(tmp_path, loose_umask):
    db = tmp_path / "agent.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    assert set(modes(db).values()) == {0o644}
    Store(db).close()
    conn.close()
    assert set(modes(db).values()) == {0o600}, modes(db)


def test_control_plane_database_files_are_private(tmp_path, loose_umask):
    db = tmp_path / "cp.db"
    url = f"sqlite:///{db}"
    migrate(url)
    create_admin_token(url, "t")  # a write through the app's own engines
    conn = sqlite3.connect(db)  # keep the WAL open to see its files
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    found = modes(db)
    conn.close()
    assert {"cp.db", "cp.db-wal", "cp.db-shm"} <= found.keys()
    assert set(found.values()) == {0o600}, found

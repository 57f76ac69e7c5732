"""The reconciler's local SQLite: credentials, the last desired state, the event outbox and
the processes it runs.

Everything the agent must remember across a crash or reboot lives here, so a control-plane
outage changes nothing on the server: the cached desired state is applied after a reboot
and events wait in the outbox until the control plane acknowledges them.

The file (and SQLite's -wal/-shm beside it, which take its mode) is 0600 from its first
byte: it holds the credential and the desired state with its secret values.
"""

import json
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.privatefiles import private_sqlite
from agent.schema.report import Event

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS processes (
    service TEXT NOT NULL,
    pid INTEGER NOT NULL,
    start_ticks INTEGER NOT NULL,
    port INTEGER NOT NULL,
    commit_sha TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    release_dir TEXT NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (service, pid)
);
"""


@dataclass(frozen=True)
class ProcessRecord:
    """A service process we started: enough to re-adopt it after our own restart."""

    service: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat start time: a reused pid never matches
    port: int
    commit: str
    config_hash: str
    release_dir: str
    started_at: float


class Store:
    def __init__(self, path: Path) -> None:
        private_sqlite(path)  # before SQLite writes: its -wal/-shm inherit the 0600
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # --- key/value -------------------------------------------------------------------
    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO kv(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def get_json(self, key: str) -> Any:
        raw = self.get(key)
        return json.loads(raw) if raw is not None else None

    def put_json(self, key: str, value: Any) -> None:
        self.put(key, json.dumps(value, separators=(",", ":")))

    # --- event outbox ----------------------------------------------------------------
    def add_event(self, type_: str, message: str, service: str | None = None, **extra: Any) -> str:
        event = Event(str(uuid.uuid4()), type_, message, datetime.now(UTC), service, extra)
        body = json.dumps(event.to_json())
        self._db.execute("INSERT INTO outbox(id, body) VALUES(?, ?)", (event.id, body))
        return event.id

    def pending_events(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT body FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def ack_events(self, ids: list[str]) -> None:
        self._db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in ids])

    # --- processes -------------------------------------------------------------------
    def save_process(self, rec: ProcessRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO processes VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.service,
                rec.pid,
                rec.start_ticks,
                rec.port,
                rec.commit,
                rec.config_hash,
                rec.release_dir,
                rec.started_at,
            ),
        )

    def forget_process(self, service: str, pid: int) -> None:
        self._db.execute("DELETE FROM processes WHERE service=? AND pid=?", (service, pid))

    def processes(self) -> list[ProcessRecord]:
        rows = self._db.execute("SELECT * FROM processes ORDER BY started_at").fetchall()
        return [ProcessRecord(*row) for row in rows]

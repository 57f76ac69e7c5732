"""Engines and sessions.

`Database` owns the async engine the app uses. SQLite connections get WAL (readers never
block the writer), a busy timeout (a second writer waits instead of failing) and foreign
keys (cascading deletes). SQLite allows one writer at a time and a transaction that reads
then writes can fail if another connection wrote in between, so within one process every
write transaction on SQLite is serialised by an asyncio lock, and it runs on a second
engine whose transactions start with `BEGIN IMMEDIATE`: the write lock is taken first
(waiting up to the busy timeout), so a save cannot fail half-way because another process
(`serve --workers N`, a CLI command) committed meanwhile. PostgreSQL needs neither (row
locks, `SELECT ... FOR UPDATE`, do the job).
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from agent.privatefiles import private_sqlite
from controlplane.dburl import DatabaseURL

SQLITE_BUSY_TIMEOUT_MS = 10_000


def sqlite_pragmas(engine: Engine) -> None:
    """Set WAL, busy_timeout and foreign_keys=ON on every new connection of a SQLite engine."""
    if engine.dialect.name != "sqlite":
        return
    if engine.url.database:  # webhook secrets and env values: the owner's eyes only
        private_sqlite(Path(engine.url.database))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
        cur.close()


def sqlite_begin_immediate(engine: Engine) -> None:
    """Start every transaction of this SQLite engine with BEGIN IMMEDIATE (SQLAlchemy's
    documented recipe: the driver's own implicit BEGIN is turned off)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    def __init__(self, url: DatabaseURL, pool_size: int = 10) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if not url.is_sqlite:
            kwargs = {"pool_size": pool_size, "max_overflow": pool_size * 2, "pool_pre_ping": True}
        self.engine: AsyncEngine = create_async_engine(url.async_url, **kwargs)
        sqlite_pragmas(self.engine.sync_engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if url.is_sqlite else None
        self._write_engine = self.engine
        self._write_sessions = self.sessions
        if url.is_sqlite:
            self._write_engine = create_async_engine(url.async_url)
            sqlite_pragmas(self._write_engine.sync_engine)
            sqlite_begin_immediate(self._write_engine.sync_engine)
            self._write_sessions = async_sessionmaker(self._write_engine, expire_on_commit=False)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only (rolled back at the end)."""
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A transaction committed on success, rolled back on any exception."""
        if self._write_lock is None:
            async with self.sessions() as session, session.begin():
                yield session
            return
        async with self._write_lock, self._write_sessions() as session, session.begin():
            yield session

    async def close(self) -> None:
        await self.engine.dispose()
        if self._write_engine is not self.engine:
            await self._write_engine.dispose()

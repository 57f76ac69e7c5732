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

Off the event loop: the async engines run SQLAlchemy's own work (compiling, binding each
row, JSON) on the event loop; only the driver call goes to a thread. For the bulk writes
a fleet makes (heartbeat and metric group commits, rollup slices) that is milliseconds per
batch, so `write_in_thread` runs a whole transaction on a sync engine in a dedicated thread,
on both databases: the event loop only hands over plain rows. On SQLite the serving process
also takes the WAL checkpoints off the write path: its connections never checkpoint on
commit (`wal_autocheckpoint=0`, else the commit that crosses 1,000 WAL pages copies them
into the database and fsyncs it while every heartbeat of its batch waits), and
`start()` runs a PASSIVE checkpoint every `CHECKPOINT_INTERVAL_S` in a thread of its own,
which never blocks a writer.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from agent.privatefiles import private_sqlite
from controlplane.dburl import DatabaseURL

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
CHECKPOINT_INTERVAL_S = 1.0


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


def sqlite_no_autocheckpoint(engine: Engine) -> None:
    """Commits on this engine's connections never run a WAL checkpoint themselves."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()


class Database:
    def __init__(self, url: DatabaseURL, pool_size: int = 10) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if not url.is_sqlite:
            kwargs = {"pool_size": pool_size, "max_overflow": pool_size * 2, "pool_pre_ping": True}
        self.engine: AsyncEngine = create_async_engine(url.async_url, **kwargs)
        sqlite_pragmas(self.engine.sync_engine)
        self._thread_engine: Engine | None = None  # for write_in_thread, made on first use
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="berth-db-writer")
        self._checkpoints: asyncio.Task[None] | None = None
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

    def _engine_for_threads(self) -> Engine:
        if self._thread_engine is None:
            kwargs: dict[str, Any] = {}
            if not self.url.is_sqlite:
                kwargs = {"pool_size": 2, "max_overflow": 0, "pool_pre_ping": True}
            engine = create_engine(self.url.sync_url, **kwargs)
            sqlite_pragmas(engine)
            if self.url.is_sqlite:
                sqlite_begin_immediate(engine)
                if self._checkpoints is not None:
                    sqlite_no_autocheckpoint(engine)
            self._thread_engine = engine
        return self._thread_engine

    async def write_in_thread(self, work: Callable[[Connection], None]) -> None:
        """Run `work(connection)` in one transaction on the writer thread: committed on
        success, rolled back on any exception (re-raised here). On SQLite it holds the
        same lock as `write()`."""
        engine = self._engine_for_threads()

        def run() -> None:
            with engine.begin() as conn:
                work(conn)

        loop = asyncio.get_running_loop()
        if self._write_lock is None:
            await loop.run_in_executor(self._writer, run)
            return
        async with self._write_lock:
            await loop.run_in_executor(self._writer, run)

    def start(self) -> None:
        """While serving (SQLite): WAL checkpoints in a thread instead of on commit."""
        if not self.url.is_sqlite or self._checkpoints is not None:
            return
        for engine in (self.engine.sync_engine, self._write_engine.sync_engine):
            sqlite_no_autocheckpoint(engine)
        if self._thread_engine is not None:  # made before serving: new connections too
            sqlite_no_autocheckpoint(self._thread_engine)
        self._checkpoints = asyncio.create_task(
            self._checkpoint_forever(), name="berth-wal-checkpoint"
        )

    async def _checkpoint_forever(self) -> None:
        engine = create_engine(self.url.sync_url)
        sqlite_pragmas(engine)
        with ThreadPoolExecutor(1, thread_name_prefix="berth-wal-checkpoint") as thread:

            def checkpoint() -> None:
                with engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

            loop = asyncio.get_running_loop()
            try:
                while True:
                    await asyncio.sleep(CHECKPOINT_INTERVAL_S)
                    try:
                        await loop.run_in_executor(thread, checkpoint)
                    except Exception:  # a busy or locked database: try again next time
                        log.exception("WAL checkpoint failed")
            finally:
                await loop.run_in_executor(thread, engine.dispose)

    async def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoints
            self._checkpoints = None
        if self._thread_engine is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._writer, self._thread_engine.dispose
            )
        self._writer.shutdown(wait=False)
        await self.engine.dispose()
        if self._write_engine is not self.engine:
            await self._write_engine.dispose()

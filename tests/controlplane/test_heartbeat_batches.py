"""The heartbeat group commit: an agent's 200 means its own row is committed, even when
more heartbeats are queued than one batch takes."""

import asyncio

from controlplane import heartbeats
from controlplane.heartbeats import HeartbeatWriter
from controlplane.status import Heartbeat


class RecordingDb:
    """Stands in for the database session only to observe which rows each commit held."""

    class url:  # noqa: N801 - mirrors Database.url
        is_sqlite = False  # the writer-thread path (PostgreSQL)

    def __init__(self) -> None:
        self.committed: set[str] = set()

    async def write_in_thread(self, work):
        class Conn:
            def execute(self, _stmt, rows=None):
                db._rows = [r["row_id"] for r in rows or []]

        db = self
        work(Conn())
        await asyncio.sleep(0.01)
        self.committed.update(self._rows)


def test_each_caller_waits_for_its_own_rows_commit(monkeypatch):
    monkeypatch.setattr(heartbeats, "MAX_BATCH", 3)
    db = RecordingDb()
    hb = Heartbeat(
        agent_version="1", applied_version=1, state="applied", services=[], security={}, extra={}
    )

    async def scenario():
        writer = HeartbeatWriter(db, window_s=0.0)  # type: ignore[arg-type]
        writer.start()

        async def beat(i):
            await writer.record(f"i{i}", hb)
            assert f"i{i}" in db.committed, f"i{i} answered before its row was committed"

        await asyncio.gather(*(beat(i) for i in range(8)))
        await writer.stop()

    asyncio.run(scenario())
    assert db.committed == {f"i{i}" for i in range(8)}

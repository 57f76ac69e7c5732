"""Stopping every service the reconciler recorded (demo exit, uninstall)."""

import asyncio

from agent.reconciler.process import stop_group
from agent.reconciler.store import Store
from agent.settings import AgentSettings


def stop_recorded_services(settings: AgentSettings) -> int:
    store = Store(settings.state_dir / "agent.sqlite3")
    try:
        records = store.processes()

        async def stop_all() -> None:
            await asyncio.gather(*(stop_group(r.pid, r.start_ticks, 10.0) for r in records))

        asyncio.run(stop_all())
        for r in records:
            store.forget_process(r.service, r.pid)
        return len(records)
    finally:
        store.close()

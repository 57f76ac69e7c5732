"""Stopping every service the reconciler recorded (`berth agent stop-services`: run-all's
--stop-services-on-exit, the demo's exit; the uninstaller)."""

import asyncio
import logging

from agent.reconciler.process import stop_group
from agent.reconciler.store import Store
from agent.settings import AgentSettings

log = logging.getLogger(__name__)


def main(settings: AgentSettings) -> int:
    """`berth agent stop-services`: run with the reconciler stopped, or it restarts them."""
    stopped = stop_recorded_services(settings)
    log.info("stopped %d service process(es)", stopped)
    return 0


def stop_recorded_services(settings: AgentSettings) -> int:
    store = Store(settings.state_layout.store)
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

"""Taking over the services a previous reconciler left running (they never stopped).

Two live processes of one service mean the reconciler died mid-cutover: keep the newer
only if it is ready (it was already serving, or about to); otherwise it may not even
listen yet, so keep the older one and let the planner redo the deploy (its release is
built already).
"""

import logging

from agent.reconciler import health, process
from agent.reconciler.store import ProcessRecord, Store
from agent.schema.document import DesiredState

log = logging.getLogger(__name__)


async def survivors(
    store: Store, cached: DesiredState | None, stop_grace_s: float
) -> dict[str, ProcessRecord]:
    """The one process to adopt per service; the rest are stopped and forgotten."""
    live: dict[str, list[ProcessRecord]] = {}
    for rec in store.processes():  # oldest first
        if process.is_alive(rec.pid, rec.start_ticks):
            live.setdefault(rec.service, []).append(rec)
        else:
            store.forget_process(rec.service, rec.pid)
    kept: dict[str, ProcessRecord] = {}
    for service, recs in live.items():
        keep = recs[-1]
        if len(recs) > 1 and not await _ready(keep, cached):
            keep = recs[-2]
        for rec in recs:
            if rec is not keep:
                log.info("%s: stopping pid %d left from an interrupted cutover", service, rec.pid)
                await process.stop_group(rec.pid, rec.start_ticks, stop_grace_s)
                store.forget_process(rec.service, rec.pid)
        kept[service] = keep
    return kept


async def _ready(rec: ProcessRecord, cached: DesiredState | None) -> bool:
    svc = cached.service(rec.service) if cached else None
    hc = svc.spec.health if svc else None
    if hc is not None:
        ok, _ = await health.probe(rec.port, hc.path, hc.timeout_s)
        return ok
    return await health.port_open(rec.port)

"""The one object every blueprint receives: settings, database, agent directory, long-poll
watcher, heartbeat writer, the secrets' keyring and agent rollouts."""

import asyncio
import gc
from dataclasses import dataclass
from pathlib import Path

from controlplane.agentdirectory import AgentDirectory
from controlplane.agentupgrades import Rollouts, Wheelhouse
from controlplane.audit import Sweeper
from controlplane.db import Database
from controlplane.heartbeats import HeartbeatWriter
from controlplane.longpoll import StackWatcher
from controlplane.metrics.intake import MetricWriter
from controlplane.notify.notifier import Notifier
from controlplane.secrets import Keyring, default_key_file
from controlplane.settings import ServerSettings

# a full collection (all generations) at most this often; see _collect_rarely
FULL_GC_INTERVAL_S = 600.0


@dataclass
class AppContext:
    settings: ServerSettings
    db: Database
    directory: AgentDirectory
    watcher: StackWatcher
    heartbeats: HeartbeatWriter
    keyring: Keyring
    audit_sweeper: Sweeper
    notifier: Notifier
    rollouts: Rollouts  # the wheelhouse's version and each stack's rolling agent upgrade
    metric_writes: MetricWriter  # agents' metric batches, group-committed
    # set by `serve` (the process is ours alone): tune the collector after the preload
    tune_gc: bool = False
    _gc_task: "asyncio.Task[None] | None" = None

    @classmethod
    def create(cls, settings: ServerSettings, db: Database) -> "AppContext":
        keyring = Keyring(
            Path(settings.secret_key_file) if settings.secret_key_file else default_key_file(db.url)
        )
        directory = AgentDirectory(db, keyring)
        watcher = StackWatcher(directory.refresh, settings.longpoll_interval_s, directory.document)
        return cls(
            settings, db, directory, watcher, HeartbeatWriter(db), keyring,
            Sweeper(db, settings.audit_retention_days),
            Notifier(db, settings.notify_interval_s, settings.notify_lease_s,
                     settings.notify_backoff_s, keyring=keyring),
            Rollouts(db, Wheelhouse(settings.wheelhouse), settings.heartbeat_interval_s),
            MetricWriter(db),
        )  # fmt: skip

    def stack_changed(self, stack_id: str, doc_hash: str | None) -> None:
        """`stacks.Listener`: after a committed save/delete in this process, update the
        agent directory and wake the stack's long polls (`stacks` calls it, no handler)."""
        self.directory.stack_changed(stack_id, doc_hash)
        self.watcher.notify(stack_id)

    async def start(self) -> None:
        self.db.start()
        await self.directory.refresh()
        await self.directory.preload()
        if self.tune_gc:
            self._gc_task = asyncio.create_task(_collect_rarely(), name="berth-gc")
        self.watcher.start()
        self.heartbeats.start()
        self.metric_writes.start()
        self.audit_sweeper.start()
        self.notifier.start()

    async def stop(self) -> None:
        if self._gc_task is not None:
            self._gc_task.cancel()
        await self.watcher.stop()
        await self.heartbeats.stop()
        await self.metric_writes.stop()
        await self.audit_sweeper.stop()
        await self.notifier.stop()


async def _collect_rarely() -> None:
    """The collector's policy for a serving process.

    What exists after the preload (the app, the fleet's credentials) lives as long as the
    process: it is frozen, out of the collector's reach. Young collections stay automatic
    (each scans at most a few thousand objects: well under a millisecond). Full ones do not:
    with 10,000 agents holding long polls, several hundred thousand live objects are in the
    oldest generation, CPython scanned them all every few seconds, and each scan stopped
    the event loop for 100-400 ms (measured with BERTH_STALL_TRACE_MS). Here a full
    collection runs every `FULL_GC_INTERVAL_S` instead: the requests' garbage is freed by
    reference counting at once, and what sits in reference cycles (a closed connection's
    protocol and transport) waits at most that long.
    """
    gc.collect()
    gc.freeze()
    young, middle, _old = gc.get_threshold()
    gc.set_threshold(young, middle, 1_000_000_000)  # never automatic
    try:
        while True:
            await asyncio.sleep(FULL_GC_INTERVAL_S)
            gc.collect()
    finally:
        gc.set_threshold(young, middle, _old)

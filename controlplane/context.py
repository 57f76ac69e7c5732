"""The one object every blueprint receives: settings, database, agent directory, long-poll
watcher and heartbeat writer."""

from dataclasses import dataclass

from controlplane.db import Database
from controlplane.directory import AgentDirectory
from controlplane.heartbeats import HeartbeatWriter
from controlplane.longpoll import StackWatcher
from controlplane.settings import ServerSettings


@dataclass
class AppContext:
    settings: ServerSettings
    db: Database
    directory: AgentDirectory
    watcher: StackWatcher
    heartbeats: HeartbeatWriter

    @classmethod
    def create(cls, settings: ServerSettings, db: Database) -> "AppContext":
        directory = AgentDirectory(db)
        watcher = StackWatcher(directory.refresh, settings.longpoll_interval_s)
        return cls(settings, db, directory, watcher, HeartbeatWriter(db))

    def stack_changed(self, stack_id: str, doc_hash: str | None) -> None:
        """After a committed save/delete here: update the directory, wake long polls."""
        self.directory.stack_changed(stack_id, doc_hash)
        self.watcher.notify(stack_id)

    async def start(self) -> None:
        await self.directory.refresh()
        await self.directory.preload()
        self.watcher.start()
        self.heartbeats.start()

    async def stop(self) -> None:
        await self.watcher.stop()
        await self.heartbeats.stop()

"""The one object every blueprint receives: settings, database, agent directory, long-poll
watcher, heartbeat writer, the secrets' keyring and agent rollouts."""

from dataclasses import dataclass
from pathlib import Path

from controlplane.agentupgrades import Rollouts, Wheelhouse
from controlplane.audit import Sweeper
from controlplane.db import Database
from controlplane.directory import AgentDirectory
from controlplane.heartbeats import HeartbeatWriter
from controlplane.longpoll import StackWatcher
from controlplane.notify.notifier import Notifier
from controlplane.secrets import Keyring, default_key_file
from controlplane.settings import ServerSettings


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

    @classmethod
    def create(cls, settings: ServerSettings, db: Database) -> "AppContext":
        keyring = Keyring(
            Path(settings.secret_key_file) if settings.secret_key_file else default_key_file(db.url)
        )
        directory = AgentDirectory(db, keyring)
        watcher = StackWatcher(directory.refresh, settings.longpoll_interval_s)
        return cls(
            settings, db, directory, watcher, HeartbeatWriter(db), keyring,
            Sweeper(db, settings.audit_retention_days),
            Notifier(db, settings.notify_interval_s, settings.notify_lease_s,
                     settings.notify_backoff_s, keyring=keyring),
            Rollouts(db, Wheelhouse(settings.wheelhouse), settings.heartbeat_interval_s),
        )  # fmt: skip

    def stack_changed(self, stack_id: str, doc_hash: str | None) -> None:
        """After a committed save/delete here: update the directory, wake long polls."""
        self.directory.stack_changed(stack_id, doc_hash)
        self.watcher.notify(stack_id)

    async def start(self) -> None:
        await self.directory.refresh()
        await self.directory.preload()
        self.watcher.start()
        self.heartbeats.start()
        self.audit_sweeper.start()
        self.notifier.start()

    async def stop(self) -> None:
        await self.watcher.stop()
        await self.heartbeats.stop()
        await self.audit_sweeper.stop()
        await self.notifier.stop()

"""The one object every blueprint receives: settings, database and long-poll watcher."""

from dataclasses import dataclass

from sqlalchemy import select

from controlplane.db import Database
from controlplane.longpoll import StackWatcher
from controlplane.models import Stack
from controlplane.settings import ServerSettings


@dataclass
class AppContext:
    settings: ServerSettings
    db: Database
    watcher: StackWatcher

    @classmethod
    def create(cls, settings: ServerSettings, db: Database) -> "AppContext":
        async def fetch_hashes(ids: set[str]) -> dict[str, str]:
            async with db.read() as session:
                rows = await session.execute(
                    select(Stack.id, Stack.doc_hash).where(Stack.id.in_(ids))
                )
                return {r.id: r.doc_hash for r in rows}

        return cls(settings, db, StackWatcher(fetch_hashes, settings.longpoll_interval_s))

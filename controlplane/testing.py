"""Helpers for other engineers' integration tests and the demo (synchronous).

migrate(db_url)                       bring a database to the newest schema
create_admin_token(db_url, name)      a new admin token, as `token create` prints it
"""

import asyncio

from controlplane import enrollment
from controlplane import migrate as _migrate
from controlplane.db import Database
from controlplane.dburl import parse_db_url


def migrate(db_url: str) -> None:
    _migrate.upgrade(parse_db_url(db_url))


def create_admin_token(db_url: str, name: str) -> str:
    async def create() -> str:
        db = Database(parse_db_url(db_url))
        try:
            return (await enrollment.create_admin_token(db, name))[1]
        finally:
            await db.close()

    return asyncio.run(create())

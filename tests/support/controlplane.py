"""Control-plane setup for tests and benchmarks, in-process and synchronous (the demo runs
the real `berth controlplane migrate` / `token create` commands instead).

migrate(db_url[, secret_key_file])    bring a database to the newest schema; create the secret
                                      key file (for SQLite beside the database by default)
create_admin_token(db_url, name)      a new admin token, as `token create` prints it
"""

import asyncio

from controlplane import enrollment
from controlplane import migrate as _migrate
from controlplane.db import Database
from controlplane.dburl import parse_db_url


def migrate(db_url: str, secret_key_file: str | None = None) -> None:
    """As `berth controlplane migrate` does (PostgreSQL: only with `secret_key_file`)."""
    from pathlib import Path

    from controlplane.secrets import default_key_file, ensure_key_file

    url = parse_db_url(db_url)
    if secret_key_file or url.is_sqlite:
        ensure_key_file(Path(secret_key_file) if secret_key_file else default_key_file(url))
    _migrate.upgrade(url)


def create_admin_token(db_url: str, name: str) -> str:
    async def create() -> str:
        db = Database(parse_db_url(db_url))
        try:
            return (await enrollment.create_admin_token(db, name))[1]
        finally:
            await db.close()

    return asyncio.run(create())

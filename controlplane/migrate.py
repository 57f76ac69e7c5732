"""Alembic, driven from code: `upgrade` brings a database to the newest schema and
`check_current` tells `serve` whether a database is ready (and what to run if not).

Migrations run on a synchronous engine (sqlite3 / psycopg) before the async app starts.
"""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from controlplane.db import sqlite_pragmas
from controlplane.dburl import DatabaseURL

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class SchemaOutdated(Exception):
    """The database is not at the newest schema; the message says what to run."""


def _config(db: DatabaseURL) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a literal % in a password must be doubled
    cfg.set_main_option(
        "sqlalchemy.url", db.sync_url.render_as_string(hide_password=False).replace("%", "%%")
    )
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config_no_db()).get_current_head()
    assert head is not None, "controlplane/migrations has no revisions"
    return head


def _config_no_db() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(db: DatabaseURL, revision: str = "head") -> tuple[str | None, str]:
    """Migrate `db` to `revision`; returns (revision before, revision after)."""
    if db.is_sqlite:
        Path(db.sync_url.database or "").parent.mkdir(parents=True, exist_ok=True)
    before = current_revision(db)
    engine = create_engine(db.sync_url)
    sqlite_pragmas(engine)
    try:
        with engine.begin() as conn:
            cfg = _config(db)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
    return before, current_revision(db) or ""


def current_revision(db: DatabaseURL) -> str | None:
    if db.is_sqlite and not Path(db.sync_url.database or "").exists():
        return None  # do not create an empty file just by looking
    engine = create_engine(db.sync_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def check_current(db: DatabaseURL) -> None:
    """Raise SchemaOutdated unless `db` is at the newest revision."""
    current, head = current_revision(db), head_revision()
    if current == head:
        return
    where = db.display()
    if current is None:
        raise SchemaOutdated(
            f"database {where} has no Berth schema; run: berth controlplane migrate --db {where}"
        )
    raise SchemaOutdated(
        f"database {where} is at schema {current}, this version needs {head}; "
        f"run: berth controlplane migrate --db {where}"
    )

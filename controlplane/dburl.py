"""Database URLs: what users type versus what SQLAlchemy's drivers need.

Users pass plain URLs (``sqlite:///path/x.db``, ``postgresql://...``,
``postgresql+psycopg://...``). The app runs on asyncio drivers (aiosqlite, psycopg's async
mode) while Alembic migrations run synchronously, so each URL has an async and a sync form.
"""

from dataclasses import dataclass

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DB_URL = "sqlite:///./berth-controlplane.sqlite3"

_SQLITE = {"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"}
_POSTGRES = {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg_async"}


@dataclass(frozen=True)
class DatabaseURL:
    """One database, in the two driver forms the control plane needs."""

    async_url: URL
    sync_url: URL

    @property
    def is_sqlite(self) -> bool:
        return self.sync_url.get_backend_name() == "sqlite"

    def display(self) -> str:
        """The URL with any password hidden, safe for logs."""
        return self.sync_url.render_as_string(hide_password=True)


def parse_db_url(raw: str) -> DatabaseURL:
    """Translate a user's URL; raise ValueError naming `--db` when it cannot work."""
    try:
        url = make_url(raw.replace("postgres://", "postgresql://", 1))
    except ArgumentError as exc:
        raise ValueError(
            f"--db: {raw!r} is not a database URL; use sqlite:///path/file.db or "
            "postgresql+psycopg://user:pass@host:port/dbname"
        ) from exc
    if url.drivername in _SQLITE:
        if not url.database or url.database == ":memory:":
            raise ValueError(
                "--db: SQLite needs a file path (sqlite:///path/file.db); memory is not persisted"
            )
        return DatabaseURL(url.set(drivername="sqlite+aiosqlite"), url.set(drivername="sqlite"))
    if url.drivername in _POSTGRES:
        return DatabaseURL(
            url.set(drivername="postgresql+psycopg"), url.set(drivername="postgresql+psycopg")
        )
    raise ValueError(
        f"--db: unsupported database {url.drivername!r}; use sqlite:///path/file.db or "
        "postgresql+psycopg://user:pass@host:port/dbname"
    )

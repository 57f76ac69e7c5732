"""Dashboard users and their sessions, stored in the control plane's database.

A session is a random cookie value; the database keeps only its SHA-256 digest (like every
other Berth secret) plus a per-session CSRF token that every form must echo. Logging out
deletes the row, so a stolen cookie stops working at once, on every node.
"""

import asyncio
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from controlplane import tokens
from controlplane.dashboard.passwords import (
    DUMMY_HASH,
    check_password_rules,
    hash_password,
    verify_password,
)
from controlplane.db import Database
from controlplane.models import User, UserSession, utcnow

SESSION_TTL = timedelta(hours=12)
SESSION_PREFIX = "berth_ses_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")


@dataclass(frozen=True)
class LoggedIn:
    user_id: str
    user_name: str
    csrf_token: str
    expires_at: datetime


def check_user_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(
            "user name must be 1-100 characters: letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


async def set_user(db: Database, name: str, password: str, *, replace: bool = False) -> str:
    """Create user `name` (or, with `replace`, reset its password); returns its id.

    ValueError names what is wrong: the name, the password, or an existing user."""
    check_user_name(name)
    check_password_rules(password)
    pw_hash = await asyncio.to_thread(hash_password, password)
    async with db.write() as session:
        row = await session.scalar(select(User).where(User.name == name))
        if row is not None:
            if not replace:
                raise ValueError(f"user {name!r} already exists")
            row.password_hash = pw_hash
            await session.execute(delete(UserSession).where(UserSession.user_id == row.id))
            return row.id
        row = User(id=str(uuid.uuid4()), name=name, password_hash=pw_hash, created_at=utcnow())
        session.add(row)
        return row.id


async def authenticate(db: Database, name: str, password: str) -> User | None:
    async with db.read() as session:
        row = await session.scalar(select(User).where(User.name == name))
    stored = row.password_hash if row is not None else DUMMY_HASH
    ok = await asyncio.to_thread(verify_password, password, stored)
    return row if ok and row is not None else None


async def open_session(db: Database, user: User) -> tuple[str, LoggedIn]:
    """(cookie value, session) for a user who just proved their password."""
    token = tokens.new_secret(SESSION_PREFIX)
    now = utcnow()
    row = UserSession(
        token_hash=tokens.digest(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + SESSION_TTL,
    )
    async with db.write() as session:
        # expired sessions of anyone are swept here: logins are rare, so this stays cheap
        await session.execute(delete(UserSession).where(UserSession.expires_at < now))
        session.add(row)
    return token, LoggedIn(user.id, user.name, row.csrf_token, row.expires_at)


async def lookup_session(db: Database, token: str | None) -> LoggedIn | None:
    if not token or not token.startswith(SESSION_PREFIX):
        return None
    async with db.read() as session:
        found = (
            await session.execute(
                select(UserSession, User.name)
                .join(User, User.id == UserSession.user_id)
                .where(UserSession.token_hash == tokens.digest(token))
            )
        ).first()
    if found is None:
        return None
    row, name = found
    if row.expires_at <= utcnow():
        return None
    return LoggedIn(row.user_id, name, row.csrf_token, row.expires_at)


async def close_session(db: Database, token: str) -> None:
    async with db.write() as session:
        await session.execute(
            delete(UserSession).where(UserSession.token_hash == tokens.digest(token))
        )

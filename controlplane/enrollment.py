"""Enrollment and credentials: admin tokens, install tokens, agent registration and auth.

Install tokens are one-time: registration marks a token used with a conditional UPDATE
(`... WHERE used_at IS NULL`), so two agents racing with one token cannot both win. The
credential an agent receives is shown once and stored as a SHA-256 digest; revoking the
instance (`revoked_at`) makes the next request with it fail.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from agent.schema.registration import Registration
from controlplane import tokens
from controlplane.db import Database
from controlplane.errors import NotFound, Unauthorized
from controlplane.models import AdminToken, InstallToken, Instance, Stack, iso, utcnow

DEFAULT_INSTALL_TOKEN_TTL_S = 3600.0
MIN_TTL_S, MAX_TTL_S = 60.0, 7 * 24 * 3600.0  # an install token's lifetime, API and dashboard


def install_command(public_url: str, token: str) -> str:
    """The one line a server's admin runs to install the agent with `token`."""
    return f"curl -fsSL {public_url.rstrip('/')}/install.sh | sudo sh -s -- --token {token}"


@dataclass(frozen=True)
class NewInstallToken:
    id: str
    token: str
    expires_at: datetime


# admin tokens -----------------------------------------------------------------------


async def create_admin_token(db: Database, name: str) -> tuple[str, str]:
    """(id, token); the token itself is never stored."""
    token = tokens.new_secret(tokens.ADMIN_PREFIX)
    row = AdminToken(
        id=str(uuid.uuid4()), name=name, token_hash=tokens.digest(token), created_at=utcnow()
    )
    async with db.write() as session:
        session.add(row)
    return row.id, token


async def check_admin(db: Database, token: str | None) -> str:
    """The admin token's id; Unauthorized when missing, unknown or revoked."""
    if not token:
        raise Unauthorized(
            "missing admin token: send 'Authorization: Bearer <token>' "
            "(create one with: berth controlplane token create --name NAME)"
        )
    async with db.read() as session:
        row = await session.scalar(
            select(AdminToken).where(AdminToken.token_hash == tokens.digest(token))
        )
    if row is None:
        raise Unauthorized(
            "admin token not recognised; create one with: berth controlplane token create --name NAME"
        )
    if row.revoked_at is not None:
        raise Unauthorized(f"admin token {row.name!r} was revoked at {iso(row.revoked_at)}")
    return row.id


async def list_admin_tokens(db: Database) -> list[AdminToken]:
    async with db.read() as session:
        return list(await session.scalars(select(AdminToken).order_by(AdminToken.created_at)))


async def revoke_admin_token(db: Database, token_id_or_name: str) -> int:
    """Revoke by id or by name (all tokens of that name); returns how many were revoked."""
    async with db.write() as session:
        result = await session.execute(
            update(AdminToken)
            .where(
                (AdminToken.id == token_id_or_name) | (AdminToken.name == token_id_or_name),
                AdminToken.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
        return result.rowcount or 0  # type: ignore[attr-defined]


# install tokens ---------------------------------------------------------------------


async def create_install_token(db: Database, stack_id: str, ttl_s: float) -> NewInstallToken:
    token = tokens.new_secret(tokens.INSTALL_PREFIX)
    now = utcnow()
    row = InstallToken(
        id=str(uuid.uuid4()),
        stack_id=stack_id,
        token_hash=tokens.digest(token),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    async with db.write() as session:
        if await session.get(Stack, stack_id) is None:
            raise NotFound(f"no stack with id {stack_id!r}; GET /api/v1/stacks lists them")
        session.add(row)
    return NewInstallToken(row.id, token, row.expires_at)


async def register(db: Database, token: str, hostname: str) -> Registration:
    """Exchange a valid install token for an instance and its credential (401 with a reason)."""
    digest = tokens.digest(token)
    credential = tokens.new_secret(tokens.CREDENTIAL_PREFIX)
    now = utcnow()
    async with db.write() as session:
        row = await session.scalar(select(InstallToken).where(InstallToken.token_hash == digest))
        if row is None:
            raise Unauthorized(
                "install token not recognised; create one with POST /api/v1/stacks/{id}/install-tokens"
            )
        if row.revoked_at is not None:
            raise Unauthorized(
                f"install token was revoked at {iso(row.revoked_at)}; create a new one"
            )
        if row.used_at is not None:
            raise Unauthorized(
                f"install token was already used at {iso(row.used_at)}; tokens are one-time, create a new one"
            )
        if row.expires_at <= now:
            raise Unauthorized(f"install token expired at {iso(row.expires_at)}; create a new one")
        instance_id = str(uuid.uuid4())
        claimed = await session.execute(
            update(InstallToken)
            .where(InstallToken.id == row.id, InstallToken.used_at.is_(None))
            .values(used_at=now, instance_id=instance_id)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            raise Unauthorized(
                "install token was already used; tokens are one-time, create a new one"
            )
        session.add(
            Instance(
                id=instance_id,
                stack_id=row.stack_id,
                hostname=hostname,
                credential_hash=tokens.digest(credential),
                created_at=now,
                last_seen=now,
                services=[],
                security={},
                extra={},
            )
        )
        stack_id = row.stack_id
    return Registration(instance_id, credential, stack_id)


async def list_install_tokens(db: Database, stack_id: str) -> list[InstallToken]:
    async with db.read() as session:
        return list(
            await session.scalars(
                select(InstallToken)
                .where(InstallToken.stack_id == stack_id)
                .order_by(InstallToken.created_at)
            )
        )


async def revoke_install_token(db: Database, stack_id: str, token_id: str) -> None:
    async with db.write() as session:
        row = await session.get(InstallToken, token_id)
        if row is None or row.stack_id != stack_id:
            raise NotFound(f"stack {stack_id!r} has no install token with id {token_id!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()


# agents -----------------------------------------------------------------------------


async def revoke_instance(db: Database, instance_id: str) -> str:
    """Revoke an instance's credential; returns the id of its stack."""
    async with db.write() as session:
        row = await session.get(Instance, instance_id)
        if row is None:
            raise NotFound(f"no instance with id {instance_id!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return row.stack_id

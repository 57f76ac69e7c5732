"""Channels in the database: create, read, update, delete (names unique; 404 / 409 with
what to do).

An email channel's SMTP password is sealed with the control plane's secret key
(`controlplane.secrets.Keyring`, AES-GCM bound to the channel) before it is stored, opened
only by the notifier to log in, and re-sealed by `berth controlplane secrets rotate`
(`reseal`). A webhook's signing secret is stored as a stack's git webhook secret is: the
admin API shows it, because the receiver needs it."""

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from controlplane import secrets as sec
from controlplane.db import Database
from controlplane.errors import Conflict, NotFound, Unprocessable
from controlplane.models import NotificationChannel, Stack, utcnow
from controlplane.notify.channels import ChannelSpec


def password_context(channel_id: str) -> str:
    return f"berth-notify-password\0{channel_id}"


def _stored_secret(kind: str, channel_id: str, secret: str, keyring: sec.Keyring) -> str:
    if kind != "email":
        return secret
    return keyring.seal(secret.encode(), password_context(channel_id))


def open_secret(row: NotificationChannel, keyring: sec.Keyring) -> str | None:
    """The channel's secret in clear, for sending (raises SecretKeyUnavailable)."""
    if row.kind != "email" or not row.secret:
        return row.secret
    return keyring.open(row.secret, password_context(row.id)).decode()


async def reseal(session: object, keyring: sec.Keyring, primary: str) -> int:
    """Re-seal SMTP passwords not under the primary key (the key rotation's pass)."""
    count = 0
    for row in await session.scalars(  # type: ignore[attr-defined]
        select(NotificationChannel).where(NotificationChannel.kind == "email")
    ):
        if row.secret and sec.token_key_id(row.secret) != primary:
            context = password_context(row.id)
            row.secret = keyring.seal(keyring.open(row.secret, context), context)
            count += 1
    return count


async def list_channels(db: Database, stack_id: str | None = None) -> list[NotificationChannel]:
    stmt = select(NotificationChannel).order_by(NotificationChannel.name)
    if stack_id:
        stmt = stmt.where(NotificationChannel.stack_id == stack_id)
    async with db.read() as session:
        return list(await session.scalars(stmt))


async def get(db: Database, channel_id: str) -> NotificationChannel:
    async with db.read() as session:
        row = await session.get(NotificationChannel, channel_id)
        if row is None:
            row = await session.scalar(
                select(NotificationChannel).where(NotificationChannel.name == channel_id)
            )
    if row is None:
        raise NotFound(
            f"no notification channel {channel_id!r}; GET /api/v1/notifications/channels lists them"
        )
    return row


async def _check_stack(session: object, stack_id: str | None) -> None:
    if stack_id is not None and await session.get(Stack, stack_id) is None:  # type: ignore[attr-defined]
        raise Unprocessable(f"no stack with id {stack_id!r}", field="stack")


def _duplicate(name: str) -> Conflict:
    return Conflict(f"a channel named {name!r} already exists; choose another name",
                    field="name", code="duplicate_name")  # fmt: skip


async def create(db: Database, spec: ChannelSpec, keyring: sec.Keyring) -> NotificationChannel:
    now = utcnow()
    channel_id = str(uuid.uuid4())
    secret = _stored_secret(spec.kind, channel_id, spec.secret, keyring) if spec.secret else None
    row = NotificationChannel(
        id=channel_id, name=spec.name, kind=spec.kind, stack_id=spec.stack_id,
        events=spec.events, config=spec.config, secret=secret, enabled=spec.enabled,
        rate_per_hour=spec.rate_per_hour, group_window_s=spec.group_window_s,
        created_at=now, updated_at=now,
    )  # fmt: skip
    try:
        async with db.write() as session:
            await _check_stack(session, spec.stack_id)
            if await session.scalar(
                select(NotificationChannel.id).where(NotificationChannel.name == spec.name)
            ):
                raise _duplicate(spec.name)
            session.add(row)
    except IntegrityError as exc:
        raise _duplicate(spec.name) from exc
    return row


async def update(
    db: Database, channel_id: str, spec: ChannelSpec, keyring: sec.Keyring
) -> NotificationChannel:
    try:
        async with db.write() as session:
            row = await session.get(NotificationChannel, channel_id)
            if row is None:
                raise NotFound(f"no notification channel {channel_id!r}")
            await _check_stack(session, spec.stack_id)
            other = await session.scalar(
                select(NotificationChannel.id).where(NotificationChannel.name == spec.name)
            )
            if other is not None and other != row.id:
                raise _duplicate(spec.name)
            if spec.kind != row.kind and spec.secret is None and row.secret is not None:
                raise Unprocessable(
                    "a channel changing its kind needs its secret (or password) again",
                    field="password" if spec.kind == "email" else "secret",
                )
            row.name, row.kind, row.stack_id = spec.name, spec.kind, spec.stack_id
            row.events, row.config, row.enabled = spec.events, spec.config, spec.enabled
            row.rate_per_hour, row.group_window_s = spec.rate_per_hour, spec.group_window_s
            if spec.secret is not None:
                row.secret = _stored_secret(spec.kind, row.id, spec.secret, keyring)
            row.updated_at = utcnow()
    except IntegrityError as exc:
        raise _duplicate(spec.name) from exc
    return row


async def set_enabled(db: Database, channel_id: str, enabled: bool) -> NotificationChannel:
    async with db.write() as session:
        row = await session.get(NotificationChannel, channel_id)
        if row is None:
            raise NotFound(f"no notification channel {channel_id!r}")
        row.enabled, row.updated_at = enabled, utcnow()
    return row


async def delete(db: Database, channel_id: str) -> NotificationChannel:
    row = await get(db, channel_id)
    async with db.write() as session:
        found = await session.get(NotificationChannel, row.id)
        if found is not None:
            await session.delete(found)
    return row

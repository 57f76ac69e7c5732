"""Stacks: validate, resolve refs, publish a new desired-state version when content changes.

A save runs in three steps so no database lock is held while git talks to a remote:
1. `prepare`: strip the read-only keys a GET returned, validate with `agent.schema`,
   resolve every ref with `git ls-remote` (422 naming the field on any failure);
2. `publish`: in one write transaction, compare the content hash with the stored one and,
   only if it differs, store version+1 (stack row and history row);
3. after the commit, tell the `Listener` (the app's agent directory and long-poll watcher,
   through `AppContext.stack_changed`): `create`, `publish`, `refresh`, `rollback` and
   `delete` do this themselves, so no caller can forget to wake the agents.
A rejected body raises before step 2, so the stored stack is never touched.

Secret env values are sealed inside step 2's transaction (`controlplane.secrets`): an entry
given a value is sealed under the key file's current key, one without keeps the value of the
document it came from. Every view for people goes through `masked_document`.
"""

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from agent.schema import StackSpec, ValidationError, parse_stack
from agent.schema.document import build_document, content_hash, parse_document
from agent.schema.stack import check_repo_sources
from controlplane import gitrefs
from controlplane import secrets as sec
from controlplane.db import Database
from controlplane.errors import Conflict, NotFound, Unprocessable, from_validation
from controlplane.models import Stack, StackVersion, iso, utcnow

READ_ONLY_KEYS = ("id", "version", "hash", "created_at", "updated_at")


class Listener(Protocol):
    """Told of every committed change: the agent directory and the long-poll watcher of
    this process (`AppContext.stack_changed`). Other nodes see it on their next tick."""

    def stack_changed(self, stack_id: str, doc_hash: str | None) -> None:
        """`doc_hash` is the stack's new document hash, None once it is deleted."""


@dataclass(frozen=True)
class Prepared:
    spec: StackSpec
    commits: dict[str, str]
    # the stored document whose sealed values fill secrets given without a value;
    # None: the stack's current document (an edit keeps what it does not replace)
    secrets_from: dict[str, Any] | None = None


def editable_body(body: Any) -> Any:
    """`body` without the read-only keys a GET adds, so GET → edit → PUT round-trips."""
    if not isinstance(body, dict):
        return body
    out = {k: v for k, v in body.items() if k not in READ_ONLY_KEYS}
    services = out.get("services")
    if isinstance(services, list):
        out["services"] = [
            {k: v for k, v in s.items() if k != "commit"} if isinstance(s, dict) else s
            for s in services
        ]
    return out


def validate(body: Any, file_roots: Sequence[str] = ()) -> StackSpec:
    """The stack in `body`; its file:// repos only from `file_roots` (the operator's list)."""
    try:
        spec = parse_stack(editable_body(body))
        check_repo_sources(spec, file_roots)
        return spec
    except ValidationError as exc:
        raise from_validation(exc) from exc


async def resolve(spec: StackSpec) -> dict[str, str]:
    reqs = [gitrefs.RefRequest(s.name, s.repo, s.ref) for s in spec.services]
    try:
        return await gitrefs.resolve_all(reqs)
    except gitrefs.ResolveFailure as exc:
        raise Unprocessable(
            exc.detail, field=f"services[{exc.index}].{exc.key}", code="unresolvable_ref"
        ) from exc


async def prepare(body: Any, file_roots: Sequence[str] = ()) -> Prepared:
    spec = validate(body, file_roots)
    return Prepared(spec, await resolve(spec))


def stack_json(stack: Stack) -> dict[str, Any]:
    """The API view: the stack body plus read-only id, version, hash, timestamps and commits."""
    doc = stack.document
    return {
        "id": stack.id,
        "name": doc["name"],
        "version": stack.version,
        "hash": stack.doc_hash,
        "created_at": iso(stack.created_at),
        "updated_at": iso(stack.updated_at),
        "security_mode": doc["security_mode"],
        "poll_interval_s": doc["poll_interval_s"],
        "proxy": doc["proxy"],
        "dns": doc["dns"],
        "services": sec.masked_document(doc)["services"],
    }


def spec_of(document: dict[str, Any]) -> Prepared:
    """The spec and commits stored in a document (refresh and rollback start from it)."""
    state = parse_document(sec.without_sealed(document))
    return Prepared(state.stack, {s.name: s.commit for s in state.services}, document)


async def _name_taken(session: AsyncSession, name: str, stack_id: str | None) -> None:
    other = await session.scalar(select(Stack).where(Stack.name == name))
    if other is not None and other.id != stack_id:
        raise Conflict(
            f"a stack named {name!r} already exists (id {other.id}); "
            f"change it with PUT /api/v1/stacks/{other.id} or choose another name",
            field="name",
            code="duplicate_name",
        )


async def _lock_for_sealing(session: AsyncSession) -> None:
    """PostgreSQL: hold the lock a rotation pass waits for (`controlplane.rotation`) from
    before reading the key file, so no value sealed under a retiring key commits after the
    pass that re-seals. SQLite's BEGIN IMMEDIATE already serialises every write."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("LOCK TABLE stacks IN ROW EXCLUSIVE MODE"))


def _stack_key(stack: Stack, spec: StackSpec, keyring: sec.Keyring) -> bytes | None:
    """The stack's HMAC key, made (and stored sealed) when a secret value first needs it."""
    if not sec.needs_stack_key(spec):
        return None
    if stack.secret_key:
        return keyring.open(stack.secret_key, sec.stack_key_context(stack.id))
    material, stack.secret_key = sec.new_stack_key(keyring, stack.id)
    return material


def _sealed_document(
    stack: Stack, version: int, prepared: Prepared, keyring: sec.Keyring
) -> tuple[str, dict[str, Any]]:
    """(content hash, stored document) of `prepared` as the stack's `version`."""
    source = prepared.secrets_from if prepared.secrets_from is not None else stack.document
    sealed = sec.seal_spec(
        prepared.spec,
        stack.id,
        _stack_key(stack, prepared.spec, keyring),
        keyring,
        sec.stored_entries(source),
    )
    doc = build_document(stack.id, version, sealed.spec, prepared.commits)
    return content_hash(sealed.spec, prepared.commits), sec.attach_tokens(doc, sealed.tokens)


def proposed(
    current: Stack | None, prepared: Prepared, keyring: sec.Keyring
) -> tuple[str, dict[str, Any]]:
    """(content hash, document) that saving `prepared` over `current` (None: a new stack)
    would store, computed on a detached copy: nothing is written (a preview)."""
    copy = Stack(
        id=current.id if current else "", name=prepared.spec.name, document={},
        secret_key=current.secret_key if current else None,
    )  # fmt: skip
    source = current.document if current else {}
    version = current.version + 1 if current else 1
    return _sealed_document(copy, version, Prepared(prepared.spec, prepared.commits,
                                                    prepared.secrets_from or source), keyring)  # fmt: skip


async def create(
    db: Database, listener: Listener, prepared: Prepared, keyring: sec.Keyring | None = None
) -> Stack:
    now = utcnow()
    stack_id = str(uuid.uuid4())
    try:
        async with db.write() as session:
            await _lock_for_sealing(session)
            await _name_taken(session, prepared.spec.name, None)
            stack = Stack(
                id=stack_id,
                name=prepared.spec.name,
                version=1,
                document={},
                webhook_secret=secrets.token_hex(32),
                created_at=now,
                updated_at=now,
            )
            stack.content_hash, doc = _sealed_document(
                stack, 1, prepared, keyring or sec.Keyring(None)
            )
            stack.doc_hash, stack.document = doc["hash"], doc
            session.add(stack)
            session.add(_version_row(stack, "create"))
    except IntegrityError as exc:  # a concurrent create with the same name won the race
        raise Conflict(
            f"a stack named {prepared.spec.name!r} already exists",
            field="name",
            code="duplicate_name",
        ) from exc
    listener.stack_changed(stack.id, stack.doc_hash)
    return stack


async def publish(
    db: Database,
    listener: Listener,
    stack_id: str,
    prepared: Prepared,
    reason: str,
    keyring: sec.Keyring | None = None,
) -> tuple[Stack, bool]:
    """Store `prepared` as the stack's next version if its content differs; (stack, changed).

    `keyring` is needed only when a secret is given a new value."""
    try:
        async with db.write() as session:
            await _lock_for_sealing(session)
            stack = await session.scalar(
                select(Stack).where(Stack.id == stack_id).with_for_update()
            )
            if stack is None:
                raise NotFound(f"no stack with id {stack_id!r}; GET /api/v1/stacks lists them")
            version = stack.version + 1
            new_content, doc = _sealed_document(
                stack, version, prepared, keyring or sec.Keyring(None)
            )
            if new_content == stack.content_hash:
                return stack, False
            if prepared.spec.name != stack.name:
                await _name_taken(session, prepared.spec.name, stack_id)
            stack.name = prepared.spec.name
            stack.version = version
            stack.content_hash = new_content
            stack.doc_hash = doc["hash"]
            stack.document = doc
            stack.updated_at = utcnow()
            session.add(_version_row(stack, reason))
    except IntegrityError as exc:
        raise Conflict(
            "the stack changed concurrently (or its name is taken); read it again and retry",
            code="conflict",
        ) from exc
    listener.stack_changed(stack.id, stack.doc_hash)
    return stack, True


async def refresh(
    db: Database,
    listener: Listener,
    stack_id: str,
    reason: str = "refresh",
    file_roots: Sequence[str] = (),
) -> tuple[Stack, bool]:
    """Re-resolve every ref of the stored stack; a new version only if some commit moved.
    Its repos are checked again: the operator may have narrowed `file_roots` since.
    Secrets keep the sealed values of the document it started from."""
    current = spec_of((await get(db, stack_id)).document)
    try:
        check_repo_sources(current.spec, file_roots)
    except ValidationError as exc:
        raise from_validation(exc) from exc
    commits = await resolve(current.spec)
    return await publish(db, listener, stack_id, Prepared(current.spec, commits), reason)


async def rollback(
    db: Database, listener: Listener, stack_id: str, version: object
) -> tuple[Stack, bool]:
    """Store the content of the stack's `version` as a new version (if it differs from the
    current one); the API and the dashboard both restore through here."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise Unprocessable("must be a positive integer: the version to restore", field="version")
    old = spec_of(await version_document(db, stack_id, version))
    return await publish(db, listener, stack_id, old, "rollback")


def _version_row(stack: Stack, reason: str) -> StackVersion:
    return StackVersion(
        stack_id=stack.id,
        version=stack.version,
        content_hash=stack.content_hash,
        doc_hash=stack.doc_hash,
        document=stack.document,
        created_at=stack.updated_at,
        reason=reason,
    )


async def get(db: Database, stack_id: str) -> Stack:
    async with db.read() as session:
        stack = await session.get(Stack, stack_id)
    if stack is None:
        raise NotFound(f"no stack with id {stack_id!r}; GET /api/v1/stacks lists them")
    return stack


async def list_all(db: Database) -> list[Stack]:
    async with db.read() as session:
        return list(await session.scalars(select(Stack).order_by(Stack.name)))


async def delete(db: Database, listener: Listener, stack_id: str) -> None:
    """Delete the stack (its versions, instances and tokens go with it)."""
    async with db.write() as session:
        stack = await session.get(Stack, stack_id)
        if stack is None:
            raise NotFound(f"no stack with id {stack_id!r}; GET /api/v1/stacks lists them")
        await session.delete(stack)
    listener.stack_changed(stack_id, None)


async def versions(db: Database, stack_id: str) -> list[StackVersion]:
    await get(db, stack_id)
    async with db.read() as session:
        rows = await session.scalars(
            select(StackVersion)
            .where(StackVersion.stack_id == stack_id)
            .order_by(StackVersion.version.desc())
        )
        return list(rows)


async def version_document(db: Database, stack_id: str, version: int) -> dict[str, Any]:
    async with db.read() as session:
        row = await session.get(StackVersion, (stack_id, version))
        if row is None:
            latest = await session.scalar(
                select(func.max(StackVersion.version)).where(StackVersion.stack_id == stack_id)
            )
    if row is None:
        if latest is None:
            raise NotFound(f"no stack with id {stack_id!r}; GET /api/v1/stacks lists them")
        raise Unprocessable(
            f"stack has no version {version}; versions are 1 to {latest}", field="version"
        )
    return row.document

"""`berth controlplane secrets rotate`: re-seal every secret under a new key, while serving.

1. The key file gets a new first key, the old ones after it (atomic rename). Every server
   re-reads the file when it changes (`secrets.Keyring`): from now on they seal under the
   new key and still open the old tokens.
2. Passes re-seal every token (stack keys, current documents, every version) not under the
   new key, each pass one transaction holding the lock every sealing transaction takes
   first (`stacks._lock_for_sealing`; SQLite's BEGIN IMMEDIATE), until a pass finds none:
   a save that read the key file before step 1 has committed before that pass, and any
   later save seals under the new key. Agents notice nothing: digests, hence the document
   hashes, do not change.
3. The key file is rewritten with the new key alone; the old keys go to
   ``<key file>.previous`` for backups taken before the rotation. The control plane never
   reads that file: delete it when no such backup matters.
"""

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, text

from controlplane import secrets as sec
from controlplane.db import Database
from controlplane.models import Stack, StackVersion
from controlplane.notify import store as notify_store

MAX_PASSES = 20  # each pass waits for the saves in flight; more than two means trouble


@dataclass(frozen=True)
class Rotation:
    key_id: str
    resealed: int
    passes: int
    previous_file: Path


def previous_file(path: Path) -> Path:
    return path.with_name(path.name + ".previous")


async def rotate(db: Database, path: Path) -> Rotation:
    old = sec.parse_key_file(path.read_text(), str(path))
    new = sec.Key.new()
    sec.write_key_file(path, [new, *old])
    keyring = sec.Keyring(path)
    resealed, passes = 0, 0
    while True:
        passes += 1
        count = await _reseal_pass(db, keyring)
        resealed += count
        if count == 0:
            break
        if passes >= MAX_PASSES:
            raise RuntimeError(
                f"values sealed under the old key keep appearing after {passes} passes; "
                f"{path} holds both keys, run the rotation again"
            )
    sec.write_key_file(previous_file(path), old)
    sec.write_key_file(path, [new])
    return Rotation(new.id, resealed, passes, previous_file(path))


async def _reseal_pass(db: Database, keyring: sec.Keyring) -> int:
    """Re-seal, in one transaction, every token not under the primary key; how many."""
    primary = keyring.primary_id()
    count = 0
    async with db.write() as session:
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(text("LOCK TABLE stacks IN SHARE MODE"))
        for stack in await session.scalars(select(Stack)):
            if stack.secret_key and sec.token_key_id(stack.secret_key) != primary:
                context = sec.stack_key_context(stack.id)
                stack.secret_key = keyring.seal(keyring.open(stack.secret_key, context), context)
                count += 1
            if (doc := sec.reseal_document(stack.document, stack.id, keyring)) is not None:
                stack.document = doc
                count += 1
        for version in await session.scalars(select(StackVersion)):
            if (doc := sec.reseal_document(version.document, version.stack_id, keyring)) is not None:  # fmt: skip
                version.document = doc
                count += 1
        count += await notify_store.reseal(session, keyring, primary)  # SMTP passwords
    return count

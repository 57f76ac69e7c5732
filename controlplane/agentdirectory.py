"""The agents' hot path without a database round trip: who a credential is, and what each
stack's current document hash is.

An agent polls every few seconds with `If-None-Match`; answering 304 from memory is what
lets one process serve thousands of agents. `AgentDirectory` keeps
- `hashes`: stack id → current document hash, refreshed from the database by `refresh()`
  (one query per tick for all stacks, which also sees saves made by other nodes) and
  updated at once by saves in this process;
- credential digest → (instance, stack), preloaded at start and filled on first use of
  a credential registered later (or through another node). Only
  live credentials are cached; `refresh()` evicts instances revoked since the last ticks
  (revocations through another node take effect within one tick, through this node at
  once), and an entry whose stack is gone is refused and evicted.
- the current document per stack (serialised once, secret values opened for the stack's
  agents: `controlplane.secrets.agent_document`), so a new version fetched by every agent
  costs one database read, not one per agent.
"""

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from controlplane import tokens
from controlplane.db import Database
from controlplane.errors import Unauthorized
from controlplane.models import Instance, Stack, iso, utcnow
from controlplane.secrets import Keyring, agent_document

# how far back each tick looks for revocations: generous, to cover clock skew between nodes
REVOCATION_LOOKBACK = timedelta(seconds=30)


@dataclass(frozen=True)
class AgentIdentity:
    instance_id: str
    stack_id: str
    doc_hash: str


class AgentDirectory:
    def __init__(self, db: Database, keyring: Keyring | None = None) -> None:
        self._db = db
        self._keyring = keyring or Keyring(None)
        self.hashes: dict[str, str] = {}
        self._identities: dict[str, tuple[str, str]] = {}  # digest → (instance, stack)
        self._digests: dict[str, str] = {}  # instance → digest
        self._documents: dict[str, tuple[str, bytes]] = {}  # stack → (hash, JSON)
        self._reading: dict[str, asyncio.Future[tuple[str, bytes] | None]] = {}  # in flight
        self._last_refresh: datetime | None = None

    async def authenticate(self, credential: str | None) -> AgentIdentity:
        if not credential:
            raise Unauthorized("missing credential: send 'Authorization: Bearer <credential>'")
        digest = tokens.digest(credential)
        cached = self._identities.get(digest)
        if cached is not None:
            instance_id, stack_id = cached
            doc_hash = self.hashes.get(stack_id)
            if doc_hash is not None:
                return AgentIdentity(instance_id, stack_id, doc_hash)
            self._evict(instance_id)  # its stack is gone
        return await self._lookup(digest)

    async def _lookup(self, digest: str) -> AgentIdentity:
        async with self._db.read() as session:
            row = (
                await session.execute(
                    select(Instance.id, Instance.stack_id, Instance.revoked_at, Stack.doc_hash)
                    .join(Stack, Stack.id == Instance.stack_id)
                    .where(Instance.credential_hash == digest)
                )
            ).first()
        if row is None:
            raise Unauthorized(
                "credential not recognised (the instance or its stack may have been deleted); "
                "re-install with a new install token"
            )
        if row.revoked_at is not None:
            raise Unauthorized(
                f"this instance was revoked at {iso(row.revoked_at)}; re-install with a new install token"
            )
        self._identities[digest] = (row.id, row.stack_id)
        self._digests[row.id] = digest
        self.hashes.setdefault(row.stack_id, row.doc_hash)
        return AgentIdentity(row.id, row.stack_id, self.hashes[row.stack_id])

    async def preload(self) -> int:
        """Cache every live credential at start, so a restart does not send a whole fleet's
        first polls to the database at once. Returns how many were loaded."""
        async with self._db.read() as session:
            rows = await session.execute(
                select(Instance.id, Instance.stack_id, Instance.credential_hash).where(
                    Instance.revoked_at.is_(None)
                )
            )
            for row in rows:
                self._identities[row.credential_hash] = (row.id, row.stack_id)
                self._digests[row.id] = row.credential_hash
        return len(self._digests)

    def _evict(self, instance_id: str) -> None:
        digest = self._digests.pop(instance_id, None)
        if digest is not None:
            self._identities.pop(digest, None)

    def instance_revoked(self, instance_id: str) -> None:
        self._evict(instance_id)

    def stack_changed(self, stack_id: str, doc_hash: str | None) -> None:
        """A save (or delete, `doc_hash` None) committed in this process."""
        if doc_hash is None:
            self.hashes.pop(stack_id, None)
            self._documents.pop(stack_id, None)
        else:
            self.hashes[stack_id] = doc_hash

    async def document(self, stack_id: str) -> tuple[str, bytes] | None:
        """(hash, JSON bytes) of the stack's current document, read once per version: a
        change wakes every long poll of the stack at once, and they share one read."""
        cached = self._documents.get(stack_id)
        if cached is not None and cached[0] == self.hashes.get(stack_id):
            return cached
        reading = self._reading.get(stack_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read_document(stack_id))
            self._reading[stack_id] = reading
            reading.add_done_callback(lambda _f: self._reading.pop(stack_id, None))
        return await asyncio.shield(reading)

    async def _read_document(self, stack_id: str) -> tuple[str, bytes] | None:
        async with self._db.read() as session:
            row = (
                await session.execute(
                    select(Stack.doc_hash, Stack.document).where(Stack.id == stack_id)
                )
            ).first()
        if row is None:
            return None
        document = agent_document(row.document, stack_id, self._keyring)
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        self._documents[stack_id] = (row.doc_hash, body)
        self.hashes[stack_id] = row.doc_hash
        return row.doc_hash, body

    async def refresh(self) -> dict[str, str]:
        """Re-read every stack's hash and recent revocations; returns the hashes."""
        now = utcnow()
        since = (self._last_refresh or now) - REVOCATION_LOOKBACK
        async with self._db.read() as session:
            hashes = {
                r.id: r.doc_hash for r in await session.execute(select(Stack.id, Stack.doc_hash))
            }
            revoked = list(
                await session.scalars(select(Instance.id).where(Instance.revoked_at >= since))
            )
        self._last_refresh = now
        for instance_id in revoked:
            self._evict(instance_id)
        self.hashes = hashes
        for stack_id in [s for s in self._documents if s not in hashes]:
            del self._documents[stack_id]
        return hashes

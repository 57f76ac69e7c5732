"""Failed logins, kept in the database so that every control-plane process counts them.

With `serve --workers N` or several nodes behind a load balancer, a per-process counter
would give an attacker N times the attempts; the `login_failures` table is the one count
they all read and write (`throttle.ThrottlePolicy` decides, per key prefix). Expired rows
are pruned at most once a minute per process. A spray of made-up user names adds few rows:
the client address is a key too, and a blocked address is refused before anything is
counted.

`begin` checks and counts an attempt in one write transaction (rows locked `FOR UPDATE`;
SQLite's writes are serialised), before the password is checked; `success` gives the
count back. So N parallel guesses are N counted attempts, and only the allowed ones reach
the password check.
"""

import time
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from controlplane.dashboard.throttle import Record, ThrottlePolicy
from controlplane.db import Database
from controlplane.models import LoginFailure

PRUNE_EVERY_S = 60.0


class LoginThrottle:
    def __init__(
        self,
        db: Database,
        policy: ThrottlePolicy | None = None,
        clock: Callable[[], float] = time.time,
        policies: dict[str, ThrottlePolicy] | None = None,
    ) -> None:
        self.db = db
        self.policy = policy or ThrottlePolicy()
        self.policies = policies or {}  # by key prefix ("pair", "addr", "user")
        self.clock = clock
        self._pruned_at = 0.0

    def policy_for(self, key: str) -> ThrottlePolicy:
        return self.policies.get(key.partition(":")[0], self.policy)

    async def retry_after(self, *keys: str) -> float:
        """Seconds until an attempt on every one of `keys` is allowed (0: now)."""
        now = self.clock()
        async with self.db.read() as session:
            rows = (
                await session.scalars(select(LoginFailure).where(LoginFailure.key.in_(keys)))
            ).all()
        return max((self.policy_for(row.key).wait(_record(row), now) for row in rows), default=0.0)

    async def begin(self, *keys: str) -> float:
        """Atomically: the wait if any key is blocked (nothing counted), else 0 after
        counting this attempt as a failure on every key (`success` takes it back)."""
        try:
            wait = await self._count_failure(keys, only_if_allowed=True)
        except IntegrityError:  # another process inserted the same key first: again
            wait = await self._count_failure(keys, only_if_allowed=True)
        await self._prune()
        return wait

    async def success(self, *keys: str) -> None:
        """Clear the first key (the user at this address); refund the others' count."""
        first, rest = keys[0], keys[1:]
        async with self.db.write() as session:
            await session.execute(delete(LoginFailure).where(LoginFailure.key == first))
            for row in await session.scalars(
                select(LoginFailure)
                .where(LoginFailure.key.in_(rest))
                .order_by(LoginFailure.key)
                .with_for_update()
            ):
                rec = self.policy_for(row.key).refund(_record(row))
                row.failures, row.blocked_until = rec.failures, rec.blocked_until

    async def failure(self, *keys: str) -> None:
        try:
            await self._count_failure(keys)
        except IntegrityError:  # another process inserted the same key first: count again
            await self._count_failure(keys)
        await self._prune()

    async def _count_failure(
        self, keys: tuple[str, ...], *, only_if_allowed: bool = False
    ) -> float:
        now = self.clock()
        async with self.db.write() as session:
            rows = {
                row.key: row
                for row in await session.scalars(
                    # one lock order for every transaction: no deadlock between them
                    select(LoginFailure)
                    .where(LoginFailure.key.in_(keys))
                    .order_by(LoginFailure.key)
                    .with_for_update()
                )
            }
            if only_if_allowed:
                waits = [self.policy_for(k).wait(_record(r), now) for k, r in rows.items()]
                if max(waits, default=0.0) > 0:
                    return max(waits)
            for key in sorted(keys):
                row = rows.get(key)
                rec = self.policy_for(key).after_failure(_record(row) if row else None, now)
                if row is None:
                    session.add(
                        LoginFailure(
                            key=key,
                            failures=rec.failures,
                            first_at=rec.first_at,
                            blocked_until=rec.blocked_until,
                        )
                    )
                else:
                    row.failures = rec.failures
                    row.first_at = rec.first_at
                    row.blocked_until = rec.blocked_until
        return 0.0

    async def _prune(self) -> None:
        now = self.clock()
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        longest = max(p.window_s for p in (self.policy, *self.policies.values()))
        async with self.db.write() as session:
            await session.execute(
                delete(LoginFailure).where(
                    LoginFailure.first_at < now - longest,
                    LoginFailure.blocked_until <= now,
                )
            )


def _record(row: LoginFailure) -> Record:
    return Record(row.failures, row.first_at, row.blocked_until)

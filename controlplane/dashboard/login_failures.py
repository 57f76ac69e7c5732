"""Failed logins, kept in the database so that every control-plane process counts them.

With `serve --workers N` or several nodes behind a load balancer, a per-process counter
would give an attacker N times the attempts; the `login_failures` table is the one count
they all read and write (`throttle.ThrottlePolicy` decides). Expired rows are pruned at
most once a minute per process. A spray of made-up user names adds few rows: the client
address is a key too, and a blocked address is refused before anything is counted.
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
    ) -> None:
        self.db = db
        self.policy = policy or ThrottlePolicy()
        self.clock = clock
        self._pruned_at = 0.0

    async def retry_after(self, *keys: str) -> float:
        """Seconds until an attempt on every one of `keys` is allowed (0: now)."""
        now = self.clock()
        async with self.db.read() as session:
            rows = (
                await session.scalars(select(LoginFailure).where(LoginFailure.key.in_(keys)))
            ).all()
        return max((self.policy.wait(_record(row), now) for row in rows), default=0.0)

    async def failure(self, *keys: str) -> None:
        try:
            await self._count_failure(keys)
        except IntegrityError:  # another process inserted the same key first: count again
            await self._count_failure(keys)
        await self._prune()

    async def success(self, *keys: str) -> None:
        async with self.db.write() as session:
            await session.execute(delete(LoginFailure).where(LoginFailure.key.in_(keys)))

    async def _count_failure(self, keys: tuple[str, ...]) -> None:
        now = self.clock()
        async with self.db.write() as session:
            rows = {
                row.key: row
                for row in await session.scalars(
                    select(LoginFailure).where(LoginFailure.key.in_(keys)).with_for_update()
                )
            }
            for key in keys:
                row = rows.get(key)
                rec = self.policy.after_failure(_record(row) if row else None, now)
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

    async def _prune(self) -> None:
        now = self.clock()
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        async with self.db.write() as session:
            await session.execute(
                delete(LoginFailure).where(
                    LoginFailure.first_at < self.policy.forgettable_before(now),
                    LoginFailure.blocked_until <= now,
                )
            )


def _record(row: LoginFailure) -> Record:
    return Record(row.failures, row.first_at, row.blocked_until)

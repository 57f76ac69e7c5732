"""Git webhook deliveries: each acted on once, and at most `limit` per stack per minute.

A signed delivery can be captured and replayed. So `admit` remembers, per stack, the
delivery id the git host sends (`X-GitHub-Delivery`, `X-Gitea-Delivery`,
`X-Gitlab-Event-UUID`): a delivery whose id was already seen within `DEDUP_TTL_S` is a
duplicate and does nothing. The signature covers only the body, not that header, and two
honest pushes may send the same body (a hand-made hook posting a fixed payload), so the
body is not deduplicated: a replay under a made-up id, or with none, is bounded by the
rate limit instead. Every admitted delivery is a row; those of the last minute are the
stack's rate: beyond `limit`, 429 with Retry-After. Everything is in the database, so
every control-plane process agrees.
"""

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from controlplane.db import Database
from controlplane.errors import TooManyRequests
from controlplane.limits import DEFAULT_WEBHOOKS_PER_MINUTE
from controlplane.models import WebhookDelivery

DEDUP_TTL_S = 7 * 24 * 3600.0  # git hosts redeliver by hand for days; replays are no use
WINDOW_S = 60.0
DELIVERY_HEADERS = ("X-GitHub-Delivery", "X-Gitea-Delivery", "X-Gitlab-Event-UUID")


@dataclass(frozen=True)
class Admission:
    duplicate: bool


def delivery_key(delivery_id: str | None) -> str:
    """The row key of one delivery: its id's digest, or a fresh one when it has no id."""
    if delivery_id and delivery_id.strip():
        return "id:" + hashlib.sha256(delivery_id.strip().encode()).hexdigest()
    return "anon:" + uuid.uuid4().hex


class DeliveryGuard:
    def __init__(
        self,
        db: Database,
        limit: int = DEFAULT_WEBHOOKS_PER_MINUTE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.limit = limit
        self.clock = clock
        self._pruned_at = 0.0

    async def admit(self, stack_id: str, delivery_id: str | None) -> Admission:
        """Remember this delivery of `stack_id`: a duplicate, or admitted; raises
        TooManyRequests over the stack's limit."""
        key = delivery_key(delivery_id)
        now = self.clock()
        try:
            async with self.db.write() as session:
                seen = await session.scalar(
                    select(func.count())
                    .select_from(WebhookDelivery)
                    .where(
                        WebhookDelivery.stack_id == stack_id,
                        WebhookDelivery.key == key,
                        WebhookDelivery.received_at > now - DEDUP_TTL_S,
                    )
                )
                if seen:
                    return Admission(duplicate=True)
                recent = list(
                    await session.scalars(
                        select(WebhookDelivery.received_at)
                        .where(
                            WebhookDelivery.stack_id == stack_id,
                            WebhookDelivery.received_at > now - WINDOW_S,
                        )
                        .order_by(WebhookDelivery.received_at)
                    )
                )
                if len(recent) >= self.limit:
                    wait = recent[len(recent) - self.limit] + WINDOW_S - now
                    raise TooManyRequests(
                        f"more than {self.limit} webhook deliveries for this stack in a "
                        f"minute; retry in {int(wait) + 1} s",
                        max(wait, 1.0),
                    )
                await session.execute(
                    delete(WebhookDelivery).where(
                        WebhookDelivery.stack_id == stack_id, WebhookDelivery.key == key
                    )
                )  # an expired row of the same id
                session.add(WebhookDelivery(stack_id=stack_id, key=key, received_at=now))
        except IntegrityError:  # the same delivery, admitted by a concurrent request
            return Admission(duplicate=True)
        await self._prune(now)
        return Admission(duplicate=False)

    async def _prune(self, now: float) -> None:
        if now - self._pruned_at < WINDOW_S:
            return
        self._pruned_at = now
        async with self.db.write() as session:
            await session.execute(
                delete(WebhookDelivery).where(WebhookDelivery.received_at < now - DEDUP_TTL_S)
            )
            await session.execute(  # rows without an id only count toward the rate
                delete(WebhookDelivery).where(
                    WebhookDelivery.key.like("anon:%"),
                    WebhookDelivery.received_at < now - WINDOW_S,
                )
            )

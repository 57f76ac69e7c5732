"""Send one batch the control plane may refuse, and classify its answer: the one way the
reconciler ships metric points and log chunks (events have their own acknowledgement).
"""

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import TypeVar

from agent.reconciler.cpclient import Rejected, Throttled, Unreachable

log = logging.getLogger(__name__)

T = TypeVar("T")


class Shipped(enum.Enum):
    SENT = "sent"
    NOT_SENT = "not sent"  # refused, throttled (waited already) or unreachable: try later
    UNSUPPORTED = "unsupported"  # an older control plane without this endpoint: stop


async def ship(send: Callable[[T], object], batch: T, what: str) -> Shipped:
    """`send(batch)` on a worker thread. A 429 waits its Retry-After before returning."""
    try:
        await asyncio.to_thread(send, batch)
    except Rejected as exc:
        if exc.status == 404:
            log.info("this control plane takes no %s (older version); not shipping them", what)
            return Shipped.UNSUPPORTED
        log.warning("%s refused: %s", what, exc)
    except Throttled as exc:
        log.warning("%s throttled: %s", what, exc)
        await asyncio.sleep(exc.retry_after_s)
    except Unreachable:
        pass
    else:
        return Shipped.SENT
    return Shipped.NOT_SENT

"""Long-poll wakeups for agents waiting on `GET /api/v1/agent/desired-state?wait=N`.

A waiter registers (stack id, the hash it already has) and sleeps on a future. Two things
wake it: `notify(stack_id)` from a save in this process (immediate), and one background
task per process that every `interval_s` calls `refresh()` (which reads the current hash
of every stack in one query, see `directory.AgentDirectory.refresh`) and wakes the waiters
whose hash is out of date. The second path is what makes a save on another control-plane
node (same database) reach agents waiting here within `interval_s`, at a cost of one
query per interval, not per waiter. A woken waiter re-reads the stack before answering, so a spurious wakeup is
harmless, and a change that lands between its read and its registration is caught by the
next poll.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Refresh = Callable[[], Awaitable[dict[str, str]]]
DEFAULT_INTERVAL_S = 0.5


class StackWatcher:
    def __init__(self, refresh: Refresh, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self._refresh = refresh
        self._interval_s = interval_s
        self._waiters: dict[str, dict[asyncio.Future[None], str]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll_forever(), name="berth-longpoll-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for futures in self._waiters.values():
            for fut in futures:
                if not fut.done():
                    fut.set_result(None)
        self._waiters.clear()

    @property
    def waiting(self) -> int:
        return sum(len(f) for f in self._waiters.values())

    def notify(self, stack_id: str) -> None:
        """Wake every waiter of `stack_id` in this process (after a committed change)."""
        for fut in self._waiters.get(stack_id, {}):
            if not fut.done():
                fut.set_result(None)

    async def wait(self, stack_id: str, known_hash: str, timeout_s: float) -> bool:
        """Sleep until the stack may have changed (True) or `timeout_s` passes (False)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(stack_id, {})[fut] = known_hash
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(stack_id)
            if waiters is not None:
                waiters.pop(fut, None)
                if not waiters:
                    del self._waiters[stack_id]

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                current = await self._refresh()
            except Exception:  # a database hiccup must not kill the watcher; retry next tick
                log.exception("long-poll watcher could not read stack hashes")
                continue
            for stack_id, futures in list(self._waiters.items()):
                now = current.get(stack_id)  # None: the stack was deleted
                for fut, known in list(futures.items()):
                    if now != known and not fut.done():
                        fut.set_result(None)

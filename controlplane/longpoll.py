"""Long-poll wakeups for agents waiting on `GET /api/v1/agent/desired-state?wait=N`.

A waiter registers (stack id, the hash it already has) and sleeps on a future. Two things
wake it: `notify(stack_id)` from a save in this process (immediate), and one background
task per process that every `interval_s` calls `refresh()` (which reads the current hash
of every stack in one query, see `directory.AgentDirectory.refresh`) and wakes the waiters
of the stacks whose hash moved since the previous tick. The second path is what makes a
save on another control-plane node (same database) reach agents waiting here within
`interval_s`, at a cost of one query per interval, not per waiter. A woken waiter re-reads
the stack before answering, so a spurious wakeup is harmless; a waiter that registers with
a hash the watcher already knows to be old returns at once.

Fleet-sized mechanics: a tick touches only the stacks that changed (10,000 held polls cost
nothing per tick), and a change first has `prepare(stack_id)` read the new document once,
then wakes its waiters `WAKE_SLICE` at a time, one slice per event-loop iteration, so the
other requests keep being served while 10,000 agents are answered. `close()` (on SIGTERM, before the server's graceful stop) answers every held
poll at once, so a restart neither waits for long polls nor cancels them.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from controlplane.background import Background

log = logging.getLogger(__name__)

Refresh = Callable[[], Awaitable[dict[str, str]]]
Prepare = Callable[[str], Awaitable[object]]
DEFAULT_INTERVAL_S = 0.5
WAKE_SLICE = 256


class StackWatcher:
    def __init__(
        self,
        refresh: Refresh,
        interval_s: float = DEFAULT_INTERVAL_S,
        prepare: Prepare | None = None,
    ) -> None:
        self._refresh = refresh
        self._prepare = prepare
        self._preparing: set[asyncio.Task[None]] = set()
        self._interval_s = interval_s
        self._waiters: dict[str, dict[asyncio.Future[bool], str]] = {}
        self._current: dict[str, str] | None = None  # the hashes of the last tick
        self._background = Background("berth-longpoll-watcher", self._poll_forever)
        self._closing = False

    def start(self) -> None:
        self._background.start()

    def close(self) -> None:
        """Answer every held poll now and hold no new ones (the server is stopping)."""
        self._closing = True
        for futures in self._waiters.values():
            _wake(list(futures))

    async def stop(self) -> None:
        for task in list(self._preparing):
            task.cancel()
        await self._background.stop()
        self.close()
        self._waiters.clear()

    @property
    def waiting(self) -> int:
        return sum(len(f) for f in self._waiters.values())

    def notify(self, stack_id: str) -> None:
        """Wake every waiter of `stack_id` in this process (after a committed change)."""
        if self._prepare is None or stack_id not in self._waiters:
            _wake(list(self._waiters.get(stack_id, ())))
            return
        task = asyncio.create_task(self._prepare_then_wake(stack_id), name="berth-longpoll-notify")
        self._preparing.add(task)
        task.add_done_callback(self._preparing.discard)

    async def _prepare_then_wake(
        self, stack_id: str, known: str | None = None, check: bool = False
    ) -> None:
        """Read what the woken polls will answer (the new document) first: otherwise they all
        wait for that one read and then resume in the same loop iteration, not in slices."""
        if self._prepare is not None:
            try:
                await self._prepare(stack_id)
            except Exception:  # they will read it themselves
                log.exception("could not read stack %s before waking its long polls", stack_id)
        futures = self._waiters.get(stack_id, {})
        _wake([fut for fut, have in futures.items() if not check or have != known])

    async def wait(self, stack_id: str, known_hash: str, timeout_s: float) -> bool:
        """Sleep until the stack may have changed (True) or `timeout_s` passes or the
        server is stopping (False)."""
        if self._closing:
            return False
        if self._current is not None and self._current.get(stack_id) != known_hash:
            return True  # already out of date at the last tick
        # a bare future and a timer, not `asyncio.wait_for`: in Python 3.11 that adds a
        # second future and a callback hop to each of the 10,000 wakeups of a change
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        timer = loop.call_later(timeout_s, _resolve, fut, False)
        self._waiters.setdefault(stack_id, {})[fut] = known_hash
        try:
            return await fut and not self._closing
        finally:
            timer.cancel()
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
            previous, self._current = self._current, current
            for stack_id, futures in list(self._waiters.items()):
                now = current.get(stack_id)  # None: the stack was deleted
                if previous is not None and previous.get(stack_id) == now:
                    continue  # unchanged since the last tick: its waiters are current
                if any(known != now for known in futures.values()):
                    await self._prepare_then_wake(stack_id, now, check=True)


def _resolve(fut: asyncio.Future[bool], woken: bool) -> None:
    if not fut.done():
        fut.set_result(woken)


def _wake(futures: Iterable[asyncio.Future[bool]]) -> None:
    """Resolve `futures`, a slice per loop iteration (each woken poll then answers)."""
    pending = list(futures)
    head, rest = pending[:WAKE_SLICE], pending[WAKE_SLICE:]
    for fut in head:
        _resolve(fut, True)
    if rest:
        asyncio.get_running_loop().call_soon(_wake, rest)


async def hold(
    watcher: StackWatcher,
    stack_id: str,
    if_none_match: str | None,
    current: str,
    wait_s: float,
    identify: Callable[[], Awaitable[str]],
) -> str:
    """A long poll: while the agent's ETag is current, wait up to `wait_s` for a change;
    returns the hash to answer with. `identify` re-reads the agent's current hash (and
    raises if its credential was revoked meanwhile)."""
    from controlplane.httpjson import etag_matches  # not at import: settings import this module

    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while etag_matches(if_none_match, current) and (left := deadline - loop.time()) > 0:
        if not await watcher.wait(stack_id, current, left):
            break  # timed out, or the server is stopping
        current = await identify()
    return current

"""Group commit: what many agents send, written in one transaction per batch.

`submit(key, row)` queues a row and waits until the transaction that holds it has
committed (the agent's 200 still means "stored"); a row queued again under the same key
before it is written replaces the first (heartbeats are full snapshots: only the latest
counts). One background writer takes up to `max_batch` rows, writes them with the
`write` function given (one transaction) and starts again. Before taking a batch it
lingers until the oldest queued row is `window_s` old (unless a full batch is queued): a
transaction costs a few milliseconds of CPU whatever its size and a row a small fraction
of that, so at fleet rates collecting for a few tens of milliseconds cuts the writer's
CPU about tenfold, for that much added latency on calls nobody waits on. Under load
batches grow instead of transactions queueing up behind SQLite's single writer.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from itertools import islice
from typing import Any

from controlplane.background import Background

log = logging.getLogger(__name__)

Write = Callable[[list[dict[str, Any]]], Awaitable[None]]


class GroupCommit:
    def __init__(self, name: str, write: Write, window_s: float, max_batch: int) -> None:
        self.name = name
        self._write = write
        self._window_s = window_s
        self._max_batch = max_batch
        self._pending: dict[Hashable, dict[str, Any]] = {}
        # per key: the calls waiting for its queued row's commit
        self._waiters: dict[Hashable, list[asyncio.Future[None]]] = {}
        self._wake = asyncio.Event()
        self._oldest: float | None = None  # loop time the oldest queued row arrived
        self._background = Background(f"berth-{name}-writer", self._run)
        self.batches = 0  # written since start, for /metrics (rows / batches: batch size)
        self.rows_written = 0

    def start(self) -> None:
        self._background.start()

    async def stop(self) -> None:
        await self._background.stop()
        for futs in self._waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_exception(RuntimeError("control plane shutting down"))

    async def submit(self, key: Hashable, row: dict[str, Any]) -> None:
        """Queue `row` (replacing a queued row of the same key); returns once committed."""
        self._pending[key] = row
        loop = asyncio.get_running_loop()
        if self._oldest is None:
            self._oldest = loop.time()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.setdefault(key, []).append(fut)
        self._wake.set()
        await fut

    def _take(self) -> tuple[list[dict[str, Any]], list[asyncio.Future[None]]]:
        """The next batch's rows and the calls waiting for them (the rest wait for theirs)."""
        keys = list(islice(self._pending, self._max_batch))  # (not a copy of every key)
        rows = [self._pending.pop(key) for key in keys]
        waiters = [fut for key in keys for fut in self._waiters.pop(key, [])]
        return rows, waiters

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            # linger until the oldest queued row is `window_s` old: rows that queued
            # while the previous batch was being written have waited already
            linger = self._window_s - (loop.time() - (self._oldest or loop.time()))
            if len(self._pending) < self._max_batch and linger > 0:
                await asyncio.sleep(linger)
            self._wake.clear()
            rows, waiters = self._take()
            self._oldest = loop.time() if self._pending else None
            if self._pending:
                self._wake.set()  # more than one batch queued: go round again
            try:
                await self._write(rows)
            except Exception as exc:  # answer every waiting agent; they retry later
                log.exception("could not store %d %s rows", len(rows), self.name)
                _settle(waiters, exc)
                continue
            self.batches += 1
            self.rows_written += len(rows)
            _settle(waiters, None)


def _settle(waiters: list[asyncio.Future[None]], exc: Exception | None) -> None:
    for fut in waiters:
        if not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)

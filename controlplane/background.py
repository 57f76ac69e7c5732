"""One lifecycle for the control plane's background loops (the long-poll watcher, the
group-commit writers): started with the server, cancelled and awaited when it stops."""

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class Background:
    """A named task running `loop()` between `start()` and `stop()`."""

    def __init__(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self._loop = loop
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait until it has finished (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

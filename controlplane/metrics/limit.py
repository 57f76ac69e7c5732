"""A bound on how often one agent may post metrics (pure, per process).

Agents ship every 30 s; `BatchLimit` lets an instance post at most `per_minute` batches
in any sliding minute (default 12: room for retries and restarts), so a broken or
hostile agent cannot turn the metrics table into its write queue. Per process: with N
workers an instance gets at most N times as many, still bounded.
"""

import time
from collections import deque
from collections.abc import Callable

DEFAULT_PER_MINUTE = 12
MAX_TRACKED = 100_000  # instances remembered; the oldest are forgotten beyond this


class BatchLimit:
    def __init__(
        self, per_minute: int = DEFAULT_PER_MINUTE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}

    def admit(self, instance_id: str) -> float:
        """0 if the batch may be stored now, else the seconds to wait."""
        now = self.clock()
        times = self._seen.pop(instance_id, None) or deque()
        while times and times[0] <= now - 60:
            times.popleft()
        self._seen[instance_id] = times  # (re-inserted: the dict stays oldest-first)
        if len(times) >= self.per_minute:
            return max(0.1, times[0] + 60 - now)
        times.append(now)
        if len(self._seen) > MAX_TRACKED:
            del self._seen[next(iter(self._seen))]
        return 0.0

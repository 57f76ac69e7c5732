"""Where the event loop stops: an opt-in trace of blocked intervals and GC pauses.

`serve` starts it when `BERTH_STALL_TRACE_MS` is set (a threshold in milliseconds). A task
sleeps `TICK_S` again and again and measures how late it wakes: a late wake-up is a
blocked interval of the loop (a callback that ran that long, or the process starved of
CPU). `gc.callbacks` time every collection. Every `REPORT_S` one log line sums up the
interval: how many stalls above the threshold and the longest, how many collections per
generation and the longest pause. Off by default: the tick costs a little CPU.
"""

import asyncio
import gc
import logging
import os
import time
from typing import Any

log = logging.getLogger("controlplane.stalls")

TICK_S = 0.005
REPORT_S = 10.0


class StallTrace:
    def __init__(self, threshold_ms: float) -> None:
        self.threshold_ms = threshold_ms
        self._task: asyncio.Task[None] | None = None
        self._gc_started = 0.0
        self._reset()

    def _reset(self) -> None:
        self.stalls = 0
        self.worst_ms = 0.0
        self.gc_counts = [0, 0, 0]
        self.gc_worst_ms = [0.0, 0.0, 0.0]

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        gen = info["generation"]
        self.gc_counts[gen] += 1
        pause = (time.perf_counter() - self._gc_started) * 1000
        self.gc_worst_ms[gen] = max(self.gc_worst_ms[gen], pause)

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._run(), name="berth-stall-trace")

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        report_at = time.monotonic() + REPORT_S
        while True:
            before = time.monotonic()
            await asyncio.sleep(TICK_S)
            late_ms = (time.monotonic() - before - TICK_S) * 1000
            if late_ms > self.threshold_ms:
                self.stalls += 1
            self.worst_ms = max(self.worst_ms, late_ms)
            if time.monotonic() >= report_at:
                report_at += REPORT_S
                log.info(
                    "stall trace: %d loop stalls > %g ms (longest %.1f ms); gc collections "
                    "gen0/1/2 %d/%d/%d, longest pause %.1f/%.1f/%.1f ms",
                    self.stalls, self.threshold_ms, self.worst_ms, *self.gc_counts,
                    *self.gc_worst_ms,
                )  # fmt: skip
                self._reset()


def from_environment() -> StallTrace | None:
    raw = os.environ.get("BERTH_STALL_TRACE_MS")
    return StallTrace(float(raw)) if raw else None

"""The reconciler's time, injected (as the firewall engine's clock is) so that tests run
a worker's scenarios (crash, backoff, probe, restart) on a fake clock instead of sleeping.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Clock:
    monotonic: Callable[[], float] = time.monotonic  # timers: backoff, probes, deadlines
    wall: Callable[[], float] = time.time  # when a process started (kept across restarts)


SYSTEM_CLOCK = Clock()

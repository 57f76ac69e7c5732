"""The peak resident memory of a build's process tree, measured two ways; the larger wins.

* `wait4()`'s `ru_maxrss` (`wait`): the kernel's exact high-water mark of the largest
  single process among the build's shell and every descendant that its parent waited
  for (a reaped child's maximum is folded into its parent's). It catches a spike no
  sampler sees, but it is a maximum over processes, not a sum: four compilers running
  side by side count as the largest one.
* Sampling the build's process group from /proc (`GroupPeak`): the sum of every
  live process of the group at that moment, so parallel jobs add up and a helper that
  outlives its parent still counts; but a spike shorter than `SAMPLE_EVERY_S` is missed.

Either alone under-reports a common build (`make -j4`; a short-lived linker spike), and
neither can over-report, so the larger of the two is the better figure.
"""

import asyncio
import os
import subprocess

from agent.metrics.procfs import PAGE_SIZE, read_all_stats

SAMPLE_EVERY_S = 0.5


def wait(proc: subprocess.Popen[bytes]) -> tuple[int | None, int]:
    """Block until `proc` exits (call it in a thread): (exit code as Popen gives it, its
    tree's `ru_maxrss` in bytes). (returncode, 0) when someone else reaped it first."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:
        return proc.returncode, 0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024  # Linux reports KiB


def group_rss(pgrp: int) -> int:
    """Resident bytes of every live process of the process group `pgrp`."""
    return sum(s.rss_pages for s in read_all_stats() if s.pgrp == pgrp) * PAGE_SIZE


class GroupPeak:
    """The largest `group_rss` seen while `run` runs (until cancelled)."""

    def __init__(self, pgrp: int, every_s: float = SAMPLE_EVERY_S) -> None:
        self.pgrp, self.every_s = pgrp, every_s
        self.peak = 0

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, await asyncio.to_thread(group_rss, self.pgrp))
            await asyncio.sleep(self.every_s)

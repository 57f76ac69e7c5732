"""Builds' wall time and peak memory (issue 19): real build processes, measured by
`process.run_build` through wait4()'s ru_maxrss and /proc samples of the build's group."""

import asyncio
import os
import sys
from pathlib import Path

from agent.reconciler.process import BuildResult, RunAs, run_build

MB = 1_000_000
# writes (so it is resident) `n` MB, holds them `hold` seconds, then exits
HOG = f"{sys.executable} -c 'import time, sys; b = b\"x\" * (int(sys.argv[1]) * {MB}); time.sleep(float(sys.argv[2]))'"


def build(command: str, tmp_path: Path, timeout_s: float = 60) -> BuildResult:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return asyncio.run(
        run_build(command, tmp_path, env, tmp_path / "build.log", RunAs(), timeout_s)
    )


def test_a_short_spike_is_caught_by_wait4(tmp_path: Path) -> None:
    # 150 MB for a moment, inside a child of the shell: sampling every 0.5 s would miss it
    done = build(f"{HOG} 150 0; true", tmp_path)
    assert done.ok and done.reason == "ok"
    assert done.peak_rss_bytes >= 150 * MB
    assert done.peak_rss_bytes < 400 * MB  # one such process, not a sum over time


def test_parallel_jobs_add_up(tmp_path: Path) -> None:
    # three 80 MB jobs side by side: the tree holds 240 MB at once, no single process does
    done = build(f"{HOG} 80 2.5 & {HOG} 80 2.5 & {HOG} 80 2.5 & wait", tmp_path)
    assert done.ok
    assert done.peak_rss_bytes >= 3 * 80 * MB
    assert done.duration_s >= 2.5


def test_a_failed_or_timed_out_build_is_measured_too(tmp_path: Path) -> None:
    failed = build(f"{HOG} 60 0; exit 3", tmp_path)
    assert (failed.ok, failed.reason) == (False, "build exited with code 3")
    assert failed.peak_rss_bytes >= 60 * MB
    slow = build(f"{HOG} 70 30", tmp_path, timeout_s=2)
    assert (slow.ok, slow.reason) == (False, "build timed out after 2 s")
    assert 2 <= slow.duration_s < 20 and slow.peak_rss_bytes >= 70 * MB

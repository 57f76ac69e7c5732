"""Stopping what a benchmark started, by PID: SIGTERM, then SIGKILL if it lingers."""

import subprocess
from typing import Any


def terminate(proc: "subprocess.Popen[Any]", timeout_s: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

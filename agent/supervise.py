"""What the two supervisors of child processes share: `berth agent run-all` (its
components) and the control plane's `serve --workers` (its workers). Both stop on SIGINT
or SIGTERM and stop their children the same way.
"""

import logging
import signal
import subprocess
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)


class StopSignal:
    """Set once SIGINT or SIGTERM arrives (handlers installed on construction, so call it
    in the main thread); the supervisor's loop checks `received` and winds down."""

    def __init__(self) -> None:
        self.received = False
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self.received = True


def stop_processes(procs: Sequence[tuple[str, subprocess.Popen[bytes]]], timeout_s: float) -> None:
    """SIGTERM every running one of (name, process) in the given order, then wait for all
    within one shared `timeout_s`; kill (and reap) what is still running then."""
    for _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for name, proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", name)
            proc.kill()
            proc.wait()

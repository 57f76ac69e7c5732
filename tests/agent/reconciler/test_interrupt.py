"""Ctrl-C in a terminal reaches every child of `run-all` (the demo's process group): the
reconciler stops on SIGINT as it does on SIGTERM, quietly, with no traceback."""

import signal
import subprocess

from tests.support.berth import BERTH
from tests.support.dirs import world_dir


def test_sigint_stops_the_reconciler_without_a_traceback() -> None:
    with world_dir("berth-sigint-") as d:
        argv = [*BERTH, "agent", "reconciler", "--state-dir", str(d / "state"),
                "--run-dir", str(d / "run")]  # fmt: skip
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        # wait for it to be running (its first log line), then interrupt it
        first = proc.stderr.readline()
        assert "no --control-plane given" in first, first
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=30)
        assert "Traceback" not in rest, rest
        assert proc.returncode == 130, (proc.returncode, rest)

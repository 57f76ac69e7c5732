"""The auto-revert timer of an in-process apply (no helper running to keep time).

`berth firewall apply --confirm-timeout N` without a helper starts this as a detached
process (its own session, so it survives the operator's SSH connection dropping — the
very case it exists for). It sleeps until the deadline, then reverts the apply if that
same apply is still unconfirmed; a confirm, a revert or a newer apply makes it a no-op.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from agent.firewall.engine import Firewall, FirewallConfig
from agent.logs import setup_logging


def spawn_timer(state_dir: Path, pending_id: str, until: float) -> int:
    """Start the detached timer; return its PID."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.firewall.autorevert", "--state-dir", str(state_dir),
         "--id", pending_id, "--until", repr(until)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )  # fmt: skip
    return proc.pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.firewall.autorevert")
    parser.add_argument("--state-dir", type=Path, required=True, help="the firewall state dir")
    parser.add_argument("--id", required=True, help="the pending apply to revert")
    parser.add_argument("--until", type=float, required=True, help="unix time of the deadline")
    args = parser.parse_args(argv)
    setup_logging("firewall-timer")
    delay = args.until - time.time()
    if delay > 0:
        time.sleep(delay)
    engine = Firewall(FirewallConfig(state_dir=args.state_dir))
    # the deadline is stored in the state; a clock a hair early must not skip the revert
    while engine.expire(only_id=args.id) is None:
        pending = engine.store.load().pending
        if pending is None or pending.id != args.id or pending.until is None:
            return 0  # confirmed, reverted or replaced meanwhile
        time.sleep(max(0.05, pending.until - time.time()))
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())

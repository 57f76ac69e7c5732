"""The agent's half of a rolling upgrade: the control plane answers a heartbeat with
`{"upgrade": {"version": X}}` when it is this server's turn; the reconciler (unprivileged)
cannot install anything, so it leaves a request file in its state directory, which
`berth-upgrade.path` watches, and `berth-upgrade.service` (root) runs `berth agent upgrade
--from-request` on it. Only the reconciler's user can write that directory; the upgrade
installs only what the server's own control plane serves at /dist/.
"""

import json
from pathlib import Path
from typing import Any

from agent import version as versions
from agent.durablefiles import write_atomic
from agent.statelayout import StateLayout


def wanted(reply: Any, running: str, last: Any) -> str | None:
    """The version to request from a heartbeat's answer, or None: no signal, not a
    version, not newer than what runs, or the last try at that very version failed (the
    rollout has stopped on it; a person looks first)."""
    signal = reply.get("upgrade") if isinstance(reply, dict) else None
    target = signal.get("version") if isinstance(signal, dict) else None
    if not isinstance(target, str) or versions.is_behind(running, target) is not True:
        return None
    if isinstance(last, dict) and last.get("to") == target and last.get("outcome") == "failed":
        return None
    return target


def request(state_dir: Path, target: str) -> bool:
    """Leave the request (once); True when it was written now."""
    path = StateLayout(state_dir).upgrade_request
    if path.exists():
        return False
    write_atomic(path, json.dumps({"version": target}).encode(), 0o644)
    return True

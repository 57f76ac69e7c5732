"""An agent upgrade's decisions, as pure functions: where the new venv goes, which units
restart in which order, whether the switch holds or goes back, which old venvs to drop.

`installer.upgrade` does the I/O in the order these say. The upgrade installs the new
wheel into a fresh venv beside the old one (`/opt/berth/venvs/<version>-<time>`), points
the `/opt/berth/venv` symlink the units run through at it (one rename: atomic), restarts
the units one by one, and keeps the switch only when every unit is active, runs from the
new venv, and the control plane accepted a heartbeat from the new reconciler in time.
"""

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from agent import version as versions
from installer.layout import AGENT_UNITS

# restarted one at a time in this order: the firewall helper first (the reconciler asks it
# for its state at start), the reconciler last (its heartbeat proves the whole switch)
RESTART_ORDER = tuple(u for u in AGENT_UNITS if u.endswith(".service"))
KEEP_VENVS = 2  # the current one and the one before (to switch back to by hand)
_DIST_INFO = re.compile(r"^berth-(?P<version>[^-]+)\.dist-info$")


class UpgradeError(RuntimeError):
    """The upgrade cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: str


def venv_dir_name(version: str, now: datetime) -> str:
    """`0.2.0-20261129T150102`: sorts by time within a version, tells its version at a glance."""
    safe = re.sub(r"[^A-Za-z0-9.+_]", "_", version) or "unknown"
    return f"{safe}-{now:%Y%m%dT%H%M%S}"


def version_of_dist_infos(names: list[str]) -> str | None:
    """The Berth version a venv holds, from its site-packages entry names."""
    found = [m["version"] for m in map(_DIST_INFO.match, names) if m]
    return found[0] if len(found) == 1 else None


def target_version(
    current: str | None, served: str | None, requested: str | None, force: bool
) -> tuple[str | None, str]:
    """(version to install or None, why). `requested` wins over what the control plane
    serves; an agent already at (or past) it is left alone unless `force`."""
    want = requested or served
    if want is None:
        return (
            None,
            "the control plane serves no Berth wheel at /dist/ (start it with --wheelhouse)",
        )
    try:
        versions.parse(want)
    except ValueError as exc:
        raise UpgradeError(str(exc)) from None
    if force or current is None:
        return want, f"installing {want}" + (" (--force)" if force and current == want else "")
    behind = versions.is_behind(current, want)
    if behind is False and not requested:
        return None, f"already at {current} (the control plane serves {want})"
    if current == want:
        return None, f"already at {want}"
    return want, f"{current} -> {want}"


def verdict(
    candidate: Path,
    states: dict[str, str],
    running_from: dict[str, Path | None],
    heartbeat: bool | None,
    heartbeat_wait_s: float,
) -> Verdict:
    """Keep the new venv, or switch back (and why). `states`: unit -> `systemctl is-active`;
    `running_from`: unit -> the venv its main process runs from; `heartbeat`: whether the
    control plane acknowledged the new reconciler (None: not waited for, because a unit
    failed first)."""
    for unit in RESTART_ORDER:
        state = states.get(unit, "unknown")
        if state != "active":
            return Verdict(False, f"{unit} is {state}, not active (journalctl -u {unit})")
    for unit in RESTART_ORDER:
        where = running_from.get(unit)
        if where != candidate:
            return Verdict(False, f"{unit} runs from {where or 'an unknown venv'}, not {candidate}")
    if not heartbeat:
        return Verdict(
            False,
            f"no heartbeat from the new reconciler reached the control plane within "
            f"{heartbeat_wait_s:g} s (journalctl -u berth-reconciler.service)",
        )
    return Verdict(True, "every unit active on the new venv; the control plane has its heartbeat")


def venv_of(executable: str, venvs_dir: Path) -> Path | None:
    """The venv (a directory right under `venvs_dir`) an executable path lies in."""
    path = Path(executable)
    try:
        rel = path.relative_to(venvs_dir)
    except ValueError:
        return None
    return venvs_dir / rel.parts[0] if rel.parts else None


def to_prune(names: list[str], current: str, previous: str | None) -> list[str]:
    """Venv directory names to delete: all but the current one and the one before it."""
    keep = {current, previous}
    return sorted(n for n in names if n not in keep and not n.startswith("."))

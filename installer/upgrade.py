"""`berth agent upgrade`: move this server's agent to the Berth version its control plane
serves, and back again when the new version does not come up (root).

    berth agent upgrade [--version V] [--force] [--unit-timeout S] [--heartbeat-timeout S]

1. ask the control plane which version it serves (`/dist/`); nothing to do when this
   agent has it already;
2. a fresh venv beside the old one, `/opt/berth/venvs/<version>-<time>`, with the wheel
   from the control plane's `/dist/` (the same pip flags as install.sh), checked to run;
3. `switch()`: point `/opt/berth/venv` (the path every unit runs through) at it with one
   rename, restart the units one by one, then wait for the control plane to acknowledge
   an event queued after the new reconciler started (it sends a heartbeat first);
4. keep it (old venvs beyond the previous one are removed), or point the symlink back,
   restart the units again and report why: an `upgrade` event, a message, exit status 1.

install.sh runs the same `switch()` (through `berth installer setup --venv`) when it is run
again on an installed server. The last outcome is kept in the agent's SQLite (`upgrade`)
and sent with every heartbeat, which is how the control plane's rolling upgrade learns it.

Exit status: 0 upgraded or already current, 1 failed and switched back, 2 bad options,
3 stopped before switching (nothing changed), 4 failed and switching back failed too.
"""

import argparse
import contextlib
import fcntl
import os
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests

from agent import version as versions
from agent.reconciler.admin import AgentState
from installer import plan, system
from installer.layout import RECONCILER_USER, Layout
from installer.system import StepError
from installer.upgradeplan import (
    RESTART_ORDER,
    UpgradeError,
    Verdict,
    target_version,
    to_prune,
    venv_dir_name,
    venv_of,
    verdict,
    version_of_dist_infos,
)

UPGRADED, FAILED, BAD_OPTIONS, NOTHING_CHANGED, ROLLBACK_FAILED = 0, 1, 2, 3, 4
DEFAULT_UNIT_TIMEOUT_S = 60.0
DEFAULT_HEARTBEAT_TIMEOUT_S = 120.0
_REEXEC = "BERTH_UPGRADE_REEXEC"


def say(message: str) -> None:
    print(f"berth-upgrade: {message}", file=sys.stderr, flush=True)


# ---- the venvs ------------------------------------------------------------------------


def venv_version(venv: Path) -> str | None:
    names = [p.name for p in venv.glob("lib/python3*/site-packages/berth-*.dist-info")]
    return version_of_dist_infos(names)


def current_venv(layout: Layout) -> Path | None:
    """The venv the units run now (the symlink's target), None when not installed."""
    if layout.venv.is_symlink():
        return Path(os.path.realpath(layout.venv))
    return layout.venv if layout.venv.is_dir() else None


def make_switchable(layout: Layout) -> Path:
    """Turn an install from before upgrades existed (a real /opt/berth/venv) into a venv
    under /opt/berth/venvs with the symlink beside it; return the current venv."""
    here = current_venv(layout)
    if here is None:
        raise UpgradeError(f"no Berth venv at {layout.venv}: install the agent first (install.sh)")
    layout.venvs.mkdir(mode=0o755, exist_ok=True)
    if layout.venv.is_symlink():
        return here
    moved = layout.venvs / venv_dir_name(venv_version(here) or "legacy", datetime.now(UTC))
    say(f"moving the venv {here} to {moved} (upgrades switch a symlink from now on)")
    here.rename(moved)
    point_venv(layout, moved)  # its scripts' #! names /opt/berth/venv: still resolves
    return moved


def point_venv(layout: Layout, target: Path) -> None:
    """Atomically make /opt/berth/venv point at `target` (a new symlink renamed over it)."""
    tmp = layout.prefix / ".venv.switch"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.relative_to(layout.prefix))
    os.rename(tmp, layout.venv)
    fd = os.open(layout.prefix, os.O_RDONLY)
    try:
        os.fsync(fd)  # the switch survives a power cut
    finally:
        os.close(fd)


def pip_argv(venv: Path, control_plane: str) -> list[str]:
    argv = [str(venv / "bin" / "pip"), "--quiet", "--disable-pip-version-check", "--isolated"]
    if control_plane.startswith("http://"):  # the operator's choice of URL, as in install.sh
        argv += ["--trusted-host", urlsplit(control_plane).hostname or ""]
    return argv


def create_venv(layout: Layout, control_plane: str, want: str) -> Path:
    venv = layout.venvs / venv_dir_name(want, datetime.now(UTC))
    say(f"creating {venv}")
    try:
        system.run(["python3", "-m", "venv", str(venv)], "create the venv")
        say(f"installing berth {want} from {control_plane}/dist/")
        system.run(
            [*pip_argv(venv, control_plane), "install", "--no-index",
             "--find-links", f"{control_plane}/dist/", f"berth=={want}"],
            "pip install", timeout=600,
        )  # fmt: skip
        got = venv_version(venv)
        if got != want:
            raise StepError(f"pip install: the new venv holds berth {got}, not {want}")
        system.run([str(venv / "bin" / "berth"), "--help"], "run the new berth")
    except StepError:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    return venv


def prune(layout: Layout, current: Path, previous: Path | None) -> list[str]:
    names = [p.name for p in layout.venvs.iterdir() if p.is_dir() and not p.is_symlink()]
    gone = to_prune(names, current.name, previous.name if previous else None)
    for name in gone:
        shutil.rmtree(layout.venvs / name, ignore_errors=True)
    return gone


# ---- the units ------------------------------------------------------------------------


def running_from(layout: Layout, unit: str) -> Path | None:
    """The venv the unit's main process runs from (its interpreter's directory, symlinks
    of the directories resolved: /opt/berth/venv/bin -> /opt/berth/venvs/X/bin)."""
    pid = system.systemctl("show", "-p", "MainPID", "--value", unit, check=False).strip()
    if not pid.isdigit() or pid == "0":
        return None
    try:
        exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except (OSError, UnicodeDecodeError):
        return None
    real = Path(os.path.realpath(os.path.dirname(exe))) / os.path.basename(exe)
    return venv_of(str(real), layout.venvs)


def restart_one_by_one(timeout_s: float) -> dict[str, str]:
    """Restart each unit and wait until it is active; stop at the first that is not."""
    states: dict[str, str] = {}
    for unit in RESTART_ORDER:
        say(f"restarting {unit}")
        system.systemctl("restart", unit, check=False)  # a failed start shows in its state
        deadline = time.monotonic() + timeout_s
        while (state := system.unit_state(unit)) != "active" and time.monotonic() < deadline:
            time.sleep(0.5)
        states[unit] = state
        if state != "active":
            say(f"{unit} is {state} after {timeout_s:g} s")
            break
    return states


# ---- the switch -----------------------------------------------------------------------


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """One upgrade at a time on a server (by hand, install.sh, the rolling upgrade): a
    second one would switch away from under the first one's checks."""
    layout.prefix.mkdir(parents=True, exist_ok=True)
    with open(layout.prefix / ".upgrade.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpgradeError(
                f"another upgrade is running on this server ({layout.prefix / '.upgrade.lock'}"
                "); wait for it (journalctl -u berth-upgrade.service) and run this again"
            ) from None
        yield


def _record(layout: Layout, outcome: dict[str, str], message: str) -> str:
    from installer.setup import _store_op  # root writes the reconciler's SQLite, then chowns

    def op(state: AgentState) -> str:
        state.record_upgrade(outcome)
        return state.queue_event("upgrade", message, **outcome)

    return str(_store_op(layout, op))


def heartbeat_from_new(layout: Layout, want: str, timeout_s: float) -> bool:
    from installer.setup import wait_acknowledged

    # queued after the new reconciler started: it sends a heartbeat before any event
    event_id = _record(
        layout, {"to": want, "outcome": "checking"}, f"agent {want} started; checking in"
    )
    try:
        wait_acknowledged(layout, event_id, timeout_s, f"a heartbeat from berth {want}")
        return True
    except StepError:
        return False


def switch(
    layout: Layout,
    candidate: Path,
    unit_timeout_s: float = DEFAULT_UNIT_TIMEOUT_S,
    heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
) -> tuple[int, str]:
    """Switch the units to `candidate`; keep it or switch back. (exit status, message)."""
    previous = make_switchable(layout)
    want = venv_version(candidate) or "?"
    before = venv_version(previous) or "?"
    if previous == candidate:
        return UPGRADED, f"already running {want} from {candidate}"
    say(f"switching {layout.venv} -> {candidate} ({before} -> {want})")
    point_venv(layout, candidate)
    states = restart_one_by_one(unit_timeout_s)
    ok_so_far = all(states.get(u) == "active" for u in RESTART_ORDER)
    where = {u: running_from(layout, u) for u in RESTART_ORDER} if ok_so_far else {}
    beat: bool | None = None
    if ok_so_far and all(w == candidate for w in where.values()):
        say(f"waiting up to {heartbeat_timeout_s:g} s for the control plane to hear from {want}")
        beat = heartbeat_from_new(layout, want, heartbeat_timeout_s)
    result: Verdict = verdict(candidate, states, where, beat, heartbeat_timeout_s)
    if result.keep:
        gone = prune(layout, candidate, previous)
        if gone:
            say(f"removed old venvs: {', '.join(gone)}")
        _record(layout, {"from": before, "to": want, "outcome": "upgraded"},
                f"agent upgraded from {before} to {want}")  # fmt: skip
        return UPGRADED, f"upgraded from {before} to {want}: {result.reason}"
    say(f"FAILED: {result.reason}; switching back to {previous}")
    point_venv(layout, previous)
    back = restart_one_by_one(unit_timeout_s)
    restored = all(back.get(u) == "active" for u in RESTART_ORDER)
    shutil.rmtree(candidate, ignore_errors=True)
    detail = f"upgrade to {want} failed: {result.reason}; switched back to {before}"
    if not restored:
        bad = ", ".join(f"{u}={s}" for u, s in back.items() if s != "active")
        detail += f", but not every unit is active again ({bad})"
    _record(layout, {"from": before, "to": want, "outcome": "failed", "detail": result.reason},
            detail)  # fmt: skip
    return (FAILED if restored else ROLLBACK_FAILED), detail


# ---- the command ----------------------------------------------------------------------


def served(control_plane: str) -> str | None:
    try:
        resp = requests.get(f"{control_plane}/dist/", timeout=15)
        resp.raise_for_status()
    except requests.RequestException as exc:
        raise StepError(f"the control plane's /dist/ does not answer: {exc}") from exc
    return versions.served_version(versions.index_links(resp.text))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="berth agent upgrade", description=__doc__.split("\n\n")[0])
    p.add_argument("--control-plane", metavar="URL",
                   help="default: the --control-plane of /etc/berth/agent.env")  # fmt: skip
    p.add_argument(
        "--version", help="install this version (default: what the control plane serves)"
    )
    p.add_argument("--force", action="store_true", help="reinstall even when already current")
    p.add_argument("--from-request", type=Path, metavar="FILE",
                   help="berth-upgrade.service: the version the reconciler was asked for")  # fmt: skip
    p.add_argument("--unit-timeout", type=float, default=DEFAULT_UNIT_TIMEOUT_S, metavar="SECONDS",
                   help="how long each unit may take to become active")  # fmt: skip
    p.add_argument("--heartbeat-timeout", type=float, default=DEFAULT_HEARTBEAT_TIMEOUT_S,
                   metavar="SECONDS", help="how long to wait for the new agent's heartbeat")  # fmt: skip
    return p


def _control_plane(layout: Layout, given: str | None) -> str:
    if given:
        return plan.check_url(given)
    args = plan.parse_agent_env(layout.agent_env.read_text()) if layout.agent_env.exists() else []
    if "--control-plane" in args[:-1]:
        return plan.check_url(args[args.index("--control-plane") + 1])
    raise plan.PlanError("--control-plane", f"not in {layout.agent_env}; pass the URL")


def read_request(path: Path) -> str | None:
    """The version in the reconciler's request file (then removed), None when there is
    none. Only a plain file of the reconciler's user (or root) counts."""
    import json
    import pwd

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a symlink (ELOOP) or worse: dropped, or the .path unit loops
        path.unlink(missing_ok=True)
        raise UpgradeError(f"--from-request {path}: {exc}") from exc
    try:
        st = os.fstat(fd)
        owners = {0}
        with contextlib.suppress(KeyError):
            owners.add(pwd.getpwnam(RECONCILER_USER).pw_uid)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in owners:
            raise UpgradeError(f"--from-request {path}: not a file of {RECONCILER_USER}; ignored")
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    try:
        want = json.loads(raw)["version"]
        versions.parse(want)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UpgradeError(f"--from-request {path}: no valid version in it ({exc})") from exc
    return str(want)


def _reexec_from_real_path(layout: Layout, argv: list[str]) -> None:
    """Run from the venv's real directory, not through the /opt/berth/venv symlink: after
    the switch, imports through the symlink would load the other version's code."""
    if os.environ.get(_REEXEC) or Path(sys.prefix) != layout.venv:
        return
    real = Path(os.path.realpath(layout.venv))
    os.environ[_REEXEC] = "1"
    python = str(real / "bin" / "python")
    os.execv(python, [python, "-m", "agent.cli", "agent", "upgrade", *argv])


def main(argv: list[str], layout: Layout | None = None) -> int:
    layout = layout or Layout()
    parser = _parser()
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("berth agent upgrade: run as root (sudo berth agent upgrade)", file=sys.stderr)
        return BAD_OPTIONS
    try:
        control_plane = _control_plane(layout, args.control_plane)
    except plan.PlanError as exc:
        parser.error(str(exc))
    try:
        make_switchable(layout)
        _reexec_from_real_path(layout, argv)
        with locked(layout):
            return _upgrade(layout, control_plane, args)
    except UpgradeError as exc:  # before anything was decided: nothing to record
        say(f"STOPPED, nothing was switched: {exc}")
        return NOTHING_CHANGED


def _upgrade(layout: Layout, control_plane: str, args: argparse.Namespace) -> int:
    want: str | None = None
    try:
        current = current_venv(layout)
        have = venv_version(current) if current else None
        requested = args.version
        if args.from_request is not None:
            requested = read_request(args.from_request)
            if requested is None:
                say(f"no request at {args.from_request}: nothing to do")
                return UPGRADED
            say(f"the control plane's rolling upgrade asks for {requested}")
        want, why = target_version(have, served(control_plane), requested, args.force)
        say(why)
        if want is None:
            return UPGRADED
        _record(layout, {"from": have or "?", "to": want, "outcome": "started"},
                f"agent upgrade from {have} to {want} started")  # fmt: skip
        candidate = create_venv(layout, control_plane, want)
    except (UpgradeError, StepError) as exc:
        say(f"STOPPED, nothing was switched: {exc}")
        if want is not None:
            _record(layout, {"to": want, "outcome": "failed", "detail": str(exc)},
                    f"agent upgrade to {want} stopped before the switch: {exc}")  # fmt: skip
        return NOTHING_CHANGED
    code, message = switch(layout, candidate, args.unit_timeout, args.heartbeat_timeout)
    say(message)
    print(message)
    return code

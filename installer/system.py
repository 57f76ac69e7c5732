"""Small I/O helpers for the installer: commands with captured output, systemctl, users,
durable file writes. Every failure raises `StepError` naming the step and the command's
own message, so the installer can stop with something an operator can act on.
"""

import grp
import logging
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.durablefiles import write_atomic

log = logging.getLogger("installer")


class StepError(RuntimeError):
    """An installation step failed; the message says which and why."""


class EarlyStop(StepError):
    """A check failed before anything on the system was changed (exit status 3)."""


def run(argv: Sequence[str], step: str, *, check: bool = True, timeout: float = 120) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StepError(f"{step}: {' '.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise StepError(f"{step}: {' '.join(argv)} exited with {proc.returncode}: {detail}")
    return proc.stdout


def systemctl(*args: str, check: bool = True) -> str:
    return run(["systemctl", *args], f"systemctl {args[0]}", check=check)


def unit_state(unit: str) -> str:
    return systemctl("is-active", unit, check=False).strip() or "unknown"


def systemd_is_init() -> bool:
    return Path("/run/systemd/system").is_dir()


def write_file(path: Path, content: str, mode: int = 0o644) -> bool:
    """Write durably when the content differs; True when it changed (idempotent re-runs)."""
    try:
        if path.read_text() == content and (path.stat().st_mode & 0o7777) == mode:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, content.encode(), mode)
    return True


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def remove_user(name: str) -> bool:
    if not user_exists(name):
        return False
    run(["userdel", name], f"remove user {name}")
    return True


def remove_group(name: str) -> bool:
    if not group_exists(name):
        return False
    run(["groupdel", name], f"remove group {name}")
    return True


def remove_path(path: Path) -> bool:
    if path.is_symlink() or path.is_file():
        path.unlink()
        return True
    if path.is_dir():
        shutil.rmtree(path)
        return True
    return False


def chown_tree_to(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for item in [path, *path.rglob("*")]:
        os.chown(item, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def wait_for(
    what: str, check: Callable[[], object], timeout_s: float, interval_s: float = 0.5
) -> object:
    """Poll `check` until truthy; StepError after `timeout_s` with the last value seen."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise StepError(f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r})")
        time.sleep(interval_s)

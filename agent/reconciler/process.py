"""Starting, finding and stopping service processes.

Each service (and each build) runs in its own session/process group, so stopping it stops
everything it spawned. A process is identified by its pid *and* its start time from
/proc/<pid>/stat, so a reused pid is never mistaken for our service after a restart.
Service output goes straight to a log file opened in append mode: the service keeps
running and logging even while the reconciler is down.
"""

import asyncio
import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from agent.identities import SERVICES_USER, IdentityError, check_services_user, ensure_user
from agent.metrics.builds import FinishedBuild
from agent.reconciler import buildusage


@dataclass(frozen=True)
class RunAs:
    """Who user code (builds, services) runs as. None fields: the agent's own user."""

    uid: int | None = None
    gid: int | None = None
    name: str | None = None

    @classmethod
    def for_agent(cls, configured: str | None) -> "RunAs":
        """Never root, never a uid of Berth's own processes: the configured user whenever
        one is set (under systemd the unprivileged reconciler switches to it with
        CAP_SETUID/CAP_SETGID); as root without one, `berth-svc` (made if missing);
        otherwise (development, not root) the agent's own user."""
        if configured is None and os.geteuid() != 0:
            return cls()
        try:
            entry = pwd.getpwnam(configured) if configured else ensure_user(SERVICES_USER)
            check_services_user(entry)
        except KeyError:
            raise SystemExit(f"--services-user {configured!r}: no such user") from None
        except IdentityError as exc:
            raise SystemExit(str(exc)) from None
        return cls(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _ambient_capabilities() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapAmb:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


# A switch between two non-root users keeps the ambient capabilities (capabilities(7)),
# and execve passes them on: user code would inherit CAP_SETUID. setpriv (util-linux)
# clears them before exec'ing the command, in the same pid.
_CLEAR_CAPS = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--"]


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited
        return None
    return int(fields[19])


def is_alive(pid: int, ticks: int) -> bool:
    return start_ticks(pid) == ticks


def spawn(
    argv: list[str], cwd: Path, env: dict[str, str], log_path: Path, run_as: RunAs
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        # output may hold the service's secrets: its user only. Made 0600 when we create
        # it (before the chown); later the services user owns it and keeps that mode
        with contextlib.suppress(PermissionError):
            os.fchmod(log.fileno(), 0o600)
        if run_as.uid is not None:
            os.chown(log_path, run_as.uid, run_as.gid or -1)
            if os.geteuid() != 0 and _ambient_capabilities():
                argv = [*_CLEAR_CAPS, *argv]
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=[] if run_as.uid is not None else None,
        )


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def stop_group(
    pid: int, ticks: int, grace_s: float = 10.0, popen: subprocess.Popen[bytes] | None = None
) -> None:
    """SIGTERM the group, wait up to `grace_s`, then SIGKILL. Reaps `popen` if given."""
    if not is_alive(pid, ticks):
        if popen is not None:
            popen.poll()
        return
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if popen is not None:
            popen.poll()
        if not is_alive(pid, ticks):
            return
        await asyncio.sleep(0.05)
    signal_group(pid, signal.SIGKILL)
    if popen is not None:
        await asyncio.to_thread(popen.wait)


@dataclass(frozen=True)
class BuildResult:
    """How a build ended and what it cost: wall time and the peak resident memory of its
    process tree (`buildusage.py` says how that is measured)."""

    ok: bool
    reason: str
    duration_s: float
    peak_rss_bytes: int

    def finished(self, service: str) -> FinishedBuild:
        """What the metrics keep of it."""
        return FinishedBuild(service, self.duration_s, self.peak_rss_bytes, self.ok)

    @property
    def cost(self) -> str:
        return f"{self.duration_s:.1f} s, peak memory {self.peak_rss_bytes / (1 << 20):.0f} MiB"


async def run_build(
    command: str, cwd: Path, env: dict[str, str], log_path: Path, run_as: RunAs, timeout_s: float
) -> BuildResult:
    """Run a build command in its own process group with a timeout, measuring it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"$ {command}\n".encode())
    started = time.monotonic()
    proc = spawn(["/bin/sh", "-c", command], cwd, env, log_path, run_as)
    ticks = start_ticks(proc.pid) or 0
    group = buildusage.GroupPeak(proc.pid)
    sampler = asyncio.create_task(group.run(), name=f"build-rss-{proc.pid}")
    timed_out, code, maxrss = False, None, 0
    try:
        code, maxrss = await asyncio.wait_for(asyncio.to_thread(buildusage.wait, proc), timeout_s)
    except TimeoutError:
        timed_out = True
        await stop_group(proc.pid, ticks, grace_s=5, popen=proc)
    finally:
        signal_group(proc.pid, signal.SIGKILL)  # leftovers of the build's group
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    peak = max(maxrss, group.peak)
    took = time.monotonic() - started
    if timed_out:
        return BuildResult(False, f"build timed out after {timeout_s:g} s", took, peak)
    if code != 0:
        return BuildResult(False, f"build exited with {describe_exit(code)}", took, peak)
    return BuildResult(True, "ok", took, peak)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def tail(path: Path, max_bytes: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def free_port() -> int:
    """A loopback port nothing listens on now (for a service without a fixed port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

"""Git: one bare mirror per repository, fetched incrementally; one release directory per commit.

Mirrors live under ``STATE/git/<hash of url>.git``; releases under
``STATE/releases/<service>/<commit>``, checked out with `git worktree` so a release costs a
checkout, not a clone. Clone and fetch run as plain git processes in a group of their own:
they report progress to the log, stop when they stall (git's HTTP low-speed limit) or run
past a kill timeout, and are killed at once when a newer target supersedes the sync.
"""

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import git

log = logging.getLogger(__name__)

# Only transports that cannot run commands (the control plane validates too; this is the
# agent's own line of defence against a tampered document).
_SAFE_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_PROTOCOL_FROM_USER": "0",
    "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
}


class GitError(Exception):
    """A clone, fetch or checkout failed; the message says which and why."""


class GitCancelled(GitError):
    """The sync was cancelled (a newer target superseded it); git was killed."""


@dataclass(frozen=True)
class GitLimits:
    """Bounds on one clone or fetch. git's own low-speed limit ends an HTTP(S) transfer
    that stalls (a server that accepts and never answers, a dead link); the kill timeout
    ends any transport (git://, ssh, file) that runs too long."""

    low_speed_bytes: int = 1000  # http.lowSpeedLimit: below this many bytes/s ...
    low_speed_s: int = 30  # http.lowSpeedTime: ... for this long, git gives up
    kill_after_s: float = 600.0

    def config_args(self) -> list[str]:
        return [
            "-c", f"http.lowSpeedLimit={self.low_speed_bytes}",
            "-c", f"http.lowSpeedTime={self.low_speed_s}",
        ]  # fmt: skip


WAIT_STEP_S = 0.1  # how often a running git checks for cancellation and its deadline
PROGRESS_EVERY_S = 2.0


class _Stderr(threading.Thread):
    """Reads git's stderr: logs its progress at most every two seconds (so long clones
    show life) and keeps the last lines for the error message."""

    def __init__(self, stream: IO[bytes], what: str) -> None:
        super().__init__(name=f"git-stderr {what}", daemon=True)
        self.stream = stream
        self.what = what
        self.tail: deque[str] = deque(maxlen=20)

    def run(self) -> None:
        last = 0.0
        for raw in iter(lambda: self.stream.read1(4096), b""):  # type: ignore[attr-defined]
            for line in raw.decode(errors="replace").replace("\r", "\n").splitlines():
                if not line.strip():
                    continue
                self.tail.append(line.strip())
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY_S:
                    last = now
                    log.info("%s: %s", self.what, line.strip())


def _run_git(args: list[str], what: str, limits: GitLimits, cancel: threading.Event | None) -> None:
    """Run git in a process group of its own; kill the group on cancel or timeout."""
    argv = ["git", *limits.config_args(), *args]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **_SAFE_ENV},
        start_new_session=True,
    )
    assert proc.stderr is not None
    reader = _Stderr(proc.stderr, what)
    reader.start()
    deadline = time.monotonic() + limits.kill_after_s
    try:
        while True:
            try:
                code = proc.wait(WAIT_STEP_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if cancel is not None and cancel.is_set():
                raise GitCancelled(f"{what}: cancelled")
            if time.monotonic() >= deadline:
                raise GitError(f"{what}: no result after {limits.kill_after_s:g} s, stopped")
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(5)
        proc.stderr.close()
    if code != 0:
        detail = "; ".join(list(reader.tail)[-3:]) or f"exit code {code}"
        raise GitError(f"{what} failed: {detail[-500:]}")


_mirror_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _mirror_lock(path: Path) -> threading.Lock:
    """Services sharing a repository share its mirror: one clone or fetch at a time."""
    with _locks_guard:
        return _mirror_locks.setdefault(path, threading.Lock())


def mirror_path(git_dir: Path, url: str) -> Path:
    return git_dir / (hashlib.sha256(url.encode()).hexdigest()[:24] + ".git")


def ensure_commit(
    git_dir: Path,
    url: str,
    commit: str,
    limits: GitLimits = GitLimits(),
    cancel: threading.Event | None = None,
) -> Path:
    """Make sure the mirror of `url` holds `commit`; fetch only when it does not.
    Setting `cancel` stops a clone or fetch under way (`GitCancelled`)."""
    path = mirror_path(git_dir, url)
    with _mirror_lock(path):
        return _ensure_commit(path, url, commit, limits, cancel)


def _ensure_commit(
    path: Path, url: str, commit: str, limits: GitLimits, cancel: threading.Event | None
) -> Path:
    if not path.exists():
        log.info("cloning %s", url)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _run_git(["clone", "--mirror", "--progress", "--", url, str(tmp)],
                 f"clone {url}", limits, cancel)  # fmt: skip
        tmp.rename(path)
    repo = git.Repo(path)
    if not _has_commit(repo, commit):
        log.info("fetching %s for %s", url, commit[:12])
        _run_git(["-C", str(path), "fetch", "--prune", "--progress", "origin"],
                 f"fetch {url}", limits, cancel)  # fmt: skip
    if not _has_commit(repo, commit):
        raise GitError(f"commit {commit} is not in {url} (force-pushed away?)")
    return path


def _has_commit(repo: git.Repo, commit: str) -> bool:
    try:
        return repo.commit(commit).type == "commit"
    except (ValueError, git.BadName, git.GitCommandError):
        return False


def checkout_release(mirror: Path, commit: str, release_dir: Path) -> None:
    """Check `commit` out into `release_dir` (detached worktree); reuse it if present."""
    if (release_dir / ".git").exists():
        return
    release_dir.parent.mkdir(parents=True, exist_ok=True)
    if release_dir.exists():
        shutil.rmtree(release_dir)
    repo = git.Repo(mirror)
    try:
        with _mirror_lock(mirror):
            # --force: a release directory deleted earlier may still be registered; stale
            # registrations are pruned after deploys, off the deploy's critical path
            repo.git.worktree("add", "--detach", "--force", str(release_dir), commit)
    except git.GitCommandError as exc:
        raise GitError(
            f"checkout of {commit[:12]} failed: {(exc.stderr or str(exc)).strip()[-500:]}"
        ) from exc


def remove_release(mirror: Path, release_dir: Path) -> None:
    shutil.rmtree(release_dir, ignore_errors=True)
    prune_worktrees(mirror)


def prune_worktrees(mirror: Path) -> None:
    """Forget release directories that no longer exist."""
    if mirror.exists():
        try:
            with _mirror_lock(mirror):
                git.Repo(mirror).git.worktree("prune")
        except git.GitCommandError as exc:
            log.warning("worktree prune in %s failed: %s", mirror, exc)

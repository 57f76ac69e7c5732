"""Git: one bare mirror per repository, fetched incrementally; one release directory per commit.

Mirrors live under ``STATE/git/<hash of url>.git``; releases under
``STATE/releases/<service>/<commit>``, checked out with `git worktree` so a release costs a
checkout, not a clone. Clone and fetch report progress to the log.
"""

import hashlib
import logging
import shutil
import threading
import time
from pathlib import Path

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


class _Progress(git.RemoteProgress):
    """Logs fetch progress at most every two seconds, so long clones show life."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what
        self._last = 0.0

    def update(self, op_code: int, cur_count, max_count=None, message: str = "") -> None:  # type: ignore[no-untyped-def]
        now = time.monotonic()
        if now - self._last < 2.0:
            return
        self._last = now
        total = f"/{int(max_count)}" if max_count else ""
        log.info(
            "%s: %s %d%s %s",
            self.what,
            self._cur_line or "progress",
            int(cur_count or 0),
            total,
            message,
        )


_mirror_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _mirror_lock(path: Path) -> threading.Lock:
    """Services sharing a repository share its mirror: one clone or fetch at a time."""
    with _locks_guard:
        return _mirror_locks.setdefault(path, threading.Lock())


def mirror_path(git_dir: Path, url: str) -> Path:
    return git_dir / (hashlib.sha256(url.encode()).hexdigest()[:24] + ".git")


def ensure_commit(git_dir: Path, url: str, commit: str) -> Path:
    """Make sure the mirror of `url` holds `commit`; fetch only when it does not."""
    path = mirror_path(git_dir, url)
    with _mirror_lock(path):
        return _ensure_commit(path, url, commit)


def _ensure_commit(path: Path, url: str, commit: str) -> Path:
    try:
        if not path.exists():
            log.info("cloning %s", url)
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            progress = _Progress(f"clone {url}")
            # GitPython's stubs name only the callable form of `progress`; RemoteProgress works too
            git.Repo.clone_from(url, tmp, bare=True, mirror=True, env=_SAFE_ENV, progress=progress)  # type: ignore[arg-type]
            tmp.rename(path)
        repo = git.Repo(path)
        if not _has_commit(repo, commit):
            log.info("fetching %s for %s", url, commit[:12])
            with repo.git.custom_environment(**_SAFE_ENV):
                repo.remote("origin").fetch(progress=_Progress(f"fetch {url}"), prune=True)
        if not _has_commit(repo, commit):
            raise GitError(f"commit {commit} is not in {url} (force-pushed away?)")
        return path
    except git.GitCommandError as exc:
        raise GitError(f"git failed for {url}: {(exc.stderr or str(exc)).strip()[-500:]}") from exc


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

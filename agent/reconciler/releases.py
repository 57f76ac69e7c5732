"""A service's releases on disk: checkout, build log path, environment, pruning.

`releases/<service>/<commit>` is a git worktree of the service's mirror (`git/`); build
output goes to `logs/<service>/build-<commit>-<build key>.log`. These run on worker
threads (git, chown, rmtree), never on the event loop.
"""

import os
import shutil
import threading
from pathlib import Path

from agent.reconciler import gitsync, ownership
from agent.reconciler.process import RunAs
from agent.schema import ValidationError
from agent.schema.document import DesiredService
from agent.schema.stack import check_repo_source
from agent.statelayout import StateLayout


def release_dir(state_dir: Path, service: str, commit: str) -> Path:
    return StateLayout(state_dir).releases / service / commit


def build_log(state_dir: Path, service: str, commit: str, build_key: str) -> Path:
    return StateLayout(state_dir).logs / service / f"build-{commit[:12]}-{build_key}.log"


def service_log(state_dir: Path, service: str) -> Path:
    return StateLayout(state_dir).logs / service / "service.log"


def prepare(
    state_dir: Path,
    svc: DesiredService,
    repo_roots: tuple[str, ...],
    limits: gitsync.GitLimits,
    run_as: RunAs,
    cancel: threading.Event | None = None,
) -> Path:
    """Mirror `svc`'s repo and check its commit out into its release directory."""
    try:  # the control plane checked it too; a document that skipped it meets this
        check_repo_source(svc.spec.repo, repo_roots, "repo")
    except ValidationError as exc:
        raise gitsync.GitError(f"refusing to clone {svc.spec.repo}: {exc}") from None
    git_dir = StateLayout(state_dir).git
    ownership.make_private_dir(git_dir)  # mirrors: the reconciler's alone
    mirror = gitsync.ensure_commit(git_dir, svc.spec.repo, svc.commit, limits, cancel)
    release = release_dir(state_dir, svc.name, svc.commit)
    if not (release / ".git").exists():  # checked out afresh: never built
        ownership.forget_builds(state_dir, svc.name, svc.commit)
    gitsync.checkout_release(mirror, svc.commit, release)
    if run_as.uid is not None:
        ownership.chown_tree(release, run_as.uid, run_as.gid or 0)
    os.utime(release)  # most recently used: kept longest
    return release


def env(release: Path, run_as: RunAs) -> dict[str, str]:
    """What a release's build and run commands get on top of the service's environment."""
    out = {"HOME": str(release)}
    if run_as.uid is not None:
        # the worktree's git metadata belongs to the agent: let the services user read it
        out.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="safe.directory",
            GIT_CONFIG_VALUE_0=str(release),
        )
    return out


def prune(state_dir: Path, service: str, keep: int, in_use: str | None, repo: str | None) -> None:
    """Keep the newest `keep` release directories (rollback needs no rebuild) and the one
    in use."""
    root = StateLayout(state_dir).releases / service
    if not root.is_dir():
        return
    dirs = sorted(
        (d for d in root.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True
    )
    removed = False
    for d in dirs[keep:]:
        if d.name != in_use:
            shutil.rmtree(d, ignore_errors=True)
            ownership.forget_builds(state_dir, service, d.name)
            removed = True
    if removed and repo is not None:
        gitsync.prune_worktrees(gitsync.mirror_path(StateLayout(state_dir).git, repo))

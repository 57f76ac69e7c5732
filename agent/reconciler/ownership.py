"""Handing release trees to the services user without trusting what is in them.

A release directory belongs to the services user once it is built, and a build can put
anything in it, symlinks to root-only files included. So the reconciler (root under
`run-all`, CAP_CHOWN/CAP_DAC_OVERRIDE under systemd) never follows a path inside it:

- `chown_tree` walks with directory file descriptors opened `O_NOFOLLOW` and changes
  each entry relative to its parent's fd without following links (`lchown`), so a
  symlink, or a directory swapped for one mid-walk, is never traversed or its target
  touched;
- build markers ("this release was built with that build key") live outside the tree,
  under ``STATE/build-markers/<service>/<commit>/``, where only the reconciler writes;
- mirrors live in a directory only the reconciler's user can enter (`make_private_dir`).
"""

import errno
import os
import stat
from pathlib import Path

from agent.statelayout import StateLayout

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give `root` and everything under it to uid:gid, following no symlink."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        _chown_dir(fd, uid, gid)
    finally:
        os.close(fd)


def _chown_dir(dir_fd: int, uid: int, gid: int) -> None:
    os.fchown(dir_fd, uid, gid)
    with os.scandir(dir_fd) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in names:
        if is_dir:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                # swapped for a symlink or a file since the listing: change only the link
                _lchown_at(dir_fd, name, uid, gid)
                continue
            try:
                _chown_dir(child, uid, gid)
            finally:
                os.close(child)
        else:
            _lchown_at(dir_fd, name, uid, gid)


def _lchown_at(dir_fd: int, name: str, uid: int, gid: int) -> None:
    try:
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass


def marker_dir(state_dir: Path, service: str, commit: str) -> Path:
    """Where the build markers of one release live: outside the service-owned tree."""
    return StateLayout(state_dir).build_markers / service / commit


def is_built(state_dir: Path, service: str, commit: str, build_key: str) -> bool:
    return (marker_dir(state_dir, service, commit) / build_key).is_file()


def mark_built(state_dir: Path, service: str, commit: str, build_key: str) -> None:
    d = marker_dir(state_dir, service, commit)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / build_key, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.close(fd)


def forget_builds(state_dir: Path, service: str, commit: str) -> None:
    """A release checked out afresh was never built: drop its markers."""
    d = marker_dir(state_dir, service, commit)
    if d.is_dir():
        for m in d.iterdir():
            m.unlink(missing_ok=True)
        d.rmdir()


def make_private_dir(path: Path) -> None:
    """Create `path` (or tighten it) so only its owner, the reconciler's user, may enter."""
    path.mkdir(parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{path} must be a directory")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)

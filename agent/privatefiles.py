"""SQLite files only their owner can read: credentials, webhook secrets and env values
live in them.

SQLite gives a database's `-wal`, `-shm` and `-journal` files the permission bits of the
database file itself, so creating the database 0600 before SQLite first opens it (and
tightening files an older version left readable) keeps every one of them private,
whatever the process's umask is when SQLite later recreates them.
"""

import os
from pathlib import Path

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_sqlite(path: Path) -> None:
    """Make sure `path` and its side files exist only as mode 0600 (owner only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        try:
            if os.lstat(side).st_mode & 0o077:
                os.chmod(side, 0o600, follow_symlinks=False)
        except FileNotFoundError:
            pass
        except NotImplementedError:  # a symlink: not ours; SQLite would refuse it too
            pass

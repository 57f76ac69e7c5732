"""SQLite files only their owner can read: credentials, webhook secrets and env values
live in them.

SQLite gives a database's `-wal`, `-shm` and `-journal` files the permission bits of the
database file itself, so creating the database 0600 before SQLite first opens it (and
tightening files an older version left readable) keeps every one of them private,
whatever the process's umask is when SQLite later recreates them.
"""

import errno
import os
import stat
from pathlib import Path

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_sqlite(path: Path) -> None:
    """Make sure `path` and its side files exist only as mode 0600 (owner only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # An existing database is never opened here: closing any descriptor of a file drops
    # every POSIX lock this process holds on it, SQLite's included, and another process
    # closing its last connection would then delete the WAL this one still writes to.
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        os.close(os.open(path, flags, 0o600))
    except FileExistsError:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):  # as O_NOFOLLOW would have refused it
            raise OSError(errno.ELOOP, "a symlink, not a database file", str(path)) from None
        if mode & 0o077:
            os.chmod(path, 0o600, follow_symlinks=False)
    for suffix in SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        try:
            if os.lstat(side).st_mode & 0o077:
                os.chmod(side, 0o600, follow_symlinks=False)
        except FileNotFoundError:
            pass
        except NotImplementedError:  # a symlink: not ours; SQLite would refuse it too
            pass

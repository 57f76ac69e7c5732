"""Dropping root after binding: the proxies never serve a request as root.

When started as root (development, `run-all`, an installer mistake) the proxy binds its
sockets first, then becomes `berth-proxy` if that user exists, else `nobody`. Its own
route cache file is handed to that user first so the last known table can still be
saved; if that fails the proxy keeps routing and only warns. Under systemd the unit
already runs unprivileged and this is a no-op.
"""

import logging
import os
import pwd
from pathlib import Path

from agent.identities import PROXY_USER, account_or_nobody, become

log = logging.getLogger(__name__)


def proxy_account() -> pwd.struct_passwd:
    return account_or_nobody(PROXY_USER)


def drop_privileges(cache_file: Path) -> str | None:
    """Become the proxy user when root; returns its name, or None when not root.

    Only this proxy's own route cache is handed over: the other components' caches in
    the same directory stay theirs. The directory itself is handed over only when the
    proxy's group cannot already write it (a development tree created by root); under
    `run-all` it is `root:berth` 0770 and stays so."""
    if os.geteuid() != 0:
        return None
    account = proxy_account()
    # Codecs load lazily from the Python installation, which the new user may not be
    # able to read (a pyenv under /root): uvloop needs idna for every later bind.
    "localhost".encode("idna")
    directory = cache_file.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        st = directory.stat()
        group_writes = st.st_gid == account.pw_gid and st.st_mode & 0o070 == 0o070
        if st.st_uid != account.pw_uid and not group_writes:
            os.chown(directory, account.pw_uid, account.pw_gid)
        if cache_file.exists():
            os.chown(cache_file, account.pw_uid, account.pw_gid, follow_symlinks=False)
    except OSError as exc:
        log.warning("route cache %s stays unwritable for %s: %s", cache_file, account.pw_name, exc)
    return become(account)

"""Dropping root after binding: the proxies never serve a request as root.

When started as root (development, `run-all`, an installer mistake) the proxy binds its
sockets first, then becomes `berth-proxy` if that user exists, else `nobody`. The route
cache directory is handed to that user first so the last known table can still be
saved; if that fails the proxy keeps routing and only warns. Under systemd the unit
already runs unprivileged and this is a no-op.
"""

import logging
import os
import pwd
from pathlib import Path

log = logging.getLogger(__name__)

PROXY_USER = "berth-proxy"
FALLBACK_USER = "nobody"


def proxy_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PROXY_USER)
    except KeyError:
        return pwd.getpwnam(FALLBACK_USER)


def drop_privileges(writable: list[Path]) -> str | None:
    """Become the proxy user when root; returns its name, or None when not root."""
    if os.geteuid() != 0:
        return None
    account = proxy_account()
    # Codecs load lazily from the Python installation, which the new user may not be
    # able to read (a pyenv under /root): uvloop needs idna for every later bind.
    "localhost".encode("idna")
    for path in writable:
        try:
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, account.pw_uid, account.pw_gid)
            for child in path.iterdir():
                if child.name.endswith("-routes.json"):
                    os.chown(child, account.pw_uid, account.pw_gid)
        except OSError as exc:
            log.warning("route cache %s stays unwritable for %s: %s", path, account.pw_name, exc)
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    log.info("dropped root: running as %s (uid %d)", account.pw_name, account.pw_uid)
    return account.pw_name

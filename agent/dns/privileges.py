"""Dropping root after binding: the responder never answers a query as root.

Under systemd the unit runs it as its own user with only CAP_NET_BIND_SERVICE, and this
is a no-op. Started as root by hand (or by `berth agent run-all` as root), it binds port
53 first, then switches for good to `berth-dns` if that user exists, else `nobody`.
"""

import logging
import os
import pwd

log = logging.getLogger(__name__)

PREFERRED_USER = "berth-dns"
FALLBACK_USER = "nobody"


def target_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PREFERRED_USER)
    except KeyError:
        return pwd.getpwnam(FALLBACK_USER)


def drop_privileges() -> str | None:
    """If root, become the unprivileged user irrevocably; return its name (None if not root)."""
    if os.geteuid() != 0:
        return None
    user = target_user()
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)  # sets real, effective and saved ids: no way back
    if os.geteuid() == 0 or os.getuid() == 0:
        raise RuntimeError(f"still root after switching to {user.pw_name}")
    log.info("dropped root: running as %s (uid %d)", user.pw_name, user.pw_uid)
    return user.pw_name

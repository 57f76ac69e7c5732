"""Dropping root after binding: the responder never answers a query as root.

Under systemd the unit runs it as its own user with only CAP_NET_BIND_SERVICE, and this
is a no-op. Started as root by hand (or by `berth agent run-all` as root), it binds port
53 first, then switches for good to `berth-dns` if that user exists, else `nobody`.
"""

import os
import pwd

from agent.identities import DNS_USER, account_or_nobody, become


def target_user() -> pwd.struct_passwd:
    return account_or_nobody(DNS_USER)


def drop_privileges() -> str | None:
    """If root, become the unprivileged user irrevocably; return its name (None if not root)."""
    if os.geteuid() != 0:
        return None
    return become(target_user())

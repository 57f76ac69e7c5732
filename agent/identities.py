"""The accounts Berth's processes and the user's services run as, outside systemd.

Under systemd the installer creates them (systemd/berth.sysusers.conf) and the units
name them. `berth agent run-all` as root (development, tests, the demo) must hold the
same separation, so it makes any that are missing, as system accounts without a home
or a login shell:

| account | group | runs |
| --- | --- | --- |
| `berth-proxy` | `berth` | both proxies (they drop root to it) |
| `berth-dns` | `berth` | the DNS responder (it drops root to it) |
| `berth-svc` | `berth-svc` | the user's builds and services |

Group `berth` may open the bus sockets; `berth-svc` is in no Berth group, so services
can neither reach the bus nor write a route cache. The firewall helper's socket has a
group of its own, `berth-firewall`, which none of these is in.
"""

import grp
import logging
import os
import pwd
import subprocess

log = logging.getLogger(__name__)

AGENT_GROUP = "berth"
FIREWALL_GROUP = "berth-firewall"
PROXY_USER = "berth-proxy"
DNS_USER = "berth-dns"
SERVICES_USER = "berth-svc"
NOLOGIN = "/usr/sbin/nologin"


class IdentityError(Exception):
    """An account could not be made or is unfit; the message says which and what to do."""


def ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        pass
    _run(["groupadd", "--system", name], f"group {name}")
    return grp.getgrnam(name).gr_gid


def ensure_user(name: str, group: str | None = None) -> pwd.struct_passwd:
    """The system account `name`, made if missing (primary group `group`, or its own)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    argv = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
            "--shell", NOLOGIN]  # fmt: skip
    argv += ["--gid", group, name] if group else ["--user-group", name]
    _run(argv, f"user {name}")
    return pwd.getpwnam(name)


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    # exit 9: made meanwhile by another process (two agents starting at once)
    if result.returncode not in (0, 9):
        raise IdentityError(
            f"cannot create {what} ({' '.join(argv)}: {result.stderr.strip()}); "
            "create it by hand or pass --services-user"
        )
    log.info("created %s (the services and each agent component run as separate users)", what)


def ensure_run_all_accounts() -> None:
    """Everything `run-all` as root needs; see the table above."""
    ensure_group(AGENT_GROUP)
    ensure_group(FIREWALL_GROUP)
    ensure_user(PROXY_USER, AGENT_GROUP)
    ensure_user(DNS_USER, AGENT_GROUP)
    ensure_user(SERVICES_USER)


def berth_uids() -> set[int]:
    """The uids Berth's own processes may run as (root, the reconciler, proxies, DNS)."""
    uids = {0}
    for name in ("berth", PROXY_USER, DNS_USER, "berth-internal-proxy", "nobody"):
        try:
            uids.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            pass
    return uids


def check_services_user(entry: pwd.struct_passwd) -> None:
    """Services must not share a uid with any Berth process (nor be root)."""
    if entry.pw_uid in berth_uids():
        raise IdentityError(
            f"--services-user {entry.pw_name!r} (uid {entry.pw_uid}) is a uid Berth's own "
            f"processes use; services need one of their own, e.g. {SERVICES_USER}"
        )


def account_or_nobody(name: str) -> pwd.struct_passwd:
    """`name`'s account, or `nobody` where it was never made (a development machine)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return pwd.getpwnam("nobody")


def become(account: pwd.struct_passwd) -> str:
    """Switch this root process to `account` for good (the proxies and the DNS responder,
    after binding); returns its name."""
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)  # sets real, effective and saved ids: no way back
    if os.geteuid() == 0 or os.getuid() == 0:
        raise RuntimeError(f"still root after switching to {account.pw_name}")
    log.info("dropped root: running as %s (uid %d)", account.pw_name, account.pw_uid)
    return account.pw_name

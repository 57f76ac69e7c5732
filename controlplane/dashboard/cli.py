"""`berth controlplane user create NAME [--reset]`: make a dashboard login.

The password is read from stdin, never from the command line (where `ps` and shell
history would keep it): typed twice at a terminal, or the first line of piped input
(`echo "$PW" | berth controlplane user create alice`).
"""

import argparse
import asyncio
import getpass
import sys

from controlplane import audit
from controlplane.dashboard import users
from controlplane.db import Database
from controlplane.dburl import parse_db_url


def read_password(stdin_is_tty: bool) -> str:
    if stdin_is_tty:
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != first:
            raise ValueError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def user_command(args: argparse.Namespace) -> int:
    prog = "berth controlplane user create"
    try:
        users.check_user_name(args.name)
        password = read_password(sys.stdin.isatty())
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(set_user(args.db, args.name, password, args.reset))
    except ValueError as exc:
        hint = "; pass --reset to set a new password" if "already exists" in str(exc) else ""
        print(f"{prog}: {exc}{hint}", file=sys.stderr)
        return 1
    print(f"user {args.name!r} {'updated' if args.reset else 'created'}", file=sys.stderr)
    return 0


async def set_user(db_url: str, name: str, password: str, replace: bool) -> None:
    db = Database(parse_db_url(db_url))
    try:
        user_id = await users.set_user(db, name, password, replace=replace)
        await audit.record(
            db, "user.reset" if replace else "user.create", audit.cli_actor(),
            client_addr="local", target=user_id, detail={"name": name},
        )  # fmt: skip
    finally:
        await db.close()


def ensure_user(db_url: str, name: str, password: str) -> None:
    """Create `name` or reset its password (the demo, tests); synchronous."""
    asyncio.run(set_user(db_url, name, password, True))

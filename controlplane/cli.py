"""`berth controlplane serve|migrate|token ...`: run, migrate and administer a control plane.

    serve   [--db URL] [--bind HOST:PORT] [--public-url URL] [--workers N]
                                                                refuses an unmigrated DB
    migrate [--db URL]                                          brings the schema to the newest
    token create --name NAME [--db URL]                         prints a new admin token (once)
    token list [--db URL] | token revoke ID_OR_NAME [--db URL]
    user create NAME [--reset] [--db URL]                      dashboard login; password on stdin

`--db` defaults to $BERTH_DB, else sqlite:///./berth-controlplane.sqlite3.
"""

import argparse
import asyncio
import logging
import os
import sys

from agent.logs import setup_logging
from controlplane import enrollment, limits, migrate
from controlplane.db import Database
from controlplane.dburl import DEFAULT_DB_URL, parse_db_url
from controlplane.models import iso
from controlplane.settings import DEFAULT_BIND, ServerSettings

log = logging.getLogger("controlplane")


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=os.environ.get("BERTH_DB") or DEFAULT_DB_URL,
        metavar="URL",
        help="sqlite:///path/file.db or postgresql+psycopg://user:pass@host/db "
        "(default: $BERTH_DB or %(default)s)",
    )


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 64, got {raw!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="berth controlplane", description="Berth control plane.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the API and dashboard")
    _add_db(serve)
    serve.add_argument("--bind", default=DEFAULT_BIND, metavar="HOST:PORT")
    serve.add_argument(
        "--public-url",
        metavar="URL",
        help="URL agents use (default: from the request; /install.sh needs it set)",
    )
    serve.add_argument("--install-token-ttl", type=float, default=enrollment.DEFAULT_INSTALL_TOKEN_TTL_S,
                       metavar="SECONDS", help="install token lifetime (default %(default)g)")  # fmt: skip
    serve.add_argument("--wheelhouse", metavar="DIR",
                       help="serve DIR at /dist/ for install.sh (fill it: berth installer wheelhouse DIR)")  # fmt: skip
    serve.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                       help="server processes sharing the address (default %(default)s; "
                       "about one per core for large fleets)")  # fmt: skip
    serve.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                       help="serve agents' polls and heartbeats through the full app only "
                       "(for comparisons)")  # fmt: skip

    limits.add_arguments(serve)

    mig = sub.add_parser("migrate", help="create or upgrade the database schema")
    _add_db(mig)

    token = sub.add_parser("token", help="admin API tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    create = tsub.add_parser("create", help="create an admin token and print it")
    create.add_argument("--name", required=True)
    _add_db(create)
    lst = tsub.add_parser("list", help="list admin tokens (never the tokens themselves)")
    _add_db(lst)
    rev = tsub.add_parser("revoke", help="revoke admin tokens by id or name")
    rev.add_argument("token", metavar="ID_OR_NAME")
    _add_db(rev)

    user = sub.add_parser("user", help="dashboard users")
    usub = user.add_subparsers(dest="user_command", required=True)
    ucreate = usub.add_parser("create", help="create a dashboard user (password read from stdin)")
    ucreate.add_argument("name", metavar="NAME")
    ucreate.add_argument("--reset", action="store_true", help="reset the password if NAME exists")
    _add_db(ucreate)
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    setup_logging("controlplane")
    # Alembic narrates every connection at INFO; only `migrate` should say what it did
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        db_url = parse_db_url(args.db)
    except ValueError as exc:
        print(f"berth controlplane: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        before, after = migrate.upgrade(db_url)
        print(
            f"database {db_url.display()}: schema {before or '(empty)'} -> {after}", file=sys.stderr
        )
        return 0
    try:
        migrate.check_current(db_url)
    except migrate.SchemaOutdated as exc:
        print(f"berth controlplane: {exc}", file=sys.stderr)
        return 1
    if args.command == "serve":
        settings = ServerSettings(
            db_url=args.db, bind=args.bind, public_url=args.public_url,
            install_token_ttl_s=args.install_token_ttl, wheelhouse=args.wheelhouse,
            fast_path=args.fast_path, limits=limits.from_args(args),
        )  # fmt: skip
        if args.workers > 1:
            from controlplane.workers import serve_workers

            return serve_workers(settings, args.workers)
        from controlplane.server import serve

        return serve(settings)
    if args.command == "user":
        from controlplane.dashboard.cli import user_command

        return user_command(args)
    return asyncio.run(_token_command(args))


async def _token_command(args: argparse.Namespace) -> int:
    db = Database(parse_db_url(args.db))
    try:
        if args.token_command == "create":
            name = args.name.strip()
            if not name or len(name) > 100:
                print(
                    "berth controlplane token create: --name must be 1-100 characters",
                    file=sys.stderr,
                )
                return 2
            _, token = await enrollment.create_admin_token(db, name)
            print(token)
            return 0
        if args.token_command == "list":
            for row in await enrollment.list_admin_tokens(db):
                state = f"revoked {iso(row.revoked_at)}" if row.revoked_at else "active"
                print(f"{row.id}\t{row.name}\t{iso(row.created_at)}\t{state}")
            return 0
        count = await enrollment.revoke_admin_token(db, args.token)
        if not count:
            print(
                f"berth controlplane token revoke: no active token with id or name {args.token!r}",
                file=sys.stderr,
            )
            return 1
        print(f"revoked {count} token(s)", file=sys.stderr)
        return 0
    finally:
        await db.close()

"""`berth controlplane serve|migrate|token ...`: run, migrate and administer a control plane.

    serve   [--db URL] [--bind HOST:PORT] [--public-url URL] [--workers N]
                                                                refuses an unmigrated DB
    migrate [--db URL]                                          brings the schema to the newest
    token create --name NAME [--db URL]                         prints a new admin token (once)
    token list [--db URL] | token revoke ID_OR_NAME [--db URL]
    user create NAME [--reset] [--db URL]                      dashboard login; password on stdin
    secrets rotate [--db URL] [--secret-key-file PATH]          re-seal secrets under a new key

`serve --audit-retention-days DAYS` (default 365, 0 = forever) bounds the audit trail.

`--db` defaults to $BERTH_DB, else sqlite:///./berth-controlplane.sqlite3.
`--secret-key-file` (serve, migrate, secrets) defaults to $BERTH_SECRET_KEY_FILE, else the
SQLite database's path + ".secret-key" (./berth-controlplane.secret-key for PostgreSQL);
`migrate` creates it (0600) when missing.
"""

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from agent.logs import setup_logging
from controlplane import audit, enrollment, limits, migrate, status
from controlplane.clihelp import Command, add_commands, command_parser
from controlplane.db import Database
from controlplane.dburl import DEFAULT_DB_URL, DatabaseURL, parse_db_url
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


def _add_key_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secret-key-file",
        default=os.environ.get("BERTH_SECRET_KEY_FILE"),
        metavar="PATH",
        help="the key that seals secret env values (default: $BERTH_SECRET_KEY_FILE, else "
        "beside an SQLite database: <db file>.secret-key)",
    )


def _key_path(args: argparse.Namespace, db_url: DatabaseURL) -> Path:
    from controlplane.secrets import default_key_file

    return Path(args.secret_key_file) if args.secret_key_file else default_key_file(db_url)


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 64, got {raw!r}")
    return value


def _heartbeat_interval(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    low, high = status.MIN_HEARTBEAT_INTERVAL_S, status.MAX_HEARTBEAT_INTERVAL_S
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be {low:g} to {high:g} seconds, got {raw!r}")
    return value


COMMANDS = (
    Command("serve", "serve the API and dashboard",
            "berth controlplane serve --db sqlite:///berth.db --bind 0.0.0.0:8000"),
    Command("migrate", "create or upgrade the database schema",
            "berth controlplane migrate --db postgresql+psycopg://berth@db/berth"),
    Command("token", "admin API tokens: create, list, revoke",
            "berth controlplane token create --name ci"),
    Command("user", "dashboard users: create (password on stdin)",
            "berth controlplane user create alice"),
    Command("secrets", "the key that seals secret env values: rotate",
            "berth controlplane secrets rotate"),
)  # fmt: skip
SECRETS_COMMANDS = (
    Command("rotate", "re-seal every secret under a new key, while servers keep serving",
            "berth controlplane secrets rotate --secret-key-file /var/lib/berth/cp.secret-key"),
)  # fmt: skip
TOKEN_COMMANDS = (
    Command("create", "create an admin token and print it (once)",
            "berth controlplane token create --name ci"),
    Command("list", "list admin tokens (never the tokens themselves)",
            "berth controlplane token list"),
    Command("revoke", "revoke admin tokens by id or name", "berth controlplane token revoke ci"),
)  # fmt: skip
USER_COMMANDS = (
    Command("create", "create a dashboard user (password read from stdin)",
            "echo \"$PW\" | berth controlplane user create alice"),
)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser, cmds = command_parser("berth controlplane", "Berth control plane.", COMMANDS)

    serve = cmds["serve"]
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
    serve.add_argument("--allow-file-repos", action="append", default=[], metavar="DIR",
                       help="allow file:// repositories under DIR (repeatable; default: none)")  # fmt: skip
    serve.add_argument("--heartbeat-interval", type=_heartbeat_interval,
                       default=status.DEFAULT_HEARTBEAT_INTERVAL_S, metavar="SECONDS",
                       help="agents report at least this often, and on every change; "
                       "stale and offline count missed intervals (default %(default)g, "
                       "at most 60)")  # fmt: skip
    serve.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                       help="serve agents' polls and heartbeats through the full app only "
                       "(for comparisons)")  # fmt: skip
    serve.add_argument("--audit-retention-days", type=int, default=audit.DEFAULT_RETENTION_DAYS,
                       metavar="DAYS", help="delete audit records older than DAYS "
                       "(default %(default)s; 0 keeps every record)")  # fmt: skip
    serve.add_argument("--notify-interval", type=float, default=2.0, metavar="SECONDS",
                       help="how often notifications are looked for and sent (default %(default)g)")  # fmt: skip
    serve.add_argument("--notify-lease", type=float, default=60.0, metavar="SECONDS",
                       help="a notification being sent is resent after this long without an "
                       "outcome, e.g. after a crash (default %(default)g)")  # fmt: skip
    serve.add_argument("--notify-backoff", type=float, default=5.0, metavar="SECONDS",
                       help="wait before a failed notification's first retry; doubles per "
                       "attempt, at most 8 attempts (default %(default)g)")  # fmt: skip

    _add_key_file(serve)
    limits.add_arguments(serve)

    _add_db(cmds["migrate"])
    _add_key_file(cmds["migrate"])

    rotate = add_commands(cmds["secrets"], SECRETS_COMMANDS, "secrets_command")["rotate"]
    _add_db(rotate)
    _add_key_file(rotate)

    tsub = add_commands(cmds["token"], TOKEN_COMMANDS, "token_command")
    tsub["create"].add_argument("--name", required=True)
    _add_db(tsub["create"])
    _add_db(tsub["list"])
    tsub["revoke"].add_argument("token", metavar="ID_OR_NAME")
    _add_db(tsub["revoke"])

    usub = add_commands(cmds["user"], USER_COMMANDS, "user_command")
    ucreate = usub["create"]
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
        from controlplane.secrets import SecretKeyUnavailable, ensure_key_file

        key_path = _key_path(args, db_url)
        try:
            made = ensure_key_file(key_path)
        except (OSError, SecretKeyUnavailable) as exc:
            print(f"berth controlplane migrate: secret key file {key_path}: {exc}", file=sys.stderr)
            return 1
        before, after = migrate.upgrade(db_url)
        print(
            f"database {db_url.display()}: schema {before or '(empty)'} -> {after}", file=sys.stderr
        )
        if made:
            print(f"created the secret key file {key_path} (0600)", file=sys.stderr)
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
            fast_path=args.fast_path, secret_key_file=str(_key_path(args, db_url)),
            file_repo_roots=tuple(os.path.abspath(d) for d in args.allow_file_repos),
            limits=limits.from_args(args),
            heartbeat_interval_s=args.heartbeat_interval,
            audit_retention_days=args.audit_retention_days,
            notify_interval_s=args.notify_interval, notify_lease_s=args.notify_lease,
            notify_backoff_s=args.notify_backoff,
        )  # fmt: skip
        if args.workers > 1:
            from controlplane.workers import serve_workers

            return serve_workers(settings, args.workers)
        from controlplane.server import serve

        return serve(settings)
    if args.command == "user":
        from controlplane.dashboard.cli import user_command

        return user_command(args)
    if args.command == "secrets":
        return asyncio.run(_rotate_command(db_url, _key_path(args, db_url)))
    return asyncio.run(_token_command(args))


async def _rotate_command(db_url: DatabaseURL, key_path: Path) -> int:
    from controlplane.rotation import rotate
    from controlplane.secrets import SecretKeyUnavailable

    db = Database(db_url)
    try:
        done = await rotate(db, key_path)
    except (OSError, SecretKeyUnavailable) as exc:
        print(f"berth controlplane secrets rotate: {exc}", file=sys.stderr)
        return 1
    finally:
        await db.close()
    print(
        f"re-sealed {done.resealed} item(s) under key {done.key_id} ({done.passes} pass(es)); "
        f"{key_path} holds only the new key. The old key is in {done.previous_file} for "
        "backups taken before now: delete it when none needs it.",
        file=sys.stderr,
    )
    return 0


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
            token_id, token = await enrollment.create_admin_token(db, name)
            await audit.record(
                db, "admin_token.create", audit.cli_actor(), client_addr="local",
                target=token_id, detail={"name": name},
            )  # fmt: skip
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
        await audit.record(
            db, "admin_token.revoke", audit.cli_actor(), client_addr="local",
            target=args.token, detail={"count": count},
        )  # fmt: skip
        print(f"revoked {count} token(s)", file=sys.stderr)
        return 0
    finally:
        await db.close()

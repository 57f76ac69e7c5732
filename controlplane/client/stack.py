"""`berth stack ...` and `berth token create`: stacks and install tokens."""

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from controlplane.client.api import Client, ClientError
from controlplane.clihelp import Command, command_parser
from controlplane.diffs import diff_documents, render_text


def load_stack_file(path: Path) -> dict[str, Any]:
    """A stack body from TOML (or JSON when the file ends in .json)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        body = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ClientError(f"{path}: {exc}") from exc
    if not isinstance(body, dict):
        raise ClientError(f"{path}: must contain one stack (a table / object)")
    return body


def confirm(question: str, stdin: Any = sys.stdin, err: Any = sys.stderr) -> bool:
    err.write(f"{question} [y/N] ")
    err.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


def apply(
    client: Client, path: Path, out: Any = sys.stdout, *, yes: bool = False,
    interactive: bool | None = None,
) -> int:  # fmt: skip
    """Show the field diff the file would make, ask (on a terminal), then save it."""
    body = load_stack_file(path)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ClientError(f'{path}: the stack needs a name (name = "...")')
    preview = client.call("POST", "/stacks/preview", body)
    if preview["exists"] and preview["empty"]:
        print(f"stack {name}: nothing to change", file=sys.stderr)
        return 0
    out.write(render_text(preview, f"stack {name}"))
    out.flush()
    if not yes:
        tty = sys.stdin.isatty() if interactive is None else interactive
        if not tty:
            print(
                "berth stack apply: not applied: stdin is not a terminal, so nobody can "
                "confirm; pass --yes to apply without asking",
                file=sys.stderr,
            )
            return 1
        if not confirm(f"apply these changes to {name}?"):
            print("not applied", file=sys.stderr)
            return 1
    if not preview["exists"]:
        created = client.call("POST", "/stacks", body)
        print(f"created stack {name} ({created['id']}) version {created['version']}", file=out)
        return 0
    updated = client.call("PUT", f"/stacks/{preview['stack_id']}", body)
    if not updated.get("changed"):
        print(f"stack {name}: nothing to change", file=sys.stderr)
        return 0
    print(f"updated stack {name} to version {updated['version']}", file=out)
    return 0


STACK_COMMANDS = (
    Command("apply", "create or update a stack from a file (shows the diff, asks)",
            "berth stack apply -f stack.toml [--yes]"),
    Command("list", "list stacks", "berth stack list"),
    Command("get", "print a stack as JSON", "berth stack get web"),
    Command("versions", "list a stack's versions", "berth stack versions web"),
    Command("diff", "field-level diff between two versions", "berth stack diff web 3 5"),
    Command("refresh", "re-resolve git refs (a new version if a commit moved)",
            "berth stack refresh web"),
    Command("rollback", "publish an earlier version's content as a new version",
            "berth stack rollback web 3"),
    Command("delete", "delete a stack", "berth stack delete web"),
    Command("instances", "a stack's servers: status, agent version, behind the served one?",
            "berth stack instances web"),
    Command("agent-upgrades", "the rolling agent upgrade: show, or switch it on or off",
            "berth stack agent-upgrades web --auto on"),
)  # fmt: skip


def _stack_parser() -> argparse.ArgumentParser:
    p, parsers = command_parser(
        "berth stack", "Manage stacks ($BERTH_URL, $BERTH_TOKEN).", STACK_COMMANDS
    )
    parsers["apply"].add_argument("-f", "--file", type=Path, required=True, metavar="stack.toml")
    parsers["apply"].add_argument(
        "-y", "--yes", action="store_true", help="apply without asking for confirmation"
    )
    for name in ("get", "versions", "refresh", "delete", "diff", "rollback", "instances",
                 "agent-upgrades"):  # fmt: skip
        parsers[name].add_argument("stack", metavar="NAME_OR_ID")
    parsers["rollback"].add_argument("version", type=int)
    parsers["diff"].add_argument("a", type=int, metavar="A", help="the older version")
    parsers["diff"].add_argument("b", type=int, metavar="B", help="the newer version")
    parsers["diff"].add_argument("--json", action="store_true", help="print the diff as JSON")
    parsers["agent-upgrades"].add_argument(
        "--auto", choices=("on", "off"), help="switch automatic upgrades on or off"
    )
    return p


def main_stack(argv: list[str]) -> int:
    args = _stack_parser().parse_args(argv)
    try:
        client = Client.from_env()
        if args.command == "apply":
            return apply(client, args.file, yes=args.yes)
        if args.command == "list":
            for s in client.call("GET", "/stacks")["stacks"]:
                services = ",".join(x["name"] for x in s["services"])
                print(f"{s['id']}\t{s['name']}\tv{s['version']}\t{services}")
            return 0
        stack = client.stack(args.stack)
        if args.command == "get":
            print(
                json.dumps(
                    client.call("GET", f"/stacks/{stack['id']}"), indent=2, ensure_ascii=False
                )
            )
        elif args.command == "versions":
            for v in client.call("GET", f"/stacks/{stack['id']}/versions")["versions"]:
                print(f"v{v['version']}\t{v['created_at']}\t{v['reason']}\t{v['hash'][:12]}")
        elif args.command == "diff":
            diff = client.call("GET", f"/stacks/{stack['id']}/versions/{args.a}/diff/{args.b}")
            if args.json:
                print(json.dumps(diff, indent=2, ensure_ascii=False))
            else:
                sys.stdout.write(render_text(diff, f"stack {stack['name']}"))
        elif args.command == "instances":
            for i in client.call("GET", f"/stacks/{stack['id']}/instances")["instances"]:
                served = i.get("served_version")
                behind = (
                    f"behind {served}" if i.get("agent_behind") else "current" if served else "-"
                )
                print(f"{i['id']}\t{i['hostname']}\t{i['status']}\t{i.get('state') or '-'}\t"
                      f"agent {i.get('agent_version') or '-'}\t{behind}")  # fmt: skip
        elif args.command == "agent-upgrades":
            path = f"/stacks/{stack['id']}/agent-upgrades"
            if args.auto:
                got = client.call("PUT", path, {"auto": args.auto == "on"})
            else:
                got = client.call("GET", path)
            print(f"automatic agent upgrades: {got['state']}: {got['message']}")
        elif args.command == "refresh":
            got = client.call("POST", f"/stacks/{stack['id']}/refresh")
            print(
                f"stack {stack['name']} version {got['version']}"
                + (" (new)" if got["changed"] else " (unchanged)")
            )
        elif args.command == "delete":
            client.call("DELETE", f"/stacks/{stack['id']}")
            print(f"deleted stack {stack['name']}", file=sys.stderr)
        elif args.command == "rollback":
            before = client.call("GET", f"/stacks/{stack['id']}/desired-state")
            got = client.call("POST", f"/stacks/{stack['id']}/rollback", {"version": args.version})
            if got["changed"]:
                after = client.call("GET", f"/stacks/{stack['id']}/desired-state")
                sys.stdout.write(
                    render_text(diff_documents(before, after), f"stack {stack['name']}")
                )
                print(
                    f"rolled back stack {stack['name']} to the content of v{args.version}: now version {got['version']}"
                )
        return 0
    except ClientError as exc:
        print(f"berth stack: {exc}", file=sys.stderr)
        return 1


TOKEN_COMMANDS = (
    Command("create", "create a one-time install token for a stack",
            "berth token create --stack web --ttl 3600"),
)  # fmt: skip


def main_token(argv: list[str]) -> int:
    p, parsers = command_parser(
        "berth token", "Install tokens ($BERTH_URL, $BERTH_TOKEN).", TOKEN_COMMANDS
    )
    create = parsers["create"]
    create.add_argument("--stack", required=True, metavar="NAME_OR_ID")
    create.add_argument(
        "--ttl", type=float, metavar="SECONDS", help="lifetime (default: the server's, 1 h)"
    )
    args = p.parse_args(argv)
    try:
        client = Client.from_env()
        stack = client.stack(args.stack)
        body = {"ttl_s": args.ttl} if args.ttl is not None else None
        tok = client.call("POST", f"/stacks/{stack['id']}/install-tokens", body)
    except ClientError as exc:
        print(f"berth token: {exc}", file=sys.stderr)
        return 1
    print(tok["token"])
    print(
        f"expires {tok['expires_at']}; on the server run:\n  {tok['install_command']}",
        file=sys.stderr,
    )
    return 0

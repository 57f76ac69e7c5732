"""`berth stack ...`, `berth token ...` and `berth audit`: the user API from a terminal.

    berth stack apply -f stack.toml [--yes]   show the field diff the file would make,
                                        ask on a terminal, then create or update the stack
    berth stack list | get NAME | versions NAME | refresh NAME | rollback NAME VERSION
    berth stack diff NAME A B | delete NAME
    berth audit [--actor A] [--stack S] [--action X] [--since T] [--until T]
    berth notify list | add NAME --kind K ... | remove | test | log NAME | events
    berth token create --stack NAME [--ttl SECONDS]   an install token (stdout), with the
                                                      install command on stderr

The control plane is $BERTH_URL (default http://127.0.0.1:8000) and the admin token
$BERTH_TOKEN. A stack is named by name or id. Exit status: 0 ok, 1 the API refused, 2 usage.
"""

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import requests

from controlplane.clihelp import Command, HelpParser, command_parser
from controlplane.diffs import diff_documents, render_text

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(Exception):
    """Something the user must fix; the message says what."""


class Client:
    def __init__(self, base_url: str, token: str | None, timeout_s: float = 60.0) -> None:
        self.base = base_url.rstrip("/") + "/api/v1"
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.timeout_s = timeout_s

    @classmethod
    def from_env(cls) -> "Client":
        token = os.environ.get("BERTH_TOKEN")
        if not token:
            raise ClientError(
                "BERTH_TOKEN is not set: export BERTH_TOKEN=$(berth controlplane token create --name me)"
            )
        return cls(os.environ.get("BERTH_URL") or DEFAULT_URL, token)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            resp = self.http.request(method, self.base + path, json=body, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach the control plane at {self.base}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                err = resp.json()
                where = f" ({err['field']})" if err.get("field") else ""
                msg = f"{err.get('error', 'error')}{where}: {err.get('detail', '')}"
            except (ValueError, AttributeError):
                msg = resp.text[:300]
            raise ClientError(f"{method} {path} → HTTP {resp.status_code}: {msg}")
        return resp.json() if resp.content else None

    def find_stack(self, name_or_id: str) -> dict[str, Any] | None:
        for stack in self.call("GET", "/stacks")["stacks"]:
            if name_or_id in (stack["id"], stack["name"]):
                return stack
        return None

    def stack(self, name_or_id: str) -> dict[str, Any]:
        stack = self.find_stack(name_or_id)
        if stack is None:
            raise ClientError(f"no stack named {name_or_id!r}; `berth stack list` shows them")
        return stack


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


def _audit_parser() -> argparse.ArgumentParser:
    p = HelpParser(
        prog="berth audit",
        description="Who changed what: the control plane's audit trail, newest first.",
        epilog="examples:\n  berth audit\n  berth audit --stack web --action stack. --since 2026-11-01T00:00:00Z\n"
        "  berth audit --actor alice --limit 20 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--actor", help="a token or user name")
    p.add_argument("--stack", metavar="NAME_OR_ID")
    p.add_argument("--action", help="e.g. stack.update, or a prefix ending in '.' (stack.)")
    p.add_argument("--since", metavar="TIME", help="ISO 8601, e.g. 2026-11-29T00:00:00Z")
    p.add_argument("--until", metavar="TIME")
    p.add_argument("--before", type=int, metavar="SEQ", help="the page before this record")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    return p


def audit_line(r: dict[str, Any]) -> str:
    what = r["stack"]["name"] or r["stack"]["id"] if r["stack"] else (r["target"] or "")
    if r["version_from"] is not None or r["version_to"] is not None:
        what += f" v{r['version_from'] or '-'}->v{r['version_to'] or '-'}"
    actor = f"{r['actor']['kind']}:{r['actor']['name']}"
    return (
        f"{r['seq']}\t{r['at']}\t{r['action']}\t{actor}\t{r['client_addr'] or '-'}"
        f"\t{what}\t{r['request_id'] or '-'}"
    )


def main_audit(argv: list[str]) -> int:
    args = _audit_parser().parse_args(argv)
    query = {k: v for k in ("actor", "stack", "action", "since", "until", "before", "limit")
             if (v := getattr(args, k)) is not None}  # fmt: skip
    try:
        got = Client.from_env().call("GET", "/audit?" + urlencode(query))
    except ClientError as exc:
        print(f"berth audit: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(got, indent=2, ensure_ascii=False))
        return 0
    for r in got["records"]:
        print(audit_line(r))
    if got["next_before"]:
        print(f"(more: --before {got['next_before']})", file=sys.stderr)
    return 0


NOTIFY_COMMANDS = (
    Command("list", "list notification channels", "berth notify list --stack web"),
    Command("add", "add a channel (webhook, slack or email)",
            "berth notify add ops --kind slack --url https://hooks.slack.com/services/T/B/X"),
    Command("remove", "delete a channel", "berth notify remove ops"),
    Command("test", "send a test message through a channel", "berth notify test ops"),
    Command("log", "a channel's delivery log", "berth notify log ops"),
    Command("events", "the events a channel can subscribe to", "berth notify events"),
)  # fmt: skip


def _notify_parser() -> argparse.ArgumentParser:
    p, parsers = command_parser(
        "berth notify", "Notification channels ($BERTH_URL, $BERTH_TOKEN).", NOTIFY_COMMANDS
    )
    parsers["list"].add_argument("--stack", metavar="NAME_OR_ID", help="only this stack's")
    add = parsers["add"]
    add.add_argument("name", metavar="NAME")
    add.add_argument("--kind", required=True, choices=("webhook", "slack", "email"))
    add.add_argument("--url", help="webhook / slack: where to POST")
    add.add_argument("--stack", metavar="NAME_OR_ID", help="only this stack (default: all)")
    add.add_argument("--events", metavar="A,B", help="comma-separated (default: every event)")
    add.add_argument("--rate", type=int, metavar="N", help="at most N messages an hour")
    add.add_argument("--window", type=int, metavar="SECONDS",
                     help="group repeats of an event within this window")  # fmt: skip
    add.add_argument("--smtp-host", metavar="HOST")
    add.add_argument("--smtp-port", type=int, metavar="PORT")
    add.add_argument("--from", dest="sender", metavar="ADDRESS")
    add.add_argument("--to", action="append", metavar="ADDRESS", help="repeatable")
    add.add_argument("--username")
    add.add_argument("--no-starttls", action="store_true", help="plain SMTP (not advised)")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the SMTP password from stdin"
    )
    for name in ("remove", "test", "log"):
        parsers[name].add_argument("channel", metavar="NAME_OR_ID")
    return p


def _channel_body(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"name": args.name, "kind": args.kind}
    if args.stack:
        body["stack"] = client.stack(args.stack)["id"]
    if args.events:
        body["events"] = [e.strip() for e in args.events.split(",") if e.strip()]
    optional = {"url": args.url, "rate_per_hour": args.rate, "group_window_s": args.window,
                "smtp_host": args.smtp_host, "smtp_port": args.smtp_port, "from": args.sender,
                "to": args.to, "username": args.username}  # fmt: skip
    body.update({k: v for k, v in optional.items() if v is not None})
    if args.no_starttls:
        body["starttls"] = False
    if args.password_stdin:
        body["password"] = sys.stdin.readline().rstrip("\r\n")
    return body


def main_notify(argv: list[str]) -> int:
    args = _notify_parser().parse_args(argv)
    try:
        client = Client.from_env()
        if args.command == "events":
            for e in client.call("GET", "/notifications/events")["events"]:
                print(f"{e['name']}\t{e['description']}")
        elif args.command == "list":
            query = f"?stack={client.stack(args.stack)['id']}" if args.stack else ""
            for c in client.call("GET", f"/notifications/channels{query}")["channels"]:
                where = c.get("url") or ",".join(c.get("to") or [])
                events = ",".join(c["events"]) or "all events"
                state = "on" if c["enabled"] else "off"
                print(f"{c['id']}\t{c['name']}\t{c['kind']}\t{c['stack'] or 'all stacks'}"
                      f"\t{events}\t{state}\t{where}")  # fmt: skip
        elif args.command == "add":
            made = client.call("POST", "/notifications/channels", _channel_body(client, args))
            print(f"added channel {made['name']} ({made['id']})", file=sys.stderr)
            if made["kind"] == "webhook":
                print(f"signing secret (X-Berth-Signature-256): {made['secret']}")
        else:
            ref = quote(args.channel, safe="")
            if args.command == "remove":
                client.call("DELETE", f"/notifications/channels/{ref}")
                print(f"removed channel {args.channel}", file=sys.stderr)
            elif args.command == "test":
                client.call("POST", f"/notifications/channels/{ref}/test")
                print(
                    f"test message queued on {args.channel}; see: berth notify log {args.channel}"
                )
            else:
                got = client.call("GET", f"/notifications/channels/{ref}/deliveries")
                for d in got["deliveries"]:
                    outcome = "ok" if d["ok"] else f"failed: {d['error']}"
                    print(f"{d['at']}\tattempt {d['attempt']}\t{d['events']} event(s)\t{outcome}"
                          f"\t{d['summary']}")  # fmt: skip
                waiting = {k: v for k, v in got["backlog"].items() if k != "sent"}
                if waiting:
                    print("backlog: " + ", ".join(f"{v} {k}" for k, v in waiting.items()),
                          file=sys.stderr)  # fmt: skip
        return 0
    except ClientError as exc:
        print(f"berth notify: {exc}", file=sys.stderr)
        return 1

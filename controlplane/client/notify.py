"""`berth notify ...`: notification channels and their delivery logs."""

import argparse
import sys
from typing import Any
from urllib.parse import quote

from controlplane.client.api import Client, ClientError
from controlplane.clihelp import Command, command_parser

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

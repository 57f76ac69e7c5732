"""`berth audit`: the audit trail, newest first."""

import argparse
import json
import sys
from typing import Any
from urllib.parse import urlencode

from controlplane.client.api import Client, ClientError
from controlplane.clihelp import HelpParser


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

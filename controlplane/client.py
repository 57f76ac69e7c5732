"""`berth stack ...` and `berth token ...`: the user API from a terminal.

    berth stack apply -f stack.toml     create or update the stack named in the file; print
                                        the diff of the desired state and the new version
    berth stack list | get NAME | versions NAME | refresh NAME | rollback NAME VERSION
    berth stack delete NAME
    berth token create --stack NAME [--ttl SECONDS]   an install token (stdout), with the
                                                      install command on stderr

The control plane is $BERTH_URL (default http://127.0.0.1:8000) and the admin token
$BERTH_TOKEN. A stack is named by name or id. Exit status: 0 ok, 1 the API refused, 2 usage.
"""

import argparse
import difflib
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import requests

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


def document_diff(before: dict[str, Any] | None, after: dict[str, Any], label: str) -> str:
    def lines(doc: dict[str, Any] | None) -> list[str]:
        if doc is None:
            return []
        text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        return text.splitlines(keepends=True)

    return "".join(
        difflib.unified_diff(lines(before), lines(after), f"{label} (current)", f"{label} (new)")
    )


def apply(client: Client, path: Path, out: Any = sys.stdout) -> int:
    body = load_stack_file(path)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ClientError(f'{path}: the stack needs a name (name = "...")')
    existing = client.find_stack(name.strip())
    if existing is None:
        created = client.call("POST", "/stacks", body)
        after = client.call("GET", f"/stacks/{created['id']}/desired-state")
        out.write(document_diff(None, after, name))
        print(f"created stack {name} ({created['id']}) version {created['version']}", file=out)
        return 0
    before = client.call("GET", f"/stacks/{existing['id']}/desired-state")
    updated = client.call("PUT", f"/stacks/{existing['id']}", body)
    if not updated.get("changed"):
        return 0  # nothing changed: print nothing
    after = client.call("GET", f"/stacks/{existing['id']}/desired-state")
    out.write(document_diff(before, after, name))
    print(f"updated stack {name} to version {updated['version']}", file=out)
    return 0


def _stack_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="berth stack", description="Manage stacks ($BERTH_URL, $BERTH_TOKEN)."
    )
    sub = p.add_subparsers(dest="command", required=True)
    ap = sub.add_parser("apply", help="create or update a stack from a file")
    ap.add_argument("-f", "--file", type=Path, required=True, metavar="stack.toml")
    sub.add_parser("list", help="list stacks")
    for name, text in (("get", "print a stack as JSON"), ("versions", "list a stack's versions"),
                       ("refresh", "re-resolve git refs"), ("delete", "delete a stack")):  # fmt: skip
        sp = sub.add_parser(name, help=text)
        sp.add_argument("stack", metavar="NAME_OR_ID")
    rb = sub.add_parser("rollback", help="publish an earlier version's content as a new version")
    rb.add_argument("stack", metavar="NAME_OR_ID")
    rb.add_argument("version", type=int)
    return p


def main_stack(argv: list[str]) -> int:
    args = _stack_parser().parse_args(argv)
    try:
        client = Client.from_env()
        if args.command == "apply":
            return apply(client, args.file)
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
                sys.stdout.write(document_diff(before, after, stack["name"]))
                print(
                    f"rolled back stack {stack['name']} to the content of v{args.version}: now version {got['version']}"
                )
        return 0
    except ClientError as exc:
        print(f"berth stack: {exc}", file=sys.stderr)
        return 1


def main_token(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="berth token", description="Install tokens ($BERTH_URL, $BERTH_TOKEN)."
    )
    sub = p.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a one-time install token for a stack")
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

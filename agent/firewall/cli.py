"""``berth firewall status|plan|apply|confirm|revert``: the helper's operations for
operators, the installer and tests.

The command talks to a running helper (the socket under ``--run-dir``) when one
answers. On an installed server it finds that helper by default: the installer writes
the agent's options (``--run-dir`` among them) to ``/etc/berth/agent.env``, read here
(``--agent-env`` points elsewhere; ``--run-dir`` overrides). While a helper is installed
the command never acts in-process: a helper that does not answer is an error, not a
reason to work on a separate state the helper (and the uninstaller's revert) would
never see; ``--in-process`` forces it, on the helper's own state directory by default.

Without an installed helper (inside a test's network namespace, before the agent is
installed) it acts in-process on ``--state-dir``. An in-process apply with a confirm
timeout starts a detached timer (`agent.firewall.autorevert`) that reverts it unless
``berth firewall confirm`` comes first.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from agent.bus.endpoints import BusEndpoints
from agent.bus.firewall import (
    DEFAULT_CONFIRM_TIMEOUT_S,
    DEFAULT_SSH_PORT,
    ApplyRequest,
    ConfirmRequest,
    FirewallClient,
    FirewallUnavailable,
    Request,
    RequestError,
    RevertRequest,
    SshClient,
    StatusRequest,
    parse_request,
)
from agent.bus.firewallstatus import FirewallReply
from agent.firewall.autorevert import spawn_timer
from agent.firewall.engine import Firewall, FirewallConfig
from agent.firewall.tools import ToolError
from agent.firewall.tunnel import DEFAULT_METRICS
from agent.schema.modes import SECURITY_MODES
from agent.settings import DEFAULT_STATE_DIR, parse_hostport
from agent.statelayout import StateLayout

PROBE_TIMEOUT_S = 2.0
# as the installer writes them (installer/layout.py, systemd/berth-firewall.service)
DEFAULT_AGENT_ENV = Path("/etc/berth/agent.env")
INSTALLED_STATE_DIR = Path("/var/lib/berth-firewall")
# request fields as the operator typed them
FLAGS = {
    "options.proxy_port": "--proxy-port",
    "options.ssh_port": "--ssh-port",
    "options.ssh_cidrs": "--ssh-cidr",
    "confirm_timeout_s": "--confirm-timeout",
    "control_plane": "--control-plane",
    "consent_block_ssh": "--consent-block-ssh",
}


# the verbs, for `berth firewall --help`: one line each, with an example
ACTIONS_HELP = """commands:
  status   the mode in force, its backend and any pending confirmation
             e.g. berth firewall status --json
  plan     the rules a mode would install, changing nothing
             e.g. berth firewall plan --mode proxy-only --proxy-port 8080 --ssh-cidr 10.0.0.0/8
  apply    install a mode, reverted unless confirmed within --confirm-timeout
             e.g. berth firewall apply --mode tunnel-only --consent-block-ssh
  confirm  keep the mode just applied (stops its automatic revert)
             e.g. berth firewall confirm
  revert   undo the last apply, or restore the firewall as before Berth
             e.g. berth firewall revert --to baseline
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="berth firewall", description=__doc__.split("\n\n")[0], epilog=ACTIONS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("action", choices=("status", "plan", "apply", "confirm", "revert"),
                   metavar="COMMAND", help="one of the commands below")  # fmt: skip
    p.add_argument("--mode", choices=SECURITY_MODES, help="security mode (plan, apply)")
    p.add_argument("--proxy-port", type=int, help="external proxy port (proxy-only)")
    p.add_argument("--ssh-port", type=int, default=DEFAULT_SSH_PORT)
    p.add_argument("--ssh-cidr", action="append", default=[], metavar="CIDR",
                   help="allow SSH from this network (repeatable; none = no SSH)")  # fmt: skip
    p.add_argument("--backend", choices=("auto", "ufw", "nftables"), default="auto")
    p.add_argument("--confirm-timeout", type=float, default=DEFAULT_CONFIRM_TIMEOUT_S,
                   metavar="SECONDS", help="revert unless confirmed in time (0: never)")  # fmt: skip
    p.add_argument(
        "--control-plane", metavar="URL", help="must stay reachable (checked before and after)"
    )
    p.add_argument(
        "--consent-block-ssh", action="store_true", help="accept that tunnel-only blocks SSH"
    )
    p.add_argument("--allow-ssh-lockout", action="store_true",
                   help="apply even if your SSH session's address is outside every --ssh-cidr")  # fmt: skip
    p.add_argument("--to", choices=("previous", "baseline"), default="previous",
                   help="revert: undo the last apply, or restore the firewall as before Berth")  # fmt: skip
    p.add_argument("--state-dir", type=Path,
                   help=f"in-process state (default: {INSTALLED_STATE_DIR} when a helper is "
                   f"installed, else {DEFAULT_STATE_DIR})")  # fmt: skip
    p.add_argument("--run-dir", type=Path,
                   help="the helper's socket directory (default: the installed agent's "
                   "--run-dir from --agent-env, else STATE_DIR/run)")  # fmt: skip
    p.add_argument("--agent-env", type=Path, default=DEFAULT_AGENT_ENV, metavar="FILE",
                   help="the installed agent's options (default %(default)s); present "
                   "means a helper is installed")  # fmt: skip
    p.add_argument("--in-process", action="store_true",
                   help="if the installed helper does not answer, act in this process on "
                   "its state (only with that helper stopped for good)")  # fmt: skip
    p.add_argument(
        "--tunnel-metrics", metavar="HOST:PORT", help="cloudflared metrics (in-process status)"
    )
    p.add_argument("--json", action="store_true", help="print the reply as JSON")
    return p


@dataclass(frozen=True)
class Location:
    """Where the helper listens and which state an in-process action would use."""

    state_dir: Path
    run_dir: Path
    installed: bool  # a helper is installed (the agent's env file exists)


def agent_env_args(text: str) -> list[str]:
    """The options in an agent env file (`BERTH_AGENT_ARGS=...`, split on spaces)."""
    for line in text.splitlines():
        if line.startswith("BERTH_AGENT_ARGS="):
            return line.partition("=")[2].split()
    return []


def locate(state_dir: Path | None, run_dir: Path | None, agent_env: str | None) -> Location:
    """Explicit flags win; else the installed agent's (`agent_env`: its env file's text,
    None when no agent is installed); else the uninstalled defaults."""
    installed = agent_env is not None
    args = agent_env_args(agent_env or "")
    if run_dir is None and "--run-dir" in args[:-1]:
        run_dir = Path(args[args.index("--run-dir") + 1])
    state = state_dir or (INSTALLED_STATE_DIR if installed else DEFAULT_STATE_DIR)
    return Location(state.resolve(), (run_dir or state / "run").resolve(), installed)


def _read_agent_env(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ""  # there but unreadable: installed all the same (never act in-process)


def build_request(args: argparse.Namespace, env: dict[str, str]) -> Request:
    """Turn arguments into a request, validated exactly as the helper validates it."""
    if args.action == "status":
        req: Request = StatusRequest()
    elif args.action == "confirm":
        req = ConfirmRequest()
    elif args.action == "revert":
        req = RevertRequest(to=args.to)
    else:
        if args.mode is None:
            raise RequestError("mode", f"--mode is required: one of {', '.join(SECURITY_MODES)}")
        body = {
            "command": args.action,
            "mode": args.mode,
            "backend": args.backend,
            "options": {
                "proxy_port": args.proxy_port,
                "ssh_port": args.ssh_port,
                "ssh_cidrs": args.ssh_cidr,
            },
        }
        if args.action == "apply":
            client = SshClient.from_env(env.get("SSH_CONNECTION"))
            body |= {
                "confirm_timeout_s": args.confirm_timeout,
                "control_plane": args.control_plane,
                "consent_block_ssh": args.consent_block_ssh,
                "allow_ssh_lockout": args.allow_ssh_lockout,
                "ssh_client": client and {"ip": client.ip, "server_port": client.server_port},
            }
        req = parse_request(json.dumps(body).encode())
    return req


def _ask_consent() -> bool:
    print("tunnel-only blocks ALL inbound traffic, SSH included; you will reach this server",
          "only through the tunnel. Type 'yes' to go on: ", end="", file=sys.stderr)  # fmt: skip
    return sys.stdin.readline().strip().lower() == "yes"


def _helper(run_dir: Path) -> FirewallClient | None:
    """A client of the helper listening under `run_dir`, if one answers."""
    endpoints = BusEndpoints(run_dir)
    if not endpoints.firewall_path.exists():
        return None
    client = FirewallClient(endpoints)
    try:
        client.request(StatusRequest(), PROBE_TIMEOUT_S)
    except FirewallUnavailable:
        print(f"berth firewall: nothing answers on {endpoints.firewall_path}", file=sys.stderr)
        return None
    return client


def _in_process(args: argparse.Namespace, req: Request) -> FirewallReply:
    metrics = (
        parse_hostport(args.tunnel_metrics, "--tunnel-metrics")
        if args.tunnel_metrics
        else DEFAULT_METRICS
    )
    config = FirewallConfig(state_dir=StateLayout(args.state_dir).firewall, tunnel_metrics=metrics)
    engine = Firewall(config)
    engine.expire()  # an apply left overdue or cut short while nobody was watching
    reply = engine.handle(req)
    pending = engine.store.load().pending
    if isinstance(req, ApplyRequest) and reply.ok and pending and pending.until:
        pid = spawn_timer(config.state_dir, pending.id, pending.until)
        engine.set_timer_pid(pending.id, pid)
    return reply


def _print(reply: FirewallReply) -> None:
    for line in reply.rules:
        print(line)
    for line in reply.changes:
        print(f"changed: {line}" if reply.command != "plan" else f"# {line}")
    s = reply.status
    if s is not None and reply.command in ("status", "apply", "confirm", "revert"):
        print(f"mode: {s.mode}  exposure: {s.exposure}  backend: {s.backend or '-'}")
        if s.tunnel:
            print(f"tunnel: {s.tunnel}")
        if s.pending_confirm_until:
            left = max(0.0, s.pending_confirm_until - time.time())
            print(f"awaiting confirm: reverts in {left:.0f} s unless `berth firewall confirm`")
        if s.last_apply:
            la = s.last_apply
            print(f"last apply: {la.mode} {la.result}: {la.detail}")
    if not reply.ok:
        where = f" ({FLAGS.get(reply.field.split('[')[0], reply.field)})" if reply.field else ""
        print(f"berth firewall: {reply.command} failed{where}: {reply.error}", file=sys.stderr)


def main(argv: list[str]) -> int:
    parser = build_parser()
    if not argv:  # the commands with examples, not just a usage line
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    where = locate(args.state_dir, args.run_dir, _read_agent_env(args.agent_env))
    args.state_dir = where.state_dir
    if (
        args.action == "apply"
        and args.mode == "tunnel-only"
        and not args.consent_block_ssh
        and sys.stdin.isatty()
    ):
        args.consent_block_ssh = _ask_consent()
    try:
        req = build_request(args, dict(os.environ))
    except RequestError as exc:
        parser.error(f"{FLAGS.get(exc.field.split('[')[0], exc.field)}: {exc.message}")
    client = _helper(where.run_dir)
    if client is None and where.installed and not args.in_process:
        print(f"berth firewall: a firewall helper is installed ({args.agent_env}) but does "
              f"not answer on {BusEndpoints(where.run_dir).firewall_path}; nothing was done. "
              "Start it (systemctl start berth-firewall) and retry: acting here would work "
              "on a state the helper never sees. --in-process acts on "
              f"{where.state_dir} anyway (only with the helper stopped for good).",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        reply = client.request(req) if client else _in_process(args, req)
    except (FirewallUnavailable, ToolError, OSError) as exc:
        print(f"berth firewall: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(json.loads(reply.to_json()), indent=1))
    else:
        _print(reply)
    return 0 if reply.ok else 1

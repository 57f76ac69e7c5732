"""usage: berth installer COMMAND [ARGS...]

The Python half of install.sh and uninstall.sh, and their tools.

commands:
  setup       install the agent on this server (root; install.sh runs it)
                e.g. berth installer setup --control-plane https://cp.example --security-mode open
  remove      uninstall the agent, reverting the firewall (root; uninstall.sh runs it)
                e.g. berth installer remove --purge
  wire-dns    point the resolver at the DNS responder (berth-dns-wiring.service)
                e.g. berth installer wire-dns /etc/berth/agent.env --names-from CACHE
  wheelhouse  build the wheels a control plane serves to install.sh (control-plane host)
                e.g. berth installer wheelhouse /var/lib/berth/dist

Run 'berth installer COMMAND --help' for its options.

Exit status: 0 done, 1 a step failed (the message says which and what to do), 2 bad
options, 3 setup stopped before changing anything (install.sh then removes the venv).
"""

import argparse
import os
import sys
from pathlib import Path

from agent.schema.modes import SECURITY_MODES
from agent.settings import TOKEN_ENV
from installer import plan
from installer.layout import Layout
from installer.system import EarlyStop, StepError

EARLY_STOP = 3


def _setup_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="berth installer setup", description="Install the Berth agent."
    )
    p.add_argument("--control-plane", required=True, metavar="URL")
    p.add_argument("--token", help="install token (first install only); better in the "
                   "BERTH_INSTALL_TOKEN environment variable, which `ps` does not show")  # fmt: skip
    p.add_argument("--security-mode", choices=SECURITY_MODES,
                   help="firewall mode to apply (default: the stack's security_mode)")  # fmt: skip
    p.add_argument("--ssh-cidr", action="append", default=[], metavar="CIDR",
                   help="proxy-only: allow SSH from this network (repeatable)")  # fmt: skip
    p.add_argument("--ssh-port", type=int, default=22)
    p.add_argument("--consent-block-ssh", action="store_true",
                   help="tunnel-only: accept that SSH is blocked too")  # fmt: skip
    p.add_argument("--allow-ssh-lockout", action="store_true",
                   help="proxy-only: apply although this SSH session is outside every --ssh-cidr")  # fmt: skip
    p.add_argument("--confirm-timeout", type=float, default=plan.DEFAULT_CONFIRM_TIMEOUT_S,
                   metavar="SECONDS", help="firewall: revert unless confirmed in time")  # fmt: skip
    p.add_argument("--dns-wiring", choices=plan.DNS_WIRINGS, default="auto")
    p.add_argument("--firewall-backend", choices=plan.BACKENDS, default="auto")
    p.add_argument("--wait", type=float, default=120.0, metavar="SECONDS",
                   help="how long to wait for the first heartbeat")  # fmt: skip
    p.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                   help="extra option for every agent unit, e.g. --agent-arg=--dns-bind=127.0.0.153:53")  # fmt: skip
    p.add_argument("--units-dir", type=Path, default=Layout().units_src,
                   help="unit files to install (install.sh unpacks them here)")  # fmt: skip
    p.add_argument("--venv", type=Path, metavar="DIR",
                   help="the fresh venv install.sh made: switch the units to it, back on failure")  # fmt: skip
    return p


def _setup(argv: list[str]) -> int:
    from installer import setup

    parser = _setup_parser()
    args = parser.parse_args(argv)
    opts = plan.InstallOptions(
        control_plane=args.control_plane, token=args.token or os.environ.get(TOKEN_ENV),
        security_mode=args.security_mode,
        ssh_cidrs=tuple(args.ssh_cidr), ssh_port=args.ssh_port,
        consent_block_ssh=args.consent_block_ssh, allow_ssh_lockout=args.allow_ssh_lockout,
        confirm_timeout_s=args.confirm_timeout, dns_wiring=args.dns_wiring,
        firewall_backend=args.firewall_backend, wait_s=args.wait,
        extra_agent_args=tuple(args.agent_arg),
    )  # fmt: skip
    layout = Layout()
    try:
        outcome = setup.install(opts, layout, args.units_dir, args.venv)
    except plan.PlanError as exc:
        parser.error(str(exc))
    except EarlyStop as exc:
        print(f"berth-install: STOPPED, nothing was changed: {exc}", file=sys.stderr)
        return EARLY_STOP
    except StepError as exc:
        print(f"berth-install: FAILED: {exc}", file=sys.stderr)
        return 1
    print(plan.summary(outcome, layout))
    return 0


def _remove(argv: list[str]) -> int:
    from installer import remove

    parser = argparse.ArgumentParser(prog="berth installer remove", description="Uninstall Berth.")
    parser.add_argument(
        "--purge", action="store_true", help="also remove the data (/var/lib/berth*)"
    )
    args = parser.parse_args(argv)
    try:
        done = remove.remove(Layout(), args.purge)
    except StepError as exc:
        print(f"berth-uninstall: FAILED: {exc}", file=sys.stderr)
        return 1
    for line in done:
        print(f"  {line}")
    print("Berth agent uninstalled.")
    return 0


def main(argv: list[str]) -> int:
    from agent.logs import setup_logging

    commands = {"setup": _setup, "remove": _remove}
    if not argv or argv[0] not in (*commands, "wire-dns", "wheelhouse"):
        helped = bool(argv) and argv[0] in ("-h", "--help")
        print(__doc__, file=sys.stdout if helped else sys.stderr)
        return 0 if helped else 2
    setup_logging(f"installer-{argv[0]}")
    if argv[0] == "wire-dns":
        from installer import dnswire

        return dnswire.main(argv[1:])
    if argv[0] == "wheelhouse":
        from installer import wheelhouse

        return wheelhouse.main(argv[1:])
    return commands[argv[0]](argv[1:])

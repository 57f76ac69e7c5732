"""The `berth` command: one entry point that hands each subcommand to its owner.

    berth controlplane serve|migrate|token|user ...   controlplane.cli
    berth stack|token|audit|notify ...                controlplane.client (HTTP API client)
    berth demo                                        controlplane.demo
    berth agent run-all|<component> ...               agent processes
    berth agent upgrade [--version V]                 installer.upgrade (root)
    berth firewall status|plan|apply|confirm|revert   agent.firewall.cli

Modules are imported only when their subcommand runs, so a server without the control
plane's dependencies can still run its agent.
"""

import argparse
import importlib
import sys

from agent import settings as agent_settings
from agent.logs import setup_logging

# component name -> "module:function" taking AgentSettings and returning an exit code
COMPONENTS = {
    "reconciler": "agent.reconciler.main:main",
    "proxy": "agent.proxy.main:main_external",
    "internal-proxy": "agent.proxy.main:main_internal",
    "dns": "agent.dns.main:main",
    "firewall": "agent.firewall.main:main",
}
# one-shot agent commands, the same shape: run-all runs them as a child, as a component
TASKS = {
    "stop-services": "agent.reconciler.shutdown:main",
}

AGENT_EPILOG = """components:
  run-all         every component below as child processes (development, the demo)
                    e.g. berth agent run-all --control-plane http://127.0.0.1:8000 --token-file ./token
  reconciler      poll the desired state, build, run, supervise, report
                    e.g. berth agent reconciler --state-dir /var/lib/berth
  proxy           the external HTTP reverse proxy
                    e.g. berth agent proxy --proxy-bind 127.0.0.1:8080
  internal-proxy  the internal proxy (http://NAME.svc.internal)
                    e.g. berth agent internal-proxy --internal-bind 127.0.0.1:80
  dns             the svc.internal DNS responder
                    e.g. berth agent dns --dns-bind 127.0.0.53:53
  firewall        the privileged firewall helper (root)
                    e.g. berth agent firewall --state-dir /var/lib/berth
  stop-services   stop every service the reconciler recorded, then exit (run-all does it
                  on exit with --stop-services-on-exit)
                    e.g. berth agent stop-services --state-dir /var/lib/berth
  upgrade         install a newer agent beside this one and switch, or switch back (root)
                    e.g. berth agent upgrade --version 0.2.0
"""

DELEGATES = {
    "controlplane": "controlplane.cli:main",
    "stack": "controlplane.client:main_stack",
    "token": "controlplane.client:main_token",
    "audit": "controlplane.client:main_audit",
    "notify": "controlplane.client:main_notify",
    "demo": "controlplane.demo:main",
    "firewall": "agent.firewall.cli:main",
    "installer": "installer.cli:main",
}


# `berth` / `berth --help`: every command, one line each, with an example
HELP = """usage: berth COMMAND [ARGS...]

Berth: a control plane and an agent that build, run, route and guard web apps.

commands:
  controlplane  run and administer a control plane (serve, migrate, token, user)
                  e.g. berth controlplane serve --db sqlite:///berth.db
  stack         manage stacks over the API (apply, list, get, versions, diff, ...)
                  e.g. berth stack apply -f stack.toml
  token         create a one-time install token for a new server
                  e.g. berth token create --stack web
  audit         who changed what: the control plane's audit trail
                  e.g. berth audit --stack web --since 2026-11-01T00:00:00Z
  notify        notification channels: webhook, Slack, email (list, add, test, log)
                  e.g. berth notify add ops --kind slack --url https://hooks.slack.com/...
  agent         run the agent's processes (run-all, or one component)
                  e.g. berth agent run-all --control-plane https://cp.example
  firewall      inspect and change this server's security mode
                  e.g. berth firewall status
  installer     set up or remove the agent on this server
                  e.g. berth installer setup --help
  demo          a control plane, an agent and an example stack on this machine
                  e.g. berth demo

Run 'berth COMMAND --help' for a command's subcommands and options.
The API commands use $BERTH_URL (default http://127.0.0.1:8000) and $BERTH_TOKEN.
"""


def _load(target: str):  # type: ignore[no-untyped-def]
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _agent_main(argv: list[str]) -> int:
    if argv[:1] == ["upgrade"]:
        from installer import upgrade

        setup_logging("upgrade")
        return upgrade.main(argv[1:])
    parser = _agent_parser()
    if not argv:  # the components with examples, not just a usage line
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        settings = agent_settings.from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    setup_logging(args.component)
    if args.component == "run-all":
        from agent.runall import run_all

        return run_all(settings, argv[1:])
    entry = COMPONENTS.get(args.component) or TASKS[args.component]
    return int(_load(entry)(settings) or 0)


def _agent_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="berth agent", description="Run the Berth agent.", epilog=AGENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("component", choices=["run-all", *COMPONENTS, *TASKS], metavar="COMPONENT",
                        help="run-all, or one of: " + ", ".join(COMPONENTS))  # fmt: skip
    agent_settings.add_arguments(parser)
    parser.add_argument(
        "--stop-services-on-exit",
        action="store_true",
        help="run-all: stop the services too on exit",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ["agent", *DELEGATES]
    if argv and argv[0] in ("-h", "--help"):
        print(HELP, end="")
        return 0
    if not argv or argv[0] not in commands:
        print(HELP, end="", file=sys.stderr)
        if argv:
            print(f"berth: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    if argv[0] == "agent":
        return _agent_main(argv[1:])
    return int(_load(DELEGATES[argv[0]])(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The `berth` command: one entry point that hands each subcommand to its owner.

    berth controlplane serve|migrate|token|user ...   controlplane.cli
    berth stack|token ...                             controlplane.client (HTTP API client)
    berth demo                                        controlplane.demo
    berth agent run-all|<component> ...               agent processes
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

DELEGATES = {
    "controlplane": "controlplane.cli:main",
    "stack": "controlplane.client:main_stack",
    "token": "controlplane.client:main_token",
    "demo": "controlplane.demo:main",
    "firewall": "agent.firewall.cli:main",
    "installer": "installer.cli:main",
}


def _load(target: str):  # type: ignore[no-untyped-def]
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _agent_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="berth agent", description="Run the Berth agent.")
    parser.add_argument("component", choices=["run-all", *COMPONENTS])
    agent_settings.add_arguments(parser)
    parser.add_argument(
        "--stop-services-on-exit",
        action="store_true",
        help="run-all: stop the services too on exit",
    )
    args = parser.parse_args(argv)
    try:
        settings = agent_settings.from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    setup_logging(args.component)
    if args.component == "run-all":
        from agent.runall import run_all

        return run_all(settings, argv[1:])
    return int(_load(COMPONENTS[args.component])(settings) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ["agent", *DELEGATES]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: berth {" + ",".join(commands) + "} ...", file=sys.stderr)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"berth: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    if argv[0] == "agent":
        return _agent_main(argv[1:])
    return int(_load(DELEGATES[argv[0]])(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())

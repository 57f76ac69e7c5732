"""``python -m agent.firewall``: the helper with its own options (backend, tunnel metrics).

`berth agent firewall` runs the same helper with `AgentSettings` alone.
"""

import argparse
import sys

from agent import settings as agent_settings
from agent.firewall.main import HelperOptions, main
from agent.firewall.tunnel import DEFAULT_METRICS
from agent.logs import setup_logging


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.firewall")
    agent_settings.add_arguments(parser)
    parser.add_argument("--backend", choices=("auto", "ufw", "nftables"), default="auto")
    # --tunnel-metrics and --firewall-backend come from the shared agent options
    args = parser.parse_args(argv)
    try:
        settings = agent_settings.from_args(args)
        metrics = (
            agent_settings.parse_hostport(args.tunnel_metrics, "--tunnel-metrics")
            if args.tunnel_metrics
            else DEFAULT_METRICS
        )
    except ValueError as exc:
        parser.error(str(exc))
    setup_logging("firewall")
    backend = args.backend if args.backend != "auto" else settings.firewall_backend
    return main(settings, HelperOptions(backend=backend, tunnel_metrics=metrics))


if __name__ == "__main__":
    sys.exit(run())

"""`berth agent reconciler`: run the reconciler until stopped."""

from agent.reconciler.reconciler import run_reconciler
from agent.settings import AgentSettings

EXIT_INTERRUPTED = 130  # the shell's convention for a process ended by SIGINT


def main(settings: AgentSettings) -> int:
    try:
        return run_reconciler(settings)
    except KeyboardInterrupt:  # Ctrl-C reaches every child of run-all: stop quietly
        return EXIT_INTERRUPTED

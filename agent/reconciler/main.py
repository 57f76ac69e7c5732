"""`berth agent reconciler`: run the reconciler until stopped."""

from agent.reconciler.reconciler import main_async
from agent.settings import AgentSettings


def main(settings: AgentSettings) -> int:
    return main_async(settings)

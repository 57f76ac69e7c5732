"""Abuse limits and retention of one control plane: named defaults, `serve` flags.

- `webhooks_per_minute`: signed git webhook deliveries acted on per stack (`deliveries`).
- `agent_events_per_minute`, `agent_log_bytes_per_minute`: what one agent instance may post
  (`ingest`); over it, 429 with Retry-After, and the agent keeps the data and retries.
- `events_retention_days`, `logs_retention_days`: events and log chunks older than this
  are deleted (0: kept for ever; logs are also bounded by a tail per service).
"""

import argparse
from collections.abc import Callable
from dataclasses import dataclass, fields

DEFAULT_WEBHOOKS_PER_MINUTE = 20
DEFAULT_AGENT_EVENTS_PER_MINUTE = 1000  # one full batch always fits an empty window
DEFAULT_AGENT_LOG_BYTES_PER_MINUTE = 4 * 1024 * 1024
DEFAULT_EVENTS_RETENTION_DAYS = 30.0
DEFAULT_LOGS_RETENTION_DAYS = 7.0


@dataclass(frozen=True)
class Limits:
    webhooks_per_minute: int = DEFAULT_WEBHOOKS_PER_MINUTE
    agent_events_per_minute: int = DEFAULT_AGENT_EVENTS_PER_MINUTE
    agent_log_bytes_per_minute: int = DEFAULT_AGENT_LOG_BYTES_PER_MINUTE
    events_retention_days: float = DEFAULT_EVENTS_RETENTION_DAYS
    logs_retention_days: float = DEFAULT_LOGS_RETENTION_DAYS

    def argv(self) -> list[str]:
        """These limits as `serve` flags (for worker processes)."""
        out = []
        for f in fields(self):
            out += [f"--{f.name.replace('_', '-')}", str(getattr(self, f.name))]
        return out


def _at_least(low: float, kind: type) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = kind(raw)
        except ValueError:
            value = low - 1
        if not value >= low:
            raise argparse.ArgumentTypeError(f"must be a number >= {low:g}, got {raw!r}")
        return value  # type: ignore[no-any-return]

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits and retention (docs/api.md, Limits)")
    for f in fields(Limits):
        kind = int if f.type in (int, "int") else float
        low = 0 if f.name.endswith("_days") else 1
        group.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, type=_at_least(low, kind),
            default=f.default, metavar="N", help="default %(default)s",
        )  # fmt: skip


def from_args(args: argparse.Namespace) -> Limits:
    return Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)})

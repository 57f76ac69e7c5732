"""Finished builds, from the service workers to the metrics shipper and `/metrics`.

A worker records each build it ran to the end (succeeded, failed or timed out; a build
superseded by a newer target is cancelled and not recorded) with its wall time and the
peak resident memory of its process tree (agent/reconciler/buildusage.py). The shipper
takes the builds finished since its last batch (`drain`); the agent's own `/metrics`
reads each service's latest build and the counts. Everything is in memory: a build that
finished just before the reconciler restarted is not shipped.
"""

from collections import deque
from dataclasses import dataclass, field

PENDING_MAX = 1000  # builds waiting for a batch (none are drained without a control plane)


@dataclass(frozen=True)
class FinishedBuild:
    service: str
    duration_s: float
    peak_rss_bytes: int
    ok: bool


@dataclass
class BuildLog:
    pending: deque[FinishedBuild] = field(default_factory=lambda: deque(maxlen=PENDING_MAX))
    latest: dict[str, FinishedBuild] = field(default_factory=dict)
    counts: dict[tuple[str, bool], int] = field(default_factory=dict)  # (service, ok) -> n

    def record(self, build: FinishedBuild) -> None:
        self.pending.append(build)
        self.latest[build.service] = build
        key = (build.service, build.ok)
        self.counts[key] = self.counts.get(key, 0) + 1

    def drain(self) -> list[FinishedBuild]:
        """The builds finished since the previous call."""
        out = list(self.pending)
        self.pending.clear()
        return out

"""Which proxies are alive, what they acknowledged, what they still have in flight.

Pure bookkeeping over `ProxyReport`s with an injected clock (monotonic seconds), so the
cutover's decisions are plain tests: `missing` says who has not acknowledged a version
yet, `in_flight` how many requests the live proxies still have open to a backend port,
and `drain_decision` whether a replaced release may be stopped.
"""

from dataclasses import dataclass

from agent.bus.messages import Version
from agent.bus.reports import HEARTBEAT_S, ProxyReport

# A proxy that sent nothing for this long (three heartbeats) is forgotten: it stopped or
# crashed, and a swap must not wait for it.
FORGET_AFTER_S = 3 * HEARTBEAT_S + 0.5


@dataclass
class _Seen:
    report: ProxyReport
    at: float


class ProxyRegistry:
    def __init__(self, forget_after_s: float = FORGET_AFTER_S) -> None:
        self.forget_after_s = forget_after_s
        self._seen: dict[str, _Seen] = {}

    def report(self, r: ProxyReport, now: float) -> bool:
        """Record `r`; True when it announced a proxy not known before."""
        if r.gone:
            self._seen.pop(r.proxy, None)
            return False
        new = r.proxy not in self._seen
        self._seen[r.proxy] = _Seen(r, now)
        return new

    def live(self, now: float) -> list[str]:
        """The proxies heard from within `forget_after_s` (the others are forgotten)."""
        for name in [n for n, s in self._seen.items() if now - s.at > self.forget_after_s]:
            del self._seen[name]
        return sorted(self._seen)

    def missing(self, version: Version, now: float) -> list[str]:
        """Live proxies that have not acknowledged `version` (or a later one)."""
        return [
            n
            for n in self.live(now)
            if (v := self._seen[n].report.version) is None or tuple(v) < tuple(version)
        ]

    def in_flight(self, port: int, now: float) -> int:
        """Requests the live proxies report open to backend `port`."""
        return sum(self._seen[n].report.in_flight.get(port, 0) for n in self.live(now))


@dataclass(frozen=True)
class DrainDecision:
    stop: bool  # stop the old release now
    cut: int = 0  # requests still open when the timeout stops it anyway


def drain_decision(in_flight: int, started: float, now: float, timeout_s: float) -> DrainDecision:
    """A replaced release stops once nothing is in flight to it, or when its service's
    drain timeout has passed (then the requests still open are cut)."""
    if in_flight == 0:
        return DrainDecision(stop=True)
    if now - started >= timeout_s:
        return DrainDecision(stop=True, cut=in_flight)
    return DrainDecision(stop=False)

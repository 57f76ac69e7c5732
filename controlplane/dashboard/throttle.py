"""Failed-login throttling: a pure, clock-injected counter per key (user name, client IP).

After `free_failures` failures within `window_s`, every further attempt on that key must
wait; the wait doubles with each further failure up to `max_delay_s`. A success clears the
key. State is in memory, per control-plane process: a node restart forgets it, and with
several nodes an attacker gets `free_failures` per node, which is still a hard ceiling on
guessing speed.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_FREE_FAILURES = 5
DEFAULT_WINDOW_S = 15 * 60.0
DEFAULT_BASE_DELAY_S = 2.0
DEFAULT_MAX_DELAY_S = 15 * 60.0
MAX_KEYS = 100_000  # bound memory under a spray of distinct names


@dataclass
class _Record:
    failures: int = 0
    first_at: float = 0.0
    blocked_until: float = 0.0


@dataclass
class LoginThrottle:
    free_failures: int = DEFAULT_FREE_FAILURES
    window_s: float = DEFAULT_WINDOW_S
    base_delay_s: float = DEFAULT_BASE_DELAY_S
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    clock: Callable[[], float] = time.monotonic
    _records: dict[str, _Record] = field(default_factory=dict)

    def retry_after(self, *keys: str) -> float:
        """Seconds until an attempt on any of `keys` is allowed again (0: allowed now)."""
        now = self.clock()
        wait = 0.0
        for key in keys:
            rec = self._records.get(key)
            if rec is not None:
                wait = max(wait, rec.blocked_until - now)
        return wait

    def failure(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            rec = self._records.get(key)
            if rec is None or now - rec.first_at > self.window_s:
                if len(self._records) >= MAX_KEYS:
                    self._prune(now)
                rec = self._records[key] = _Record(first_at=now)
            rec.failures += 1
            over = rec.failures - self.free_failures
            if over >= 0:
                delay = min(self.base_delay_s * (2**over), self.max_delay_s)
                rec.blocked_until = now + delay

    def success(self, *keys: str) -> None:
        for key in keys:
            self._records.pop(key, None)

    def _prune(self, now: float) -> None:
        for key in [
            k
            for k, r in self._records.items()
            if now - r.first_at > self.window_s and r.blocked_until <= now
        ]:
            del self._records[key]
        if len(self._records) >= MAX_KEYS:  # still full: forget the oldest half
            for key in sorted(self._records, key=lambda k: self._records[k].first_at)[
                : MAX_KEYS // 2
            ]:
                del self._records[key]

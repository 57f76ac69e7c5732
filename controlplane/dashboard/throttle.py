"""Failed-login throttling policy: pure functions over one key's record (user name, client IP).

After `free_failures` failures within `window_s`, every further attempt on that key must
wait; the wait doubles with each further failure up to `max_delay_s`. A success clears the
key. Times are wall-clock seconds, so every control-plane process and node that shares
the database (`login_failures.py`) reads the same records.
"""

from dataclasses import dataclass

DEFAULT_FREE_FAILURES = 5
DEFAULT_WINDOW_S = 15 * 60.0
DEFAULT_BASE_DELAY_S = 2.0
DEFAULT_MAX_DELAY_S = 15 * 60.0


@dataclass(frozen=True)
class Record:
    failures: int
    first_at: float  # first failure of the current window
    blocked_until: float


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = DEFAULT_FREE_FAILURES
    window_s: float = DEFAULT_WINDOW_S
    base_delay_s: float = DEFAULT_BASE_DELAY_S
    max_delay_s: float = DEFAULT_MAX_DELAY_S

    def wait(self, rec: Record | None, now: float) -> float:
        """Seconds until an attempt on this key is allowed again (0: allowed now)."""
        return max(0.0, rec.blocked_until - now) if rec is not None else 0.0

    def after_failure(self, rec: Record | None, now: float) -> Record:
        if rec is None or now - rec.first_at > self.window_s:
            rec = Record(0, now, 0.0)
        failures = rec.failures + 1
        over = failures - self.free_failures
        blocked_until = rec.blocked_until
        if over >= 0:
            blocked_until = now + min(self.base_delay_s * (2**over), self.max_delay_s)
        return Record(failures, rec.first_at, blocked_until)

    def forgettable_before(self, now: float) -> float:
        """Records whose window began before this and that block nothing can be dropped."""
        return now - self.window_s

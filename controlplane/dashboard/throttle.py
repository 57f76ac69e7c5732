"""Failed-login throttling policy: pure functions over one key's record.

After `free_failures` failures within `window_s`, every further attempt on that key must
wait; the wait doubles with each further failure up to `max_delay_s`. A success clears the
key. Times are wall-clock seconds, so every control-plane process and node that shares
the database (`login_failures.py`) reads the same records.

Keys and their policies (`LOGIN_POLICIES`, chosen by the key's prefix):

- ``pair:<user>|<address>``: the lockout proper, 5 free failures. An attacker elsewhere
  never touches the owner's pair, so cannot lock the owner out.
- ``addr:<address>``: one address spraying many user names, 20 free failures.
- ``user:<user>``: the global ceiling on one user over every address (a botnet), 50 free
  failures; its wait is capped at 60 s, so the most an attack from many addresses can do
  to the owner is a short delay, while guesses stay bounded.
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

    def refund(self, rec: Record) -> Record:
        """Take back one counted attempt (it succeeded): attempts are counted before the
        password is checked, so parallel guesses cannot all pass the check."""
        failures = max(0, rec.failures - 1)
        blocked_until = rec.blocked_until if failures >= self.free_failures else 0.0
        return Record(failures, rec.first_at, blocked_until)

    def forgettable_before(self, now: float) -> float:
        """Records whose window began before this and that block nothing can be dropped."""
        return now - self.window_s


PAIR_POLICY = ThrottlePolicy()
ADDRESS_POLICY = ThrottlePolicy(free_failures=20)
USER_CEILING_POLICY = ThrottlePolicy(free_failures=50, max_delay_s=60.0)
LOGIN_POLICIES = {"pair": PAIR_POLICY, "addr": ADDRESS_POLICY, "user": USER_CEILING_POLICY}


def login_keys(user: str, address: str) -> tuple[str, str, str]:
    """The throttle keys of one login attempt (see the module's docstring)."""
    return (f"pair:{user}|{address}"[:160], f"addr:{address}", f"user:{user}")

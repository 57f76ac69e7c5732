"""Which secret values to redact from what the agent ships, remembered across restarts.

Output of an old release, shipped even after a reconciler restart, may still hold a value
that was changed since: the current values plus `REMEMBERED` earlier ones stay redacted,
kept in the (0600) store under `KEY` as ``[[name, value], ...]``, newest first.
"""

from agent.reconciler.redact import Redactor
from agent.reconciler.store import Store
from agent.schema.document import DesiredState

KEY = "redact_values"
REMEMBERED = 200


class SecretMemory:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._values = {(str(n), str(v)) for n, v in store.get_json(KEY) or []}
        self.redactor = Redactor(sorted(self._values))

    def learn(self, desired: DesiredState) -> None:
        """Remember the secret values of `desired` (a new value gets redacted at once)."""
        known = {
            (name, s.value)
            for svc in desired.services
            for name, s in svc.spec.secrets.items()
            if s.value is not None
        }
        if known <= self._values:
            return
        older = [p for p in self.store.get_json(KEY) or [] if tuple(p) not in known]
        remembered = [*sorted(known), *older][:REMEMBERED]
        self.store.put_json(KEY, remembered)
        self._values = known | {(str(n), str(v)) for n, v in remembered}
        self.redactor = Redactor(sorted(self._values))

"""The reconciler's door for the tools that prepare or clean up after it: the installer
and `berth agent upgrade` (register, save the credential, queue an event and see it
acknowledged, record an upgrade's outcome, read the cached desired state) and the uninstaller and `berth agent stop-services` (stop the services it
recorded).

They run beside the reconciler or instead of it, never inside it. The import contract
(`.importlinter`, "installer") lets them import this module and nothing else of
`agent.reconciler`, so its store and client stay its own and the registration lines
below exist once: the reconciler saves its own registration with `save_registration`.
"""

from pathlib import Path
from typing import Any

from agent.reconciler.cpclient import ControlPlaneClient, Rejected, Unreachable
from agent.reconciler.shutdown import stop_recorded_services
from agent.reconciler.store import Store
from agent.schema.registration import Registration
from agent.statelayout import StateLayout

__all__ = [
    "AgentState",
    "Registration",
    "Rejected",
    "Unreachable",
    "register",
    "save_registration",
    "stop_recorded_services",
]


def register(control_plane: str, token: str) -> Registration:
    """Exchange a one-time install token for a credential; raises `Rejected` (a bad token)
    or `Unreachable`. Nothing is written."""
    return ControlPlaneClient(control_plane).register(token)


def save_registration(store: Store, reg: Registration) -> None:
    store.put("credential", reg.credential)
    store.put("instance_id", reg.instance_id)
    store.put("stack_id", reg.stack_id)


class AgentState:
    """The reconciler's store under `state_dir`, opened by a tool outside it."""

    def __init__(self, state_dir: Path) -> None:
        self.layout = StateLayout(state_dir)
        self._store = Store(self.layout.store)

    def close(self) -> None:
        self._store.close()

    def registration(self) -> Registration | None:
        found = [self._store.get(k) for k in ("instance_id", "credential", "stack_id")]
        instance_id, credential, stack_id = found
        if not (instance_id and credential and stack_id):
            return None
        return Registration(instance_id, credential, stack_id)

    def save_registration(self, reg: Registration) -> None:
        save_registration(self._store, reg)

    def queue_event(self, type_: str, message: str, **extra: Any) -> str:
        """Add an event to the outbox the reconciler sends; its id, to wait for its ack."""
        return self._store.add_event(type_, message, **extra)

    def record_upgrade(self, outcome: dict[str, str]) -> None:
        """The last agent upgrade's outcome, which the reconciler reports in heartbeats
        and which keeps it from asking again for a version that failed."""
        self._store.put_json("upgrade", outcome)

    def is_acknowledged(self, event_id: str) -> bool:
        return event_id not in {e["id"] for e in self._store.pending_events(1000)}

    def desired_state(self) -> dict[str, Any] | None:
        found = self._store.get_json("desired")
        return found if isinstance(found, dict) else None

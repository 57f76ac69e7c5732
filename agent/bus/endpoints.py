"""Where the bus sockets live: ipc:// paths under the agent's runtime directory."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BusEndpoints:
    run_dir: Path

    @property
    def pub(self) -> str:
        return f"ipc://{self.run_dir / 'bus-pub.sock'}"

    @property
    def snapshot(self) -> str:
        return f"ipc://{self.run_dir / 'bus-snapshot.sock'}"

    @property
    def reports(self) -> str:
        """Proxies -> reconciler: announcements, acknowledgements, in-flight counts."""
        return f"ipc://{self.run_dir / 'bus-reports.sock'}"

    @property
    def metrics(self) -> str:
        """Proxies push metrics snapshots here; the reconciler pulls (agent/bus/metrics.py)."""
        return f"ipc://{self.run_dir / 'bus-metrics.sock'}"

    @property
    def firewall(self) -> str:
        return f"ipc://{self.run_dir / 'firewall.sock'}"

    @property
    def firewall_path(self) -> Path:
        return self.run_dir / "firewall.sock"

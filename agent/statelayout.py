"""The agent's state directory (`--state-dir`, /var/lib/berth when installed): the one
place that spells what lives below it.

    agent.sqlite3[-wal,-shm]  the reconciler's store: credential, desired state, event
                              outbox, the processes it runs (0600)
    cache/<component>-routes.json
                              each bus subscriber's last route table (group `berth`)
    git/                      the reconciler's bare mirrors (private)
    releases/<service>/<commit>/
                              one worktree per release, run by the services' user
    build-markers/<service>/<commit>/
                              which build key a release was built with
    logs/<service>/           build and run logs
    upgrade-request           the reconciler's request for an agent upgrade (root acts)
    firewall/                 the firewall helper's state when it shares the directory
    run/                      the bus sockets unless --run-dir says otherwise

The reconciler, run-all, the bus subscribers and the installer take paths from here, so
renaming a file is one edit and every reader agrees.
"""

from dataclasses import dataclass
from pathlib import Path

STORE_NAME = "agent.sqlite3"


@dataclass(frozen=True)
class StateLayout:
    root: Path

    @property
    def store(self) -> Path:
        return self.root / STORE_NAME

    def store_files(self) -> list[Path]:
        """The store and the -wal/-shm files SQLite keeps beside it."""
        return sorted(self.root.glob(STORE_NAME + "*"))

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def route_cache(self, component: str) -> Path:
        return self.cache / f"{component}-routes.json"

    @property
    def git(self) -> Path:
        return self.root / "git"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def build_markers(self) -> Path:
        return self.root / "build-markers"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def upgrade_request(self) -> Path:
        """The reconciler asks root to upgrade the agent here (`berth-upgrade.path`)."""
        return self.root / "upgrade-request"

    @property
    def firewall(self) -> Path:
        return self.root / "firewall"

    @property
    def run(self) -> Path:
        return self.root / "run"

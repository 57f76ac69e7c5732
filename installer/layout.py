"""Where an installed Berth lives on a server: one frozen `Layout`, the single source of
every path the installer, the uninstaller and the systemd units agree on.

The unit files in `systemd/` hard-code the same paths (systemd cannot read this module);
`tests/installer/test_units.py` checks that they match.
"""

from dataclasses import dataclass
from pathlib import Path

from agent.statelayout import StateLayout

AGENT_UNITS = (
    "berth-firewall.service",
    "berth-dns.service",
    "berth-internal-proxy.service",
    "berth-proxy.service",
    "berth-reconciler.service",
    "berth-dns-wiring.path",
    "berth-upgrade.path",
)
# started by their .path units, never enabled
HELPER_UNITS = ("berth-dns-wiring.service", "berth-upgrade.service")
TARGET = "berth-agent.target"
CONTROLPLANE_UNIT = "berth-controlplane.service"
UNITS_TARBALL = "berth-systemd.tar.gz"  # the units, served beside the wheels

RECONCILER_USER = "berth"  # its group `berth` may use the bus sockets
SERVICES_USER = "berth-svc"
STATIC_USERS = (RECONCILER_USER, SERVICES_USER)
AGENT_GROUP = "berth"
FIREWALL_GROUP = "berth-firewall"  # may open the firewall helper's socket: the reconciler only
# DynamicUser= state directories (/var/lib/<name> -> /var/lib/private/<name>)
DYNAMIC_STATE = ("berth-proxy", "berth-internal-proxy", "berth-dns")


@dataclass(frozen=True)
class Layout:
    root: Path = Path("/")

    def _p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def prefix(self) -> Path:
        return self._p("/opt/berth")

    @property
    def venv(self) -> Path:
        """What the units run: a symlink to one of `venvs` (a directory before issue 16)."""
        return self.prefix / "venv"

    @property
    def venvs(self) -> Path:
        """Every installed Berth venv, one per install/upgrade; `venv` points at one."""
        return self.prefix / "venvs"

    @property
    def units_src(self) -> Path:
        """Where install.sh unpacks the unit files served by the control plane."""
        return self.prefix / "systemd"

    @property
    def unit_dir(self) -> Path:
        return self._p("/etc/systemd/system")

    @property
    def config_dir(self) -> Path:
        return self._p("/etc/berth")

    @property
    def agent_env(self) -> Path:
        return self.config_dir / "agent.env"

    @property
    def tmpfiles(self) -> Path:
        return self._p("/etc/tmpfiles.d/berth.conf")

    @property
    def sysusers(self) -> Path:
        return self._p("/etc/sysusers.d/berth.conf")

    @property
    def state_dir(self) -> Path:
        return self._p("/var/lib/berth")

    @property
    def store(self) -> Path:
        return StateLayout(self.state_dir).store

    @property
    def firewall_state(self) -> Path:
        return self._p("/var/lib/berth-firewall")

    @property
    def run_dir(self) -> Path:
        return self._p("/run/berth")

    @property
    def dns_cache(self) -> Path:
        """The DNS responder's name cache (its DynamicUser state directory)."""
        return self._p("/var/lib/private/berth-dns/cache/dns-routes.json")

    def data_dirs(self) -> list[Path]:
        """Everything `--purge` removes besides the venv."""
        dirs = [self.state_dir, self.firewall_state]
        for name in DYNAMIC_STATE:
            dirs += [self._p(f"/var/lib/{name}"), self._p(f"/var/lib/private/{name}")]
        return dirs

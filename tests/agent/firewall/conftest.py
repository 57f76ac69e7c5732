"""Fixtures for the firewall tests: a namespace pair and a real helper inside ``srv``.

Nothing here touches the machine's own network namespace: every nft/ufw command runs
under ``ip netns exec`` in namespaces the test created, and UFW additionally in a
private mount namespace with copies of /etc/ufw and /etc/default bound over.
"""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.bus.endpoints import BusEndpoints
from agent.bus.firewall import FirewallClient, FirewallUnavailable, StatusRequest
from tests.support.env import require_root, require_tool
from tests.support.netns import NetnsPair, netns_pair

PROBE = str(Path(__file__).with_name("netprobe.py"))
REPO = Path(__file__).resolve().parents[3]

# a table that is not Berth's: every revert must leave it exactly as it was
OTHER_TABLE = """table inet other {
	chain out {
		type filter hook output priority 10; policy accept;
		tcp dport 9 counter accept
	}
}
"""


@dataclass
class Helper:
    client: FirewallClient
    proc: subprocess.Popen[bytes]
    state_dir: Path
    run_dir: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()


@dataclass
class FwEnv:
    net: NetnsPair
    tmp: Path
    ufw: bool

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state"

    @property
    def run_dir(self) -> Path:
        return self.tmp / "run"

    def ruleset(self) -> str:
        return self.net.nft_ruleset()

    def scan(self, ns: str, host: str, ports: list[int]) -> list[int]:
        out = self.net.run(ns, [sys.executable, PROBE, "scan", host, *map(str, ports)]).stdout
        return list(json.loads(out))

    def start(self, ns: str, *args: str) -> subprocess.Popen[bytes]:
        """A netprobe server in `ns`, up once it printed "ready"."""
        proc = self.net.popen(ns, [sys.executable, PROBE, *args], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        return proc

    def helper(self, *extra: str) -> Helper:
        """Start the real helper process inside srv and wait until it answers."""
        log = self.tmp / f"helper-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "agent.firewall", "--state-dir", str(self.state_dir),
                "--run-dir", str(self.run_dir), *extra]  # fmt: skip
        with log.open("wb") as f:
            proc = self.net.popen(self.net.srv, argv, private_etc=self.ufw, stderr=f, cwd=REPO)
        client = FirewallClient(BusEndpoints(self.run_dir))
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"helper exited: {log.read_text()}"
            if (self.run_dir / "firewall.sock").exists():
                try:
                    client.request(StatusRequest(), 1.0)
                    return Helper(client, proc, self.state_dir / "firewall", self.run_dir, log)
                except FirewallUnavailable:
                    pass
            assert time.monotonic() < deadline, f"helper did not start: {log.read_text()}"
            time.sleep(0.05)

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`berth firewall ARGS` inside srv (in-process unless a helper runs)."""
        argv = [sys.executable, "-m", "agent.cli", "firewall", *args,
                "--state-dir", str(self.state_dir), "--run-dir", str(self.run_dir)]  # fmt: skip
        cmd = self.net.argv(self.net.srv, argv, private_etc=self.ufw)
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=60, env=env, cwd=REPO,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip


def _fw_env(tmp_path: Path, ufw: bool) -> Iterator[FwEnv]:
    require_root()
    require_tool("ip", "nft", "unshare", *(["ufw", "iptables-save"] if ufw else []))
    with netns_pair("fw") as net:
        if ufw:
            net.private_etc_copies(tmp_path)
        net.run(net.srv, ["nft", "-f", "-"], input=OTHER_TABLE)
        (tmp_path / "run").mkdir()
        yield FwEnv(net, tmp_path, ufw)


@pytest.fixture
def fw(tmp_path: Path) -> Iterator[FwEnv]:
    """A namespace pair for the nftables backend."""
    yield from _fw_env(tmp_path, ufw=False)


@pytest.fixture(params=["nftables", "ufw"])
def fw_any(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FwEnv]:
    """A namespace pair for either backend (UFW with private /etc copies)."""
    yield from _fw_env(tmp_path, ufw=request.param == "ufw")

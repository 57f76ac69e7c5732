"""The one-line install on a fresh Debian server with a real systemd (issue 8), end to end.

A booted bookworm container (systemd-nspawn, its own network namespace) reaches the
control plane over a veth; the control plane serves install.sh, the wheels and the units;
the example stack's repository is served by `git daemon` on the same address. Then, in
order: the one-line install (mode proxy-only); every unit active; the proxies and the DNS
responder not root; the stack served through the external proxy from outside; each
component SIGKILLed and back; a reboot without the control plane; tunnel-only leaves no
port reachable from outside; the uninstall leaves no units, users, rules or DNS changes.
"""

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from controlplane.demo import example_stack, make_example_repo
from installer.layout import AGENT_UNITS
from tests.installer.machine import Server, ensure_server_rootfs, ensure_wheelhouse
from tests.support.berth import text as get
from tests.support.berth import wait_until
from tests.support.controlplane import create_admin_token, migrate
from tests.support.env import require_root, require_tool
from tests.support.ports import free_port
from tests.support.procs import terminate

pytestmark = [pytest.mark.root, pytest.mark.slow]

SERVICES = [u for u in AGENT_UNITS if u.endswith(".service")]
UNPRIVILEGED = ("berth-proxy.service", "berth-internal-proxy.service", "berth-dns.service")
PROXY_PORT = 8080
ASK_FIREWALL = (
    "from pathlib import Path; from agent.bus import BusEndpoints; "
    "from agent.bus.firewall import FirewallClient, StatusRequest; "
    "r = FirewallClient(BusEndpoints(Path('/run/berth'))).request(StatusRequest(), 10); "
    "print(r.ok, r.field)"
)
API_TEXT = "Hello from the api service"


@dataclass
class ControlPlane:
    url: str
    db: str
    admin: str
    bind: str
    wheelhouse: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    repos: Path | None = None  # what git daemon serves (a test may commit there)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "controlplane", "serve", "--db", self.db,
                 "--bind", self.bind, "--public-url", self.url, "--wheelhouse", str(self.wheelhouse)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        wait_until("the control plane", lambda: requests.get(self.url + "/healthz", timeout=2).ok)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None

    def api(self, method: str, path: str, **kw: object) -> dict:  # type: ignore[type-arg]
        resp = requests.request(method, f"{self.url}/api/v1{path}", timeout=30,
                                headers={"Authorization": f"Bearer {self.admin}"}, **kw)  # type: ignore[arg-type]  # fmt: skip
        assert resp.ok, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()  # type: ignore[no-any-return]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, ControlPlane, str]]:
    require_root()
    require_tool("debootstrap", "systemd-nspawn", "nsenter", "git")
    tmp = tmp_path_factory.mktemp("install-e2e")
    rootfs = ensure_server_rootfs()
    wheelhouse = ensure_wheelhouse(tmp / "wheelhouse")
    repo_url_local = make_example_repo(tmp / "repos" / "example")
    assert repo_url_local.startswith("file://")
    server = Server(rootfs)
    daemon: subprocess.Popen[bytes] | None = None
    cp: ControlPlane | None = None
    try:
        server.start()
        git_port, cp_port = free_port(), free_port()
        daemon = subprocess.Popen(
            ["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={tmp / 'repos'}",
             f"--listen={server.host_ip}", f"--port={git_port}", str(tmp / "repos")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        db = f"sqlite:///{tmp / 'cp.sqlite3'}"
        migrate(db)
        url = f"http://{server.host_ip}:{cp_port}"
        cp = ControlPlane(url, db, create_admin_token(db, "e2e"), f"{server.host_ip}:{cp_port}",
                          wheelhouse, tmp / "controlplane.log", repos=tmp / "repos")  # fmt: skip
        cp.start()
        wait_until("git daemon", lambda: reachable(server.host_ip, git_port))
        yield server, cp, f"git://{server.host_ip}:{git_port}/example"
    finally:
        if cp is not None:
            cp.stop()
        if daemon is not None:
            daemon.terminate()
            daemon.wait(10)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main_pid(server: Server, unit: str) -> int:
    out = server.exec(["systemctl", "show", "-p", "MainPID", "--value", unit], check=True)
    return int(out.stdout.strip() or 0)


def proc_status(server: Server, pid: int) -> dict[str, str]:
    text = server.exec(["cat", f"/proc/{pid}/status"], check=True).stdout
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def all_active(server: Server) -> bool:
    states = [server.exec(["systemctl", "is-active", u]).stdout.strip() for u in AGENT_UNITS]
    return all(s == "active" for s in states)


def serving(server: Server) -> bool:
    base = f"http://{server.ip}:{PROXY_PORT}"
    # "/" is web, which fetched api through http://api.svc.internal: DNS wiring + internal proxy
    return API_TEXT in get(base + "/api/hello") and API_TEXT in get(base + "/")


def service_pids(server: Server) -> dict[str, int]:
    # the service processes themselves (each runs under a `sh -c` of its own)
    out = server.exec(["pgrep", "-u", "berth-svc", "-f", "^python3 [a-z]+/app.py"]).stdout.split()
    return {p: int(p) for p in out}


def sh(server: Server, line: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`line` as root's login would run it: none of the test host's environment leaks in."""
    env = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME=/root", "LANG=C.UTF-8"]  # fmt: skip
    return server.exec([*env, "sh", "-c", line], timeout=timeout)


def debug(server: Server) -> str:
    return server.exec("systemctl --no-pager status 'berth-*' | tail -80; "
                       "journalctl --no-pager -n 80 -u 'berth-*'").stdout  # fmt: skip


def test_one_line_install_to_uninstall(world: tuple[Server, ControlPlane, str]) -> None:
    server, cp, repo_url = world
    spec = example_stack(repo_url, poll_interval_s=1, proxy_port=PROXY_PORT)
    spec["security_mode"] = "proxy-only"
    stack = cp.api("POST", "/stacks", json=spec)
    token = cp.api("POST", f"/stacks/{stack['id']}/install-tokens")["token"]
    nft_before = server.exec(["nft", "-s", "list", "ruleset"], check=True).stdout
    hosts_before = server.exec(["cat", "/etc/hosts"], check=True).stdout

    # a wrong token: stopped early, nothing left behind
    bad = sh(server, f"curl -fsSL {cp.url}/install.sh | sh -s -- --token nope", timeout=300)
    assert bad.returncode != 0 and "install token" in bad.stderr, bad.stderr
    assert server.exec("ls -d /opt/berth /etc/berth /var/lib/berth 2>/dev/null").stdout == ""
    assert server.exec(["getent", "passwd", "berth"]).returncode != 0

    # a package changed after the script was fetched (in transit, a swapped mirror): the
    # script's own SHA-256 list refuses it before anything is installed (issue 15 item 15)
    assert sh(server, f"curl -fsSL -o /root/install.sh {cp.url}/install.sh").returncode == 0
    wheel = next(cp.wheelhouse.glob("berth-*.whl"))
    original = wheel.read_bytes()
    wheel.write_bytes(original + b"tampered")
    try:
        tampered = sh(server, f"sh /root/install.sh --token {token}; rm -f /root/install.sh")
    finally:
        wheel.write_bytes(original)
    assert "checksum mismatch" in tampered.stderr, tampered.stderr
    assert server.exec("ls -d /opt/berth /etc/berth /var/lib/berth 2>/dev/null").stdout == ""

    # --- the one-line install, mode proxy-only -------------------------------------------
    line = f"curl -fsSL {cp.url}/install.sh | sh -s -- --token {token} --security-mode proxy-only"
    done = sh(server, line, timeout=400)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{debug(server)}"
    assert "Berth agent installed." in done.stdout and "proxy-only" in done.stdout, done.stdout

    assert all_active(server), debug(server)
    for unit in (*UNPRIVILEGED, "berth-reconciler.service"):
        status = proc_status(server, main_pid(server, unit))
        assert status["Uid"].split()[0] != "0", f"{unit} runs as root: {status['Uid']}"
    for unit in UNPRIVILEGED:
        assert int(proc_status(server, main_pid(server, unit))["CapEff"], 16) & ~(1 << 10) == 0
    cred = server.exec(["stat", "-c", "%a %U", "/var/lib/berth/agent.sqlite3"], check=True)
    assert cred.stdout.split() == ["600", "berth"]
    for side in ("-wal", "-shm"):  # issue 15.2: the credential is in the WAL too
        mode = server.exec(["stat", "-c", "%a", f"/var/lib/berth/agent.sqlite3{side}"])
        assert mode.stdout.strip() in ("", "600"), (side, mode.stdout)
    # issue 15.5: the helper's socket has a group of its own, with the reconciler only, and
    # a process as the external proxy's user, handed that group anyway, is refused
    sock = server.exec(["stat", "-c", "%a %G", "/run/berth/firewall.sock"], check=True)
    assert sock.stdout.split() == ["660", "berth-firewall"]
    assert "berth-firewall" in server.exec(["id", "-nG", "berth"], check=True).stdout.split()
    assert (
        "berth-firewall"
        not in proc_status(server, main_pid(server, "berth-proxy.service"))["Groups"]
    )
    proxy_uid = proc_status(server, main_pid(server, "berth-proxy.service"))["Uid"].split()[0]
    gids = [server.exec(["getent", "group", g], check=True).stdout.split(":")[2]
            for g in ("berth", "berth-firewall")]  # fmt: skip
    asked = server.exec(["setpriv", f"--reuid={proxy_uid}", f"--regid={gids[0]}",
                         f"--groups={','.join(gids)}", "/opt/berth/venv/bin/python", "-c",
                         ASK_FIREWALL])  # fmt: skip
    assert asked.stdout.split() == ["False", "peer"], f"{asked.stdout}\n{asked.stderr}"

    wait_until("the stack served from outside", lambda: serving(server), 120)
    services = service_pids(server)
    assert len(services) == 2
    everything = server.exec(["pgrep", "-u", "berth-svc"]).stdout.split()
    for pid in map(int, everything):  # user code: berth-svc, no capability at all
        status = proc_status(server, pid)
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
    # proxy-only: the proxy port is open, nothing else is
    assert not reachable(server.ip, 80) and not reachable(server.ip, 22)

    # --- the reconciler crashes alone: restarted, services untouched (re-adopted) ---------
    before = main_pid(server, "berth-reconciler.service")
    server.exec(
        ["systemctl", "kill", "--kill-whom=main", "-s", "KILL", "berth-reconciler"], check=True
    )
    wait_until("the reconciler restarted",
               lambda: main_pid(server, "berth-reconciler.service") not in (0, before), 60)  # fmt: skip
    wait_until("serving", lambda: serving(server), 60)
    assert service_pids(server) == services, "a reconciler restart restarted the services"

    # --- each component SIGKILLed (its whole cgroup): restarted by systemd, serving again --
    for unit in SERVICES:
        before = main_pid(server, unit)
        killed = server.exec(["systemctl", "kill", "-s", "KILL", unit])
        # systemd (252) sometimes reports EIO for the rest of the cgroup after killing the
        # main process (a race in its cgroup walk): the restart below is what matters
        assert killed.returncode == 0 or "auxiliary processes" in killed.stderr, killed.stderr
        wait_until(f"{unit} restarted", lambda u=unit, b=before: main_pid(server, u) not in (0, b)
                   and server.exec(["systemctl", "is-active", u]).stdout.strip() == "active", 60)  # fmt: skip
        wait_until(f"serving after killing {unit}", lambda: serving(server), 90)

    # --- reboot, without the control plane ------------------------------------------------
    cp.stop()
    server.reboot()
    wait_until("every unit after the reboot", lambda: all_active(server), 90)
    wait_until("serving after the reboot, no control plane", lambda: serving(server), 120)
    cp.start()

    # --- tunnel-only: nothing reachable from outside --------------------------------------
    spec["security_mode"] = "tunnel-only"
    cp.api("PUT", f"/stacks/{stack['id']}", json=spec)
    again = sh(
        server,
        f"curl -fsSL {cp.url}/install.sh | sh -s -- --security-mode tunnel-only --consent-block-ssh",
        timeout=300,
    )
    assert again.returncode == 0, f"{again.stdout}\n{again.stderr}\n{debug(server)}"
    assert "already registered" in again.stderr
    # a re-run installs into a fresh venv and switches the units to it (issue 16)
    assert "berth-upgrade: switching /opt/berth/venv -> /opt/berth/venvs/" in again.stderr
    wait_until("the proxy on loopback only",
               lambda: API_TEXT in server.exec(["curl", "-fsS", f"http://127.0.0.1:{PROXY_PORT}/api/hello"]).stdout)  # fmt: skip
    for port in (PROXY_PORT, 80, 53, 22):
        assert not reachable(server.ip, port), f"port {port} reachable in tunnel-only"

    # --- uninstall: no units, users, rules or DNS changes left ----------------------------
    gone = sh(server, f"curl -fsSL {cp.url}/uninstall.sh | sh -s -- --purge", timeout=300)
    assert gone.returncode == 0, (
        f"{gone.stdout}\n{gone.stderr}\n" + server.exec("ps -eo pid,ppid,pgid,user,cmd").stdout
    )
    assert server.exec("systemctl list-units --all --no-legend 'berth*'").stdout.strip() == ""
    assert server.exec("ls /etc/systemd/system | grep berth").stdout == ""
    for name in ("berth", "berth-svc"):
        assert server.exec(["getent", "passwd", name]).returncode != 0
    for group in ("berth", "berth-firewall"):
        assert server.exec(["getent", "group", group]).returncode != 0
    assert server.exec(["nft", "-s", "list", "ruleset"], check=True).stdout == nft_before
    assert server.exec(["cat", "/etc/hosts"], check=True).stdout == hosts_before
    left = server.exec("ls -d /opt/berth /etc/berth /run/berth /var/lib/berth* "
                       "/etc/systemd/resolved.conf.d/berth.conf 2>/dev/null").stdout  # fmt: skip
    assert left == ""
    assert server.exec(["pgrep", "-f", "app.py"]).stdout == "", "services still running"

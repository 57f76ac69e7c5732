"""Resolved mode where systemd-resolved really runs: a booted Debian container (nspawn).

In the container (its own network namespace, see tests/support/container.py): Berth's
wiring routes `~svc.internal` to the responder on 127.0.0.153:53, glibc's `getent` finds
`api.svc.internal` through nss-resolve -> systemd-resolved -> Berth, other names are
untouched, a service reaches `http://api.svc.internal/` through the internal proxy, and
reverting the wiring makes the names disappear again.
"""

import time
from collections.abc import Iterator

import pytest

from agent.bus.messages import Route, RouteTable
from tests.support.container import Container, ensure_berth_venv, ensure_rootfs
from tests.support.env import require_root, require_tool

pytestmark = [pytest.mark.root, pytest.mark.slow]

BERTH = "/opt/berth-venv/bin/berth"
PY = "/opt/berth-venv/bin/python3"
STATE = "/var/lib/berth"
DROPIN = "/etc/systemd/resolved.conf.d/berth.conf"
WIRING = (
    "import sys; from pathlib import Path; from agent import resolverwiring as wiring; "
    "from agent.settings import AgentSettings; "
    f"s = AgentSettings(state_dir=Path('{STATE}'), run_dir=Path('{STATE}/run')); "
    "print(wiring.apply_wiring(s, ['api.svc.internal']) if sys.argv[1] == 'apply' "
    "else wiring.decide_mode(s) if sys.argv[1] == 'mode' else wiring.revert_wiring(s))"
)


@pytest.fixture(scope="module")
def ct() -> Iterator[Container]:
    require_root()
    require_tool("debootstrap", "systemd-nspawn", "nsenter", "unshare", "ip")
    with Container(ensure_rootfs(), venv=ensure_berth_venv(), mount_repo=True) as c:
        c.add_uplink()  # resolved queries nobody while the network looks down
        yield c


def unit(ct: Container, name: str, exec_start: str, extra: str = "") -> None:
    ct.write_file(
        f"/etc/systemd/system/{name}.service",
        f"[Service]\nType=notify\nNotifyAccess=main\nExecStart={exec_start}\n{extra}\n",
    )
    ct.exec(["systemctl", "daemon-reload"], check=True)
    proc = ct.exec(["systemctl", "start", f"{name}.service"], timeout=60)
    assert proc.returncode == 0, ct.exec(["journalctl", "-u", name, "--no-pager"]).stdout


def getent(ct: Container, name: str, want_found: bool, timeout: float = 10.0) -> str:
    """`getent hosts name` inside, retried while resolved restarts."""
    deadline = time.monotonic() + timeout
    while True:
        proc = ct.exec(["getent", "hosts", name])
        if (proc.returncode == 0) is want_found or time.monotonic() > deadline:
            return proc.stdout.strip() if proc.returncode == 0 else ""
        time.sleep(0.2)


def test_resolved_routes_svc_internal_to_berth(ct: Container) -> None:
    assert ct.exec(["systemctl", "is-active", "systemd-resolved"]).stdout.strip() == "active"
    table = RouteTable(version=(1, 1), routes=(Route("api", 8000), Route("web", 8001)))
    ct.exec(f"mkdir -p {STATE}/cache {STATE}/run && chown -R nobody:nogroup {STATE}", check=True)
    for component in ("dns", "internal-proxy"):
        ct.write_file(f"{STATE}/cache/{component}-routes.json", table.to_json())

    # the installer's part (root): `auto` finds resolved active and writes the drop-in
    assert ct.exec([PY, "-c", WIRING, "apply"], check=True).stdout.strip() == "resolved"
    dropin = ct.exec(["cat", DROPIN], check=True).stdout
    assert "DNS=127.0.0.153\nDomains=~svc.internal\n" in dropin

    # the responder as production runs it: unprivileged, CAP_NET_BIND_SERVICE only
    unit(
        ct,
        "berth-dns",
        f"{BERTH} agent dns --state-dir {STATE}",
        "User=nobody\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n"
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\nWatchdogSec=30",
    )
    assert getent(ct, "api.svc.internal", True) == "127.0.0.1       api.svc.internal"
    assert getent(ct, "web.svc.internal", True).startswith("127.0.0.1")
    assert "svc.internal" not in ct.exec(["cat", "/etc/hosts"]).stdout  # it came over DNS
    assert getent(ct, "nope.svc.internal", False) == ""
    assert getent(ct, "localhost", True)  # other lookups untouched
    status = ct.exec(["resolvectl", "status"]).stdout
    assert "~svc.internal" in status and "127.0.0.153" in status
    journal = ct.exec(["journalctl", "-u", "berth-dns", "--no-pager"]).stdout
    assert "Traceback" not in journal and "serving 2 names" in journal

    # a service reaches http://api.svc.internal/ through the internal proxy (Host routing)
    ct.exec(
        ["systemd-run", "--unit=backend", "-p", "User=nobody", "python3", "-m", "http.server",
         "8000", "--bind", "127.0.0.1", "--directory", "/usr/share/doc/curl"],
        check=True,
    )  # fmt: skip
    unit(ct, "berth-internal-proxy", f"{BERTH} agent internal-proxy --state-dir {STATE}")
    curl = ["systemd-run", "--wait", "--pipe", "--quiet", "-p", "DynamicUser=yes",
            "curl", "-sS", "--retry", "5", "--retry-connrefused", "http://api.svc.internal/"]  # fmt: skip
    page = ct.exec(curl, timeout=60)
    assert page.returncode == 0 and "copyright" in page.stdout, page.stdout + page.stderr

    # uninstall: the drop-in goes, resolved forgets the route, the responder may keep running
    removed = ct.exec([PY, "-c", WIRING, "revert"], check=True).stdout
    assert DROPIN in removed
    assert ct.exec(["test", "-e", DROPIN]).returncode == 1
    assert getent(ct, "api.svc.internal", False) == ""
    assert ct.exec(["systemctl", "is-active", "berth-dns"]).stdout.strip() == "active"
    ct.exec(["systemctl", "stop", "berth-dns", "berth-internal-proxy", "backend"])


def test_root_start_wires_itself_then_drops_root(ct: Container) -> None:
    """Started as root, the responder applies the resolved wiring, then runs as nobody."""
    unit(ct, "berth-dns-root", f"{BERTH} agent dns --state-dir {STATE} --dns-wiring resolved")
    try:
        assert getent(ct, "api.svc.internal", True).startswith("127.0.0.1")
        pid = ct.exec(["systemctl", "show", "-P", "MainPID", "berth-dns-root"]).stdout.strip()
        uid_line = ct.exec(["grep", "^Uid:", f"/proc/{pid}/status"], check=True).stdout
        assert uid_line.split()[1:] == ["65534"] * 4  # real, effective, saved, fs: no way back
    finally:
        ct.exec(["systemctl", "stop", "berth-dns-root"])
        ct.exec([PY, "-c", WIRING, "revert"], check=True)
    assert ct.exec(["test", "-e", DROPIN]).returncode == 1


def test_auto_avoids_resolved_when_only_fallback_dns_would_resolve(ct: Container) -> None:
    """A global DNS= turns FallbackDNS= off: `auto` must not break other lookups so."""
    fallback = "/etc/systemd/resolved.conf.d/zz-test-fallback.conf"
    ct.write_file(fallback, "[Resolve]\nFallbackDNS=192.0.2.53\n")
    ct.exec(["systemctl", "restart", "systemd-resolved"], check=True)
    try:
        assert ct.exec([PY, "-c", WIRING, "mode"], check=True).stdout.strip() == "hosts"
        ct.exec(["resolvectl", "dns", "berth-up0", "192.0.2.1"], check=True)  # a real server
        assert ct.exec([PY, "-c", WIRING, "mode"], check=True).stdout.strip() == "resolved"
    finally:
        ct.exec(["rm", "-f", fallback])
        ct.exec(["resolvectl", "revert", "berth-up0"])
        ct.exec(["systemctl", "restart", "systemd-resolved"])

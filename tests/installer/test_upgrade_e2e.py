"""Agent upgrades on a real systemd server (issue 16), end to end.

The same world as the install test (a booted bookworm container reaching a control plane
that serves install.sh and a wheelhouse over a veth; its fixture is shared). After the
one-line install, the control plane's wheelhouse gets Berth wheels rebuilt from a copy
of this tree with higher versions, in turn:

1. a good one: the control plane says the agent is behind; `berth agent upgrade` puts it
   in a fresh venv beside the old one, switches the symlink, restarts the units one by
   one; every unit is active on the new venv and the control plane has its version;
2. one whose reconciler crashes at start: the upgrade switches back, exits 1 and says
   why; the units are active on the previous venv again, and the control plane's
   rolling upgrade (switched on meanwhile) stops on that server;
3. another good one: the rolling upgrade goes on by itself — the heartbeat's answer asks
   for it, berth-upgrade.path runs the upgrade as root — with no command on the server.
"""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from installer.layout import AGENT_UNITS
from tests.installer.machine import Server
from tests.installer.test_install_e2e import ControlPlane, all_active, debug, sh, world
from tests.support.berth import wait_until
from tests.support.container import CACHE_DIR, REPO

pytestmark = [pytest.mark.root, pytest.mark.slow]
__all__ = ["world"]  # the install test's fixture: the container and the control plane

SERVICES = [u for u in AGENT_UNITS if u.endswith(".service")]
BASE = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
CRASH = 'raise SystemExit("this reconciler is broken on purpose (upgrade test)")\n'


def publish(cp: ControlPlane, tmp: Path, version: str, broken: bool = False) -> None:
    """Put a Berth wheel of `version` (rebuilt from a copy of this tree) in the served
    wheelhouse instead of the current one; `broken`: its reconciler exits at start."""
    tree = tmp / f"src-{version}"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".venv", ".git")
    for item in ("agent", "controlplane", "installer"):
        shutil.copytree(REPO / item, tree / item, ignore=ignore)
    for item in ("README.md",):
        shutil.copy2(REPO / item, tree / item)
    project = (REPO / "pyproject.toml").read_text()
    (tree / "pyproject.toml").write_text(
        re.sub(r'^version = ".*"$', f'version = "{version}"', project, count=1, flags=re.M)
    )
    if broken:
        main = tree / "agent" / "reconciler" / "main.py"
        text = main.read_text()
        main.write_text(text.replace("    return run_reconciler(settings)\n", "    " + CRASH, 1))
    out = tmp / f"wheel-{version}"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
         "--find-links", str(CACHE_DIR / "build-wheels"), "-w", str(out), str(tree)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    for old in cp.wheelhouse.glob("berth-*.whl"):
        old.unlink()
    for whl in out.glob("berth-*.whl"):
        shutil.copy2(whl, cp.wheelhouse / whl.name)


def venv_of_units(server: Server) -> set[str]:
    """The venv directory each agent unit's main process runs from."""
    found = set()
    for unit in SERVICES:
        pid = server.exec(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout.strip()
        exe = server.exec(f"tr '\\0' '\\n' < /proc/{pid}/cmdline | head -1").stdout.strip()
        real = server.exec(["readlink", "-f", str(Path(exe).parent)]).stdout.strip()
        found.add(str(Path(real).parent))
    return found


def instance(cp: ControlPlane, stack_id: str) -> dict:  # type: ignore[type-arg]
    (only,) = cp.api("GET", f"/stacks/{stack_id}/instances")["instances"]
    return only  # type: ignore[no-any-return]


def test_upgrade_switch_back_and_rolling(
    world: tuple[Server, ControlPlane, str], tmp_path: Path
) -> None:
    server, cp, repo_url = world
    from controlplane.demo import example_stack

    stack = cp.api("POST", "/stacks", json=example_stack(repo_url, poll_interval_s=1))
    token = cp.api("POST", f"/stacks/{stack['id']}/install-tokens")["token"]
    done = sh(server, f"curl -fsSL {cp.url}/install.sh | sh -s -- --token {token}", timeout=400)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{debug(server)}"
    first = server.exec(["readlink", "-f", "/opt/berth/venv"], check=True).stdout.strip()
    assert first.startswith("/opt/berth/venvs/"), first
    wait_until(
        "the first version reported", lambda: instance(cp, stack["id"])["agent_version"] == BASE
    )
    got = instance(cp, stack["id"])
    assert (got["served_version"], got["agent_behind"]) == (BASE, False), got

    # --- 1. a good upgrade ----------------------------------------------------------------
    good = f"{BASE}.post1"
    publish(cp, tmp_path, good)
    assert cp.api("GET", "/version")["agent"] == good  # type: ignore[comparison-overlap]
    got = instance(cp, stack["id"])
    assert (got["served_version"], got["agent_behind"]) == (good, True), got
    up = sh(server, "/opt/berth/venv/bin/berth agent upgrade", timeout=600)
    assert up.returncode == 0, f"{up.stdout}\n{up.stderr}\n{debug(server)}"
    for line in ("creating /opt/berth/venvs/", "restarting berth-reconciler.service",
                 f"upgraded from {BASE} to {good}"):  # fmt: skip
        assert line in up.stderr, up.stderr
    assert all_active(server), debug(server)
    now = server.exec(["readlink", "-f", "/opt/berth/venv"], check=True).stdout.strip()
    assert now != first and Path(now).name.startswith(good + "-"), now
    assert venv_of_units(server) == {now}
    got = instance(cp, stack["id"])
    assert (got["agent_version"], got["agent_behind"]) == (good, False), got
    wait_until("the outcome in a heartbeat",
               lambda: instance(cp, stack["id"])["upgrade"]["outcome"] == "upgraded", 30)  # fmt: skip
    # the one before is kept to switch back to by hand
    assert server.exec(["test", "-d", first]).returncode == 0

    # --- 2. a broken upgrade switches back; the rolling upgrade stops on it --------------
    broken = f"{BASE}.post2"
    publish(cp, tmp_path, broken, broken=True)
    bad = sh(server, "/opt/berth/venv/bin/berth agent upgrade --unit-timeout 15", timeout=600)
    assert bad.returncode == 1, f"{bad.stdout}\n{bad.stderr}"
    assert "berth-reconciler.service is" in bad.stderr and "switching back" in bad.stderr
    assert f"upgrade to {broken} failed" in bad.stdout, bad.stdout
    assert server.exec(["readlink", "-f", "/opt/berth/venv"]).stdout.strip() == now
    wait_until("every unit active again", lambda: all_active(server), 60)
    assert venv_of_units(server) == {now}
    assert server.exec(f"ls -d /opt/berth/venvs/{broken}-* 2>/dev/null").stdout == ""

    # switched on now, it finds that failure and tells nobody
    cp.api("PUT", f"/stacks/{stack['id']}/agent-upgrades", json={"auto": True})

    def stopped() -> bool:
        got = instance(cp, stack["id"])
        rollout = cp.api("GET", f"/stacks/{stack['id']}/agent-upgrades")
        return got["upgrade"]["outcome"] == "failed" and rollout["state"] == "stopped"

    wait_until("the rolling upgrade stopped on the failure", stopped, 60)
    events = cp.api("GET", f"/stacks/{stack['id']}/events?type=upgrade&limit=50")["events"]
    assert any(f"upgrade to {broken} failed" in e["message"] for e in events), events

    # --- 3. a newer good version: the rolling upgrade goes on by itself ------------------
    auto = f"{BASE}.post3"
    publish(cp, tmp_path, auto)
    wait_until(
        f"the agent upgraded itself to {auto}",
        lambda: instance(cp, stack["id"])["agent_version"] == auto,
        400,
    )
    wait_until("the upgrade's own check done and reported",
               lambda: instance(cp, stack["id"])["upgrade"] == {"from": good, "to": auto, "outcome": "upgraded"},
               180)  # fmt: skip
    wait_until("the rolling upgrade done",
               lambda: cp.api("GET", f"/stacks/{stack['id']}/agent-upgrades")["state"] == "done",
               120)  # fmt: skip
    assert all_active(server), debug(server)
    latest = server.exec(["readlink", "-f", "/opt/berth/venv"], check=True).stdout.strip()
    assert Path(latest).name.startswith(auto + "-") and venv_of_units(server) == {latest}
    log = server.exec(["journalctl", "--no-pager", "-u", "berth-upgrade.service"]).stdout
    assert f"upgraded from {good} to {auto}" in log, log

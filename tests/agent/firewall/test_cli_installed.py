"""`berth firewall` on an installed server (issue 15.17): it finds the running helper from
the agent's env file as the installer writes it, and never acts on a state of its own
while a helper is installed. The helper and every command run in a namespace the test
made; the env file is a temporary copy (`--agent-env`), never /etc/berth/agent.env."""

import subprocess
import sys
from pathlib import Path

import pytest

from agent.bus.firewall import ApplyRequest
from agent.firewall.cli import DEFAULT_STATE_DIR, INSTALLED_STATE_DIR, locate
from tests.agent.firewall.conftest import REPO, FwEnv


def agent_env(run_dir: Path) -> str:
    """What the installer writes (installer/plan.py, render_agent_env)."""
    return (
        "# Written by the Berth installer (berth installer setup); re-run it to change.\n"
        "BERTH_AGENT_ARGS=--control-plane http://127.0.0.1:8000 --state-dir /var/lib/berth "
        f"--run-dir {run_dir} --dns-wiring auto --firewall-backend auto\n"
    )


def test_locate_prefers_flags_then_the_installed_agent_then_defaults(tmp_path: Path) -> None:
    env = agent_env(Path("/run/berth"))
    installed = locate(None, None, env)
    assert installed.run_dir == Path("/run/berth") and installed.installed
    assert installed.state_dir == INSTALLED_STATE_DIR  # the helper unit's --state-dir
    assert locate(tmp_path, tmp_path / "r", env).run_dir == tmp_path / "r"
    assert locate(tmp_path, None, env).state_dir == tmp_path
    plain = locate(None, None, None)
    assert plain.run_dir == DEFAULT_STATE_DIR / "run" and not plain.installed
    assert locate(None, None, "# no options\n").installed  # an unreadable or empty file too


def firewall(fw: FwEnv, *args: str) -> subprocess.CompletedProcess[str]:
    """`berth firewall ARGS` inside srv, with no --state-dir/--run-dir unless given."""
    argv = [sys.executable, "-m", "agent.cli", "firewall", *args]
    return subprocess.run(fw.net.argv(fw.net.srv, argv), capture_output=True, text=True,
                          timeout=60, cwd=REPO, stdin=subprocess.DEVNULL, check=False)  # fmt: skip


@pytest.mark.root
def test_status_finds_the_installed_helper_and_refuses_to_act_without_it(fw: FwEnv) -> None:
    env_file = fw.tmp / "agent.env"
    env_file.write_text(agent_env(fw.run_dir))
    helper = fw.helper()
    req = ApplyRequest(mode="tunnel-only", backend="nftables", confirm_timeout_s=0,
                       consent_block_ssh=True)  # fmt: skip
    assert helper.client.request(req).ok
    # the helper's state, found through the env file (before: `mode: open`, another state)
    status = firewall(fw, "status", "--agent-env", str(env_file))
    assert status.returncode == 0, status.stderr
    assert "mode: tunnel-only" in status.stdout

    fw.net.stop(helper.proc)
    before = fw.ruleset()
    inproc = fw.tmp / "in-process"
    for args in (["status"], ["revert", "--to", "baseline"],
                 ["apply", "--mode", "open", "--confirm-timeout", "0"]):  # fmt: skip
        run = firewall(fw, *args, "--agent-env", str(env_file), "--state-dir", str(inproc))
        assert run.returncode == 1, run.stdout
        assert "a firewall helper is installed" in run.stderr and "nothing was done" in run.stderr
    assert fw.ruleset() == before and not inproc.exists()
    # the operator's explicit choice (the uninstaller's, once the helper is gone)
    forced = firewall(fw, "status", "--agent-env", str(env_file), "--in-process",
                      "--state-dir", str(fw.state_dir))  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert "mode: tunnel-only" in forced.stdout

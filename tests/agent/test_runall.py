"""`berth agent run-all` as a real process: what its children import, what it reverts,
and what its command lines carry (issues 22 and 15.6)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.resolverwiring import render_resolved_dropin
from agent.runall import child_command, child_env, child_options
from agent.settings import TOKEN_ENV
from tests.support.dirs import world_dir
from tests.support.env import require_root
from tests.support.ports import free_port

BERTH_SCRIPT = Path(sys.executable).parent / "berth"  # the console script, not `python -m`

TRAP = """
import pathlib
pathlib.Path({marker!r}).write_text("imported from the working directory")
"""


def test_child_options_drop_run_alls_own_and_the_token_file():
    opts = ["--state-dir", "/s", "--token-file", "/t", "--token-file=/u", "--stop-services-on-exit"]
    assert child_options(opts) == ["--state-dir", "/s"]


def test_only_the_reconciler_gets_the_token_and_only_in_its_environment():
    base = {"PATH": "/bin", TOKEN_ENV: "berth_ins_x"}
    assert child_env("reconciler", "berth_ins_x", base)[TOKEN_ENV] == "berth_ins_x"
    for other in ("proxy", "internal-proxy", "dns", "firewall"):
        assert TOKEN_ENV not in child_env(other, "berth_ins_x", base)
    argv = child_command("reconciler", ["--state-dir", "/s"])
    assert argv[:2] == [sys.executable, "-I"] and not any("berth_ins" in a for a in argv)


def test_children_do_not_get_run_alls_systemd_notify_socket():
    """Under a systemd unit, a child's READY or FDSTORE would be taken for run-all's own."""
    base = {"PATH": "/bin", "NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    for component in ("reconciler", "proxy", "internal-proxy", "dns", "firewall"):
        assert child_env(component, None, base) == {"PATH": "/bin"}


def _wait_for(what, check, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def trap_dir():
    with world_dir("berth-trap-") as d:
        yield d


def test_run_all_ignores_the_working_directory_and_keeps_a_foreign_dropin(trap_dir):
    """Issue 22: started from a directory holding a booby-trapped `agent/` package, no
    child imports it; with `--dns-wiring none`, a graceful stop leaves a resolved drop-in
    that another agent owns where it is (the machine's /etc/systemd is replaced by a copy
    in a private mount namespace)."""
    require_root()
    marker = trap_dir / "TRAPPED"
    (trap_dir / "agent").mkdir()
    for name in ("__init__.py", "cli.py", "__main__.py"):
        (trap_dir / "agent" / name).write_text(TRAP.format(marker=str(marker)))
    etc_systemd = trap_dir / "etc-systemd"
    dropin = etc_systemd / "resolved.conf.d" / "berth.conf"
    dropin.parent.mkdir(parents=True)
    dropin.write_text(render_resolved_dropin("127.0.0.153:53"))  # another Berth agent's
    state = trap_dir / "state"
    log = trap_dir / "run-all.log"
    argv = [
        "unshare", "-m", "--propagation", "private", "sh", "-c",
        'mount --bind "$0" /etc/systemd && exec "$@"', str(etc_systemd),
        str(BERTH_SCRIPT), "agent", "run-all", "--state-dir", str(state),
        "--proxy-bind", f"127.0.0.1:{free_port()}", "--internal-bind", f"127.0.0.1:{free_port()}",
        "--dns-bind", f"127.0.0.1:{free_port()}", "--dns-wiring", "none",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=trap_dir, env=env, stdout=out, stderr=out)
    try:
        # every child has run its own code: the helper, the responder and a proxy answer
        for line in ("firewall helper listening", "answering on", "started proxy"):
            _wait_for(line, lambda line=line: line in log.read_text() or marker.exists())
        marker_before_stop = marker.exists()
        assert proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert not marker_before_stop, "a child imported the agent/ package of the working directory"
    assert dropin.exists(), "run-all removed a resolved drop-in it never applied"
    assert proc.returncode == 0, log.read_text()


def test_the_token_is_refused_on_the_command_line_and_read_from_a_private_file(tmp_path):
    import argparse

    from agent import settings

    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    with pytest.raises(ValueError, match=TOKEN_ENV):
        settings.from_args(parser.parse_args(["--token", "berth_ins_x"]))
    token_file = tmp_path / "token"
    token_file.write_text("berth_ins_file\n")
    token_file.chmod(0o644)
    with pytest.raises(ValueError, match="readable by others"):
        settings.read_token(token_file, {})
    token_file.chmod(0o600)
    assert settings.read_token(token_file, {TOKEN_ENV: "env"}) == "berth_ins_file"
    assert settings.read_token(None, {TOKEN_ENV: "berth_ins_env"}) == "berth_ins_env"
    assert settings.read_token(None, {}) is None

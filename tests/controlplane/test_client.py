"""`berth stack ...` and `berth token create` as real processes against a real server."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.controlplane.harness import REPO, ControlPlane, berth
from tests.support.controlplane import migrate


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SQLite only: the client does not care which database the server uses."""
    url = f"sqlite:///{tmp_path_factory.mktemp('db')}/client.db"
    migrate(url)
    return url


STACK_TOML = """
name = "{name}"
security_mode = "open"
poll_interval_s = {poll}

[proxy]
port = 18080

[[services]]
name = "web"
repo = "file://{repo}"
ref = "main"
run = "python3 app.py"
path = "/"
port = 19001

[services.env]
GREETING = "hi"
"""


def test_apply_get_list_rollback_token(
    server: ControlPlane, admin_token: str, repo: Path, tmp_path: Path, unique: str
) -> None:
    env = {"BERTH_URL": server.url, "BERTH_TOKEN": admin_token}
    name = f"cli-{unique}"
    stack_file = tmp_path / "stack.toml"
    stack_file.write_text(STACK_TOML.format(name=name, poll=2, repo=repo))

    first = berth("stack", "apply", "-f", str(stack_file), "--yes", env=env)
    assert first.returncode == 0, first.stderr
    assert f"created stack {name}" in first.stdout and "version 1" in first.stdout
    assert "+ service web" in first.stdout and "+ env.GREETING = 'hi'" in first.stdout

    same = berth("stack", "apply", "-f", str(stack_file), env=env)
    assert same.returncode == 0 and same.stdout == ""  # unchanged: prints nothing, asks nothing
    assert "nothing to change" in same.stderr

    stack_file.write_text(STACK_TOML.format(name=name, poll=7, repo=repo))
    # not a terminal and no --yes: the diff is shown, nothing is applied, and it says why
    refused = berth("stack", "apply", "-f", str(stack_file), env=env)
    assert refused.returncode == 1 and "~ poll_interval_s: 2.0 -> 7.0" in refused.stdout
    assert "not a terminal" in refused.stderr and "--yes" in refused.stderr
    assert "v1" in berth("stack", "versions", name, env=env).stdout
    assert "v2" not in berth("stack", "versions", name, env=env).stdout

    second = berth("stack", "apply", "-f", str(stack_file), "--yes", env=env)
    assert second.returncode == 0, second.stderr
    assert "~ poll_interval_s: 2.0 -> 7.0" in second.stdout
    assert "version 2" in second.stdout

    diff = berth("stack", "diff", name, "1", "2", env=env)
    assert diff.returncode == 0 and f"stack {name}: v1 -> v2" in diff.stdout
    assert "~ poll_interval_s: 2.0 -> 7.0" in diff.stdout
    as_json = json.loads(berth("stack", "diff", name, "1", "2", "--json", env=env).stdout)
    assert as_json["stack"] == [{"field": "poll_interval_s", "kind": "changed",
                                 "before": 2.0, "after": 7.0}]  # fmt: skip
    bad = berth("stack", "diff", name, "1", "9", env=env)
    assert bad.returncode == 1 and "versions are 1 to 2" in bad.stderr

    listed = berth("stack", "list", env=env)
    assert name in listed.stdout and "v2" in listed.stdout
    got = berth("stack", "get", name, env=env)
    assert '"poll_interval_s": 7.0' in got.stdout

    back = berth("stack", "rollback", name, "1", env=env)
    assert back.returncode == 0 and "now version 3" in back.stdout, back.stderr
    assert "v3" in berth("stack", "versions", name, env=env).stdout

    tok = berth("token", "create", "--stack", name, env=env)
    assert tok.returncode == 0 and tok.stdout.strip().startswith("berth_ins_")
    assert "sudo sh -s -- --token" in tok.stderr

    trail = berth("audit", "--stack", name, env=env)
    assert trail.returncode == 0, trail.stderr
    lines = trail.stdout.splitlines()
    assert [line.split("\t")[2] for line in lines] == [
        "install_token.create", "stack.rollback", "stack.update", "stack.create"
    ]  # fmt: skip
    assert "token:tests" in lines[0] and f"{name} v2->v3" in lines[1]
    page = berth("audit", "--stack", name, "--limit", "2", env=env)
    assert len(page.stdout.splitlines()) == 2 and "--before" in page.stderr
    assert json.loads(berth("audit", "--json", "--limit", "1", env=env).stdout)["records"]
    wrong = berth("audit", "--since", "yesterday", env=env)
    assert wrong.returncode == 1 and "(since)" in wrong.stderr


def apply_on_terminal(stack_file: Path, env: dict[str, str], answer: str) -> tuple[int, str]:
    """`berth stack apply` with a pseudo-terminal as stdin, answering the question."""
    controller, terminal = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "stack", "apply", "-f", str(stack_file)],
            stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **env}, cwd=REPO,
        )  # fmt: skip
        os.write(controller, answer.encode() + b"\n")  # waits in the terminal's buffer
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert "[y/N]" in err
    return proc.returncode, out + err


def test_apply_asks_on_a_terminal(
    server: ControlPlane, admin_token: str, repo: Path, tmp_path: Path, unique: str
) -> None:
    env = {"BERTH_URL": server.url, "BERTH_TOKEN": admin_token}
    name = f"tty-{unique}"
    stack_file = tmp_path / "stack.toml"
    stack_file.write_text(STACK_TOML.format(name=name, poll=2, repo=repo))
    code, text = apply_on_terminal(stack_file, env, "n")
    assert code == 1 and "not applied" in text and "+ service web" in text
    assert name not in berth("stack", "list", env=env).stdout
    code, text = apply_on_terminal(stack_file, env, "y")
    assert code == 0 and f"created stack {name}" in text, text
    assert name in berth("stack", "list", env=env).stdout


def test_client_errors(server: ControlPlane, admin_token: str, repo: Path, tmp_path: Path) -> None:
    env = {"BERTH_URL": server.url, "BERTH_TOKEN": admin_token}
    bad = tmp_path / "bad.toml"
    bad.write_text(STACK_TOML.format(name="bad-port", poll=2, repo=repo).replace("19001", "80"))
    run = berth("stack", "apply", "-f", str(bad), "--yes", env=env)
    assert run.returncode == 1 and "services[0].port" in run.stderr
    bad.write_text("name = [unclosed")
    assert berth("stack", "apply", "-f", str(bad), "--yes", env=env).returncode == 1
    assert berth("stack", "get", "no-such-stack", env=env).returncode == 1
    run = berth("stack", "list", env={"BERTH_URL": server.url, "BERTH_TOKEN": "wrong"})
    assert run.returncode == 1 and "401" in run.stderr
    run = berth("stack", "list", env={"BERTH_URL": server.url, "BERTH_TOKEN": ""})
    assert run.returncode == 1 and "BERTH_TOKEN" in run.stderr


def test_notify_commands(server: ControlPlane, admin_token: str, repo: Path, unique: str) -> None:
    from tests.controlplane.receivers import WebhookReceiver

    env = {"BERTH_URL": server.url, "BERTH_TOKEN": admin_token}
    hook = WebhookReceiver()
    try:
        name = f"cli-hook-{unique}"
        added = berth("notify", "add", name, "--kind", "webhook", "--url", hook.url,
                      "--events", "deploy.failed,server.offline", "--rate", "10", env=env)  # fmt: skip
        assert added.returncode == 0, added.stderr
        hook.secret = added.stdout.strip().rsplit(" ", 1)[-1]
        listed = berth("notify", "list", env=env).stdout
        assert name in listed and "deploy.failed,server.offline" in listed and hook.url in listed
        assert berth("notify", "test", name, env=env).returncode == 0
        try:
            got = hook.wait_for(lambda g: bool(g))
        except AssertionError:
            raise AssertionError(server.log()[-3000:]) from None
        assert got[0].signed is True and got[0].json()["event"] == "test"
        deadline = time.monotonic() + 30
        while "ok" not in (log := berth("notify", "log", name, env=env).stdout):
            assert time.monotonic() < deadline, log
        assert "[Berth] test: " in log
        assert "server.online" in berth("notify", "events", env=env).stdout
        bad = berth("notify", "add", "x", "--kind", "email", "--smtp-host", "h", env=env)
        assert bad.returncode == 1 and "(to)" in bad.stderr
        assert berth("notify", "remove", name, env=env).returncode == 0
        assert name not in berth("notify", "list", env=env).stdout
        assert berth("notify", "log", name, env=env).returncode == 1
    finally:
        hook.close()

"""`berth stack ...` and `berth token create` as real processes against a real server."""

from pathlib import Path

import pytest

from controlplane.testing import migrate
from tests.controlplane.harness import ControlPlane, berth


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

    first = berth("stack", "apply", "-f", str(stack_file), env=env)
    assert first.returncode == 0, first.stderr
    assert f"created stack {name}" in first.stdout and "version 1" in first.stdout
    assert '+  "version": 1' in first.stdout

    same = berth("stack", "apply", "-f", str(stack_file), env=env)
    assert same.returncode == 0 and same.stdout == ""  # unchanged: prints nothing

    stack_file.write_text(STACK_TOML.format(name=name, poll=7, repo=repo))
    second = berth("stack", "apply", "-f", str(stack_file), env=env)
    assert second.returncode == 0, second.stderr
    assert (
        '-  "poll_interval_s": 2.0,' in second.stdout
        and '+  "poll_interval_s": 7.0,' in second.stdout
    )
    assert "version 2" in second.stdout

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


def test_client_errors(server: ControlPlane, admin_token: str, repo: Path, tmp_path: Path) -> None:
    env = {"BERTH_URL": server.url, "BERTH_TOKEN": admin_token}
    bad = tmp_path / "bad.toml"
    bad.write_text(STACK_TOML.format(name="bad-port", poll=2, repo=repo).replace("19001", "80"))
    run = berth("stack", "apply", "-f", str(bad), env=env)
    assert run.returncode == 1 and "services[0].port" in run.stderr
    bad.write_text("name = [unclosed")
    assert berth("stack", "apply", "-f", str(bad), env=env).returncode == 1
    assert berth("stack", "get", "no-such-stack", env=env).returncode == 1
    run = berth("stack", "list", env={"BERTH_URL": server.url, "BERTH_TOKEN": "wrong"})
    assert run.returncode == 1 and "401" in run.stderr
    run = berth("stack", "list", env={"BERTH_URL": server.url, "BERTH_TOKEN": ""})
    assert run.returncode == 1 and "BERTH_TOKEN" in run.stderr

"""`berth` help: every command and subcommand lists its subcommands with a one-line
description and an example; `berth` (or a command) without a subcommand prints that help
and exits 2."""

import argparse

import pytest

from agent import cli as berth_cli
from controlplane import cli as cp_cli
from controlplane import client
from controlplane.client import stack as client_stack
from tests.controlplane.harness import berth

# (argv, the subcommands its help must list)
GROUPS = [
    (["stack"], [c.name for c in client.STACK_COMMANDS]),
    (["token"], [c.name for c in client.TOKEN_COMMANDS]),
    (["notify"], [c.name for c in client.NOTIFY_COMMANDS]),
    (["controlplane"], [c.name for c in cp_cli.COMMANDS]),
    (["controlplane", "token"], [c.name for c in cp_cli.TOKEN_COMMANDS]),
    (["controlplane", "user"], [c.name for c in cp_cli.USER_COMMANDS]),
]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = berth_cli.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_berth_without_arguments_prints_the_help_and_exits_2() -> None:
    bare = berth()
    assert bare.returncode == 2
    helped = berth("--help")
    assert helped.returncode == 0 and helped.stdout == bare.stderr
    for command in ("controlplane", "stack", "token", "audit", "notify", "agent", "firewall",
                    "installer", "demo"):  # fmt: skip
        assert f"\n  {command} " in helped.stdout
        assert f"e.g. berth {command}" in helped.stdout
    unknown = berth("nope")
    assert unknown.returncode == 2 and "unknown command 'nope'" in unknown.stderr


@pytest.mark.parametrize(("argv", "subcommands"), GROUPS, ids=[" ".join(a) for a, _ in GROUPS])
def test_every_group_lists_subcommands_with_examples(
    argv: list[str], subcommands: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run(argv, capsys)
    assert code == 2 and "commands:" in text  # no subcommand: the help, exit 2
    code, helped = run([*argv, "--help"], capsys)
    assert code == 0
    for name in subcommands:
        assert f"\n  {name} " in helped
        assert f"berth {' '.join(argv)} {name}" in helped.split("commands:")[1]
        code, sub = run([*argv, name, "--help"], capsys)
        assert code == 0 and ("example:\n  " in sub or "e.g. " in sub), sub


def test_agent_and_audit_help_have_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(["agent", "--help"], capsys)
    assert code == 0
    for component in ("run-all", *berth_cli.COMPONENTS):
        assert f"\n  {component} " in text and f"e.g. berth agent {component}" in text
    code, text = run(["audit", "--help"], capsys)
    assert code == 0 and "examples:\n  berth audit" in text


def test_a_bad_option_still_says_what_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(["stack", "diff", "web", "one", "2"], capsys)
    assert code == 2 and "invalid int value: 'one'" in text
    assert isinstance(client_stack._stack_parser(), argparse.ArgumentParser)


@pytest.mark.parametrize(
    ("command", "subcommands"),
    [
        ("agent", ["run-all", *berth_cli.COMPONENTS, "upgrade"]),
        ("firewall", ["status", "plan", "apply", "confirm", "revert"]),
        ("installer", ["setup", "remove", "wire-dns", "wheelhouse"]),
    ],
)
def test_agent_firewall_and_installer_list_their_commands_with_examples(
    command: str, subcommands: list[str]
) -> None:
    """Without a subcommand: the list on stderr and exit 2; with --help: on stdout, exit 0."""
    bare = berth(command)
    assert bare.returncode == 2
    helped = berth(command, "--help")
    assert helped.returncode == 0
    for text in (bare.stderr, helped.stdout):
        listed = text.split("commands:")[1] if "commands:" in text else text.split("components:")[1]
        for name in subcommands:
            assert f"\n  {name} " in listed, (command, name)
            assert f"e.g. berth {command} {name}" in listed, (command, name)

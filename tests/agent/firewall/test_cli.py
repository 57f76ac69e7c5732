"""`berth firewall` argument handling (pure: nothing is applied here)."""

import pytest

from agent.bus.firewall import ApplyRequest, PlanRequest, RevertRequest, SshClient
from agent.firewall.cli import build_parser, build_request, main


def request(*argv: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return build_request(build_parser().parse_args(list(argv)), env or {})


def test_apply_flags_become_one_typed_request() -> None:
    req = request(
        "apply", "--mode", "proxy-only", "--proxy-port", "8080", "--ssh-cidr", "10.0.0.0/8",
        "--ssh-cidr", "192.0.2.0/24", "--ssh-port", "2222", "--backend", "nftables",
        "--confirm-timeout", "0", "--control-plane", "http://127.0.0.1:8000",
        env={"SSH_CONNECTION": "10.1.1.1 5000 10.0.0.2 2222"},
    )  # fmt: skip
    assert isinstance(req, ApplyRequest)
    assert req.options.ssh_cidrs == ("10.0.0.0/8", "192.0.2.0/24")
    assert (req.options.proxy_port, req.options.ssh_port, req.backend) == (8080, 2222, "nftables")
    assert req.confirm_timeout_s == 0 and req.control_plane == "http://127.0.0.1:8000"
    assert req.ssh_client == SshClient("10.1.1.1", 2222)


def test_plan_and_revert() -> None:
    assert isinstance(request("plan", "--mode", "tunnel-only"), PlanRequest)
    assert request("revert", "--to", "baseline") == RevertRequest(to="baseline")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["apply"], "--mode is required"),
        (["apply", "--mode", "proxy-only"], "--proxy-port: required"),
        (["plan", "--mode", "proxy-only", "--proxy-port", "0"], "--proxy-port: must be a port"),
        (["plan", "--mode", "open", "--ssh-cidr", "nonsense"], "--ssh-cidr: 'nonsense'"),
        (["apply", "--mode", "open", "--confirm-timeout", "-5"], "--confirm-timeout"),
        (["apply", "--mode", "open", "--control-plane", "cp:8000"], "--control-plane"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(argv: list[str], message: str, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err

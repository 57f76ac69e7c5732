"""Request validation and (de)serialisation of the helper's messages (pure)."""

import json

import pytest

from agent.bus.firewall import (
    ApplyRequest,
    ConfirmRequest,
    FirewallOptions,
    PlanRequest,
    RequestError,
    RevertRequest,
    SshClient,
    StatusRequest,
    encode_request,
    parse_request,
)
from agent.bus.firewallstatus import FirewallReply, FirewallStatus, LastApply


@pytest.mark.parametrize(
    "req",
    [
        StatusRequest(),
        ConfirmRequest(),
        RevertRequest(to="baseline"),
        PlanRequest(mode="tunnel-only"),
        ApplyRequest(
            mode="proxy-only",
            options=FirewallOptions(proxy_port=8080, ssh_port=2222, ssh_cidrs=("10.0.0.0/8",)),
            backend="ufw",
            confirm_timeout_s=5,
            control_plane="https://cp.example.test/",
            allow_ssh_lockout=True,
            ssh_client=SshClient("192.0.2.1", 22),
        ),
    ],
)
def test_round_trip(req) -> None:  # type: ignore[no-untyped-def]
    assert parse_request(encode_request(req)) == req


def test_cidrs_are_normalised_and_deduplicated() -> None:
    raw = {"command": "plan", "mode": "proxy-only",
           "options": {"proxy_port": 80, "ssh_cidrs": ["10.1.2.3/8", "10.0.0.0/8", " 2001:db8::1/64"]}}  # fmt: skip
    req = parse_request(json.dumps(raw).encode())
    assert isinstance(req, PlanRequest)
    assert req.options.ssh_cidrs == ("10.0.0.0/8", "2001:db8::/64")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"command": "apply", "mode": "open", "ssh_client": {"ip": "nope"}}, "ssh_client.ip"),
        ({"command": "apply", "mode": "open", "ssh_client": {"ip": "1.2.3.4", "x": 1}}, "ssh_client.x"),
        ({"command": "apply", "mode": "open", "confirm_timeout_s": True}, "confirm_timeout_s"),
        ({"command": "apply", "mode": "open", "confirm_timeout_s": 10**6}, "confirm_timeout_s"),
        ({"command": "plan", "mode": "open", "options": {"ssh_port": 0}}, "options.ssh_port"),
        ({"command": "plan", "mode": "open", "options": {"ssh_cidrs": "10.0.0.0/8"}}, "options.ssh_cidrs"),
        ({"command": "plan", "mode": "open", "options": {"ssh_cidrs": [1]}}, "options.ssh_cidrs[0]"),
        ({"command": "plan", "mode": "open", "options": {"ssh_cidrs": ["1.1.1.1/8"] * 65}},
         "options.ssh_cidrs"),
        ({"command": "plan", "mode": "open", "options": []}, "options"),
        ({"command": "plan", "mode": "open", "control_plane": "http://x"}, "control_plane"),
        ({"command": "apply", "mode": "open", "control_plane": "http://a b"}, "control_plane"),
        ({"command": None}, "command"),
    ],
)  # fmt: skip
def test_bad_fields_are_named(raw: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(RequestError) as err:
        parse_request(json.dumps(raw).encode())
    assert err.value.field == field


def test_oversized_request_is_refused() -> None:
    with pytest.raises(RequestError, match="larger than"):
        parse_request(b" " * (65 * 1024))


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ("192.0.2.7 51000 10.0.0.1 22", SshClient("192.0.2.7", 22)),
        ("2001:db8::7 51000 2001:db8::1 2222", SshClient("2001:db8::7", 2222)),
        ("", None),
        (None, None),
        ("garbage", None),
        ("999.1.1.1 1 2 22", None),
    ],
)
def test_ssh_connection_parsing(env: str | None, want: SshClient | None) -> None:
    assert SshClient.from_env(env) == want


def test_reply_round_trip_carries_the_heartbeat_block() -> None:
    status = FirewallStatus(
        mode="tunnel-only",
        exposure="none",
        backend="nftables",
        last_apply=LastApply(1.5, "tunnel-only", "nftables", "confirmed", "confirmed"),
        tunnel="connected",
        pending_confirm_until=None,
    )
    reply = FirewallReply(ok=True, command="status", status=status, changes=("x",))
    assert FirewallReply.from_json(reply.to_json()) == reply
    block = json.loads(reply.to_json())["status"]
    assert set(block) >= {
        "mode",
        "exposure",
        "backend",
        "last_apply",
        "tunnel",
        "pending_confirm_until",
    }

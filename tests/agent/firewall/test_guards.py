"""The pure safety decisions (no SSH lockout, consent for tunnel-only)."""

import pytest

from agent.bus.firewall import ApplyRequest, FirewallOptions, SshClient
from agent.firewall.guards import Refused, check_apply

CIDRS = ("198.51.100.0/24", "2001:db8::/32")


def req(mode: str = "proxy-only", client: SshClient | None = None, **kw) -> ApplyRequest:  # type: ignore[no-untyped-def]
    return ApplyRequest(mode=mode, options=FirewallOptions(proxy_port=80, ssh_cidrs=CIDRS),
                        ssh_client=client, **kw)  # fmt: skip


@pytest.mark.parametrize(
    "client", [None, SshClient("198.51.100.20", 22), SshClient("2001:db8:1::5", 22)]
)
def test_proxy_only_allowed_when_session_stays_reachable(client: SshClient | None) -> None:
    check_apply(req(client=client))


def test_proxy_only_refused_outside_every_cidr() -> None:
    with pytest.raises(Refused, match=r"203\.0\.113\.5/32") as err:
        check_apply(req(client=SshClient("203.0.113.5", 22)))
    assert err.value.field == "options.ssh_cidrs"


def test_proxy_only_refused_on_other_ssh_port() -> None:
    with pytest.raises(Refused, match="--ssh-port 2222") as err:
        check_apply(req(client=SshClient("198.51.100.20", 2222)))
    assert err.value.field == "options.ssh_port"


def test_explicit_override_allows_lockout() -> None:
    check_apply(req(client=SshClient("203.0.113.5", 22), allow_ssh_lockout=True))


def test_tunnel_only_needs_consent_even_without_ssh() -> None:
    with pytest.raises(Refused, match="--consent-block-ssh") as err:
        check_apply(req(mode="tunnel-only"))
    assert err.value.field == "consent_block_ssh"
    check_apply(req(mode="tunnel-only", consent_block_ssh=True))


def test_open_needs_nothing() -> None:
    check_apply(req(mode="open", client=SshClient("203.0.113.5", 22)))

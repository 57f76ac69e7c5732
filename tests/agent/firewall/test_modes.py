"""Each security mode with each backend, for real, inside network namespaces.

A scan from ``out`` must find exactly the ports the mode allows, over IPv4 and IPv6
(IPv6 through a drop policy needs the ICMPv6 neighbour discovery rules); loopback and
outbound must keep working inside ``srv``; reverting must restore the exact prior
``nft list ruleset`` (including a table that is not Berth's).
"""

import pytest

from agent.bus.firewall import ApplyRequest, FirewallOptions, PlanRequest, RevertRequest

SSH, PROXY, DB, OUTSIDE = 22, 8080, 5432, 9000
INBOUND = [SSH, PROXY, DB]

EXPECTED = {
    # mode: (open over IPv4 from out, open over IPv6 from out)
    "open": ([SSH, PROXY, DB], [SSH, PROXY, DB]),
    "proxy-only": ([SSH, PROXY], [PROXY]),  # SSH only from out's IPv4 address
    "tunnel-only": ([], []),
}
EXPOSURE = {"open": "unrestricted", "proxy-only": "daemon-port", "tunnel-only": "none"}


@pytest.mark.root
@pytest.mark.parametrize("mode", ["open", "proxy-only", "tunnel-only"])
def test_mode_allows_exactly_its_ports(fw_any, mode):  # type: ignore[no-untyped-def]
    fw, net = fw_any, fw_any.net
    backend = "ufw" if fw.ufw else "nftables"
    fw.start(net.srv, "listen", *map(str, INBOUND))
    fw.start(net.out, "listen", str(OUTSIDE))
    prior = fw.ruleset()
    helper = fw.helper()
    opts = FirewallOptions(proxy_port=PROXY, ssh_port=SSH, ssh_cidrs=(f"{net.out_ip}/32",))

    plan = helper.client.request(PlanRequest(mode=mode, options=opts, backend=backend))
    assert plan.ok, plan.error

    reply = helper.client.request(
        ApplyRequest(mode=mode, options=opts, backend=backend, confirm_timeout_s=0,
                     consent_block_ssh=True)
    )  # fmt: skip
    assert reply.ok, reply.error
    status = reply.status
    assert status is not None
    assert (status.mode, status.exposure) == (mode, EXPOSURE[mode])
    assert status.backend == (None if mode == "open" else backend)
    assert status.last_apply is not None and status.last_apply.result == "applied"
    if mode == "open":
        assert fw.ruleset() == prior  # open changes nothing
    else:
        assert fw.ruleset() != prior

    want4, want6 = EXPECTED[mode]
    assert fw.scan(net.out, net.srv_ip, INBOUND) == want4
    assert fw.scan(net.out, net.srv_ip6, INBOUND) == want6
    # loopback inside, and outbound (whose replies must come back in)
    assert fw.scan(net.srv, "127.0.0.1", [DB]) == [DB]
    assert fw.scan(net.srv, "::1", [DB]) == [DB]
    assert fw.scan(net.srv, net.out_ip, [OUTSIDE]) == [OUTSIDE]
    assert fw.scan(net.srv, net.out_ip6, [OUTSIDE]) == [OUTSIDE]

    undo = helper.client.request(RevertRequest(to="baseline"))
    assert undo.ok, undo.error
    assert undo.status is not None and undo.status.mode == "open"
    assert fw.ruleset() == prior
    assert fw.scan(net.out, net.srv_ip, INBOUND) == INBOUND

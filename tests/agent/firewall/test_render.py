"""Golden tests of the pure renderers (regenerate: BERTH_UPDATE_GOLDEN=1 pytest ...)."""

import os
import shlex
from pathlib import Path

import pytest

from agent.bus.firewall import FirewallOptions
from agent.firewall.render import render_nftables, render_ufw

GOLDEN = Path(__file__).with_name("golden")
OPTS = FirewallOptions(
    proxy_port=8080, ssh_port=2222, ssh_cidrs=("203.0.113.0/24", "2001:db8::/48")
)
MODES = ["open", "proxy-only", "tunnel-only"]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("BERTH_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from the golden file"


@pytest.mark.parametrize("mode", MODES)
def test_nftables_golden(mode: str) -> None:
    check_golden(f"nftables-{mode}.nft", render_nftables(mode, OPTS))


@pytest.mark.parametrize("mode", MODES)
def test_ufw_golden(mode: str) -> None:
    text = "".join(shlex.join(argv) + "\n" for argv in render_ufw(mode, OPTS))
    check_golden(f"ufw-{mode}.txt", text)


def test_proxy_only_without_ssh_cidrs_has_no_ssh_rule() -> None:
    opts = FirewallOptions(proxy_port=8080)
    assert "dport 22" not in render_nftables("proxy-only", opts)
    assert not any("22" in argv for argv in render_ufw("proxy-only", opts))


def test_tunnel_only_allows_no_port() -> None:
    text = render_nftables("tunnel-only", OPTS)
    assert "dport" not in text and "policy drop" in text and 'iif "lo" accept' in text
    assert all(argv[1] != "allow" for argv in render_ufw("tunnel-only", OPTS))


def test_renderers_are_deterministic() -> None:
    assert render_nftables("proxy-only", OPTS) == render_nftables("proxy-only", OPTS)


@pytest.mark.parametrize("render", [render_nftables, render_ufw])
def test_bad_mode_and_missing_port_are_refused(render) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="mode must be one of"):
        render("closed", OPTS)
    with pytest.raises(ValueError, match="proxy_port"):
        render("proxy-only", FirewallOptions())

"""Pure renderers: a security mode and its options in, the exact rules out.

* `render_nftables` returns an nft script for Berth's own ``table inet berth``. It opens
  with ``table inet berth`` + ``delete table inet berth`` so that one ``nft -f`` run
  replaces the table atomically whether or not it existed; no other table is touched.
  Mode ``open`` renders only the removal.
* `render_ufw` returns argv lists for ``ufw`` (never a shell string). UFW's own
  before.rules already accept loopback, ``established,related`` and the ICMP/ICMPv6
  that IP needs, so the user rules only add what the mode lets in. Mode ``open`` renders
  nothing: the engine restores UFW's pre-Berth state instead.

Both are covered by golden files in ``tests/agent/firewall/golden/``.
"""

import ipaddress

from agent.bus.firewall import FirewallOptions
from agent.schema.modes import SECURITY_MODES

NFT_TABLE = "inet berth"
UFW_COMMENT = "berth"

# ICMPv6 that IPv6 needs to keep working (RFC 4890): neighbour discovery and router
# adverts (without them the router cannot even deliver replies to outbound traffic),
# and the error messages path MTU discovery and connection setup rely on.
ICMPV6_TYPES = (
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
)


def _check_mode(mode: str, opts: FirewallOptions) -> None:
    if mode not in SECURITY_MODES:
        raise ValueError(f"mode must be one of {', '.join(SECURITY_MODES)}, got {mode!r}")
    if mode == "proxy-only" and opts.proxy_port is None:
        raise ValueError("proxy-only needs options.proxy_port")


def _ssh_rules_nft(opts: FirewallOptions) -> list[str]:
    lines = []
    for cidr in opts.ssh_cidrs:
        family = "ip" if ipaddress.ip_network(cidr).version == 4 else "ip6"
        lines.append(f"{family} saddr {cidr} tcp dport {opts.ssh_port} accept")
    return lines


def render_nftables(mode: str, opts: FirewallOptions) -> str:
    """The nft script that puts `mode` in place (deterministic: golden-tested)."""
    _check_mode(mode, opts)
    head = [f"table {NFT_TABLE}", f"delete table {NFT_TABLE}"]
    if mode == "open":
        return "\n".join(head) + "\n"
    rules = [
        'iif "lo" accept',
        "ct state established,related accept",
        "ct state invalid drop",
        f"icmpv6 type {{ {', '.join(ICMPV6_TYPES)} }} accept",
    ]
    if mode == "proxy-only":
        rules.append(f"tcp dport {opts.proxy_port} accept")
        rules.extend(_ssh_rules_nft(opts))
    body = [
        f"table {NFT_TABLE} {{",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy drop;",
        *(f"\t\t{rule}" for rule in rules),
        "\t}",
        "}",
    ]
    return "\n".join(head + body) + "\n"


def render_ufw(mode: str, opts: FirewallOptions) -> list[list[str]]:
    """The ufw commands that put `mode` in place, in order (argv lists)."""
    _check_mode(mode, opts)
    if mode == "open":
        return []
    cmds = [
        # start from UFW's defaults so no earlier allow rule leaves a port open
        ["ufw", "--force", "reset"],
        ["ufw", "default", "deny", "incoming"],
        ["ufw", "default", "allow", "outgoing"],
    ]
    if mode == "proxy-only":
        cmds.append(
            ["ufw", "allow", "proto", "tcp", "to", "any", "port", str(opts.proxy_port),
             "comment", f"{UFW_COMMENT} proxy"]
        )  # fmt: skip
        for cidr in opts.ssh_cidrs:
            cmds.append(
                ["ufw", "allow", "proto", "tcp", "from", cidr, "to", "any", "port",
                 str(opts.ssh_port), "comment", f"{UFW_COMMENT} ssh"]
            )  # fmt: skip
    cmds.append(["ufw", "--force", "enable"])
    return cmds

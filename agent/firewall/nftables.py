"""The nftables backend: Berth's own ``table inet berth``, applied atomically.

A snapshot is the text of that one table (or its absence); restoring it replaces the
table in one ``nft -f`` transaction. No other table is ever read back or touched, so
whatever else runs on the host (Docker, libvirt, an operator's rules) is left alone.
"""

from typing import Any

from agent.bus.firewall import FirewallOptions
from agent.firewall.render import NFT_TABLE, render_nftables
from agent.firewall.tools import ToolError, run_tool

NFT = "nft"


class NftablesBackend:
    name = "nftables"

    def snapshot(self) -> dict[str, Any]:
        try:
            table = run_tool([NFT, "list", "table", *NFT_TABLE.split()])
        except ToolError as exc:
            if "No such file or directory" not in str(exc):
                raise
            table = None
        return {"backend": self.name, "table": table}

    def plan(self, mode: str, opts: FirewallOptions) -> list[str]:
        return render_nftables(mode, opts).splitlines()

    def apply(self, mode: str, opts: FirewallOptions) -> list[str]:
        script = render_nftables(mode, opts)
        run_tool([NFT, "-f", "-"], stdin=script)
        if mode == "open":
            return [f"nftables: removed table {NFT_TABLE} (if it existed)"]
        return [f"nftables: replaced table {NFT_TABLE} ({mode}, {len(script.splitlines())} lines)"]

    def restore(self, snapshot: dict[str, Any]) -> list[str]:
        script = f"table {NFT_TABLE}\ndelete table {NFT_TABLE}\n" + (snapshot.get("table") or "")
        run_tool([NFT, "-f", "-"], stdin=script)
        if snapshot.get("table"):
            return [f"nftables: restored table {NFT_TABLE} as it was"]
        return [f"nftables: removed table {NFT_TABLE} (it did not exist before)"]

    def check(self, mode: str, opts: FirewallOptions) -> None:
        """Let nft parse the script without applying it (``nft -c``)."""
        run_tool([NFT, "-c", "-f", "-"], stdin=render_nftables(mode, opts))

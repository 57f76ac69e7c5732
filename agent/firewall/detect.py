"""Which backend to use, and why: an explicit choice wins, else UFW, else nftables.

UFW is preferred when it is installed *and working* (``ufw status`` runs), since an
operator who has UFW expects to see Berth's rules there. Otherwise nftables, which
every current kernel has.
"""

import shutil
from dataclasses import dataclass

from agent.firewall.tools import ToolError, run_tool


class NoBackend(RuntimeError):
    pass


@dataclass(frozen=True)
class Choice:
    backend: str  # ufw | nftables
    reason: str


def detect_backend(requested: str = "auto") -> Choice:
    """Resolve ``auto``/``ufw``/``nftables`` to a usable backend; raise `NoBackend`."""
    if requested in ("ufw", "nftables"):
        tool = "ufw" if requested == "ufw" else "nft"
        if shutil.which(tool) is None:
            raise NoBackend(f"backend {requested} was requested but {tool} is not installed")
        return Choice(requested, f"{requested} requested explicitly")
    if requested != "auto":
        raise NoBackend(f"backend must be auto, ufw or nftables, got {requested!r}")
    if shutil.which("ufw"):
        try:
            run_tool(["ufw", "status"])
            return Choice("ufw", "auto: ufw is installed and working (preferred)")
        except ToolError as exc:
            ufw_problem = f"ufw is installed but not working ({exc})"
    else:
        ufw_problem = "ufw is not installed"
    if shutil.which("nft"):
        return Choice("nftables", f"auto: {ufw_problem}; using nftables")
    raise NoBackend(f"{ufw_problem} and nft is not installed: install ufw or nftables")

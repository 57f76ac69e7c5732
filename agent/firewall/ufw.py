"""The UFW backend: Berth drives ``ufw`` with argv lists and can undo it exactly.

A snapshot holds what an apply can change: every top-level file of ``/etc/ufw``
(rules, ``ufw.conf`` with the enabled flag) and ``/etc/default/ufw``, plus the
kernel's IPv4/IPv6 ``filter`` tables as ``iptables-save``/``ip6tables-save`` print them.
Restoring writes the files back (and removes the backups ``ufw reset`` left), then
puts the kernel tables back with ``iptables-restore`` — or, where no ``filter`` table
existed before, deletes the one UFW created — so ``nft list ruleset`` is as before.
"""

import base64
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.bus.firewall import FirewallOptions
from agent.durablefiles import write_atomic
from agent.firewall.render import render_ufw
from agent.firewall.tools import ToolError, run_tool

# files `ufw reset` leaves behind: user.rules.20240101_120000
_BACKUP = re.compile(r".+\.\d{8}_\d{6}")
_FAMILIES = (("ip", "iptables"), ("ip6", "ip6tables"))


@dataclass(frozen=True)
class UfwPaths:
    etc: Path = Path("/etc/ufw")
    default: Path = Path("/etc/default/ufw")


def _read_file(path: Path) -> dict[str, Any]:
    return {
        "data": base64.b64encode(path.read_bytes()).decode(),
        "mode": path.stat().st_mode & 0o7777,
    }


class UfwBackend:
    name = "ufw"

    def __init__(self, paths: UfwPaths | None = None) -> None:
        self.paths = paths or UfwPaths()

    def snapshot(self) -> dict[str, Any]:
        files = {
            p.name: _read_file(p)
            for p in sorted(self.paths.etc.iterdir())
            if p.is_file() and not p.is_symlink()
        }
        default = _read_file(self.paths.default) if self.paths.default.is_file() else None
        # iptables-save prints an empty filter table even where none exists: ask nft first
        tables = {
            fam: run_tool([f"{tool}-save", "-t", "filter"]) if self._table_exists(fam) else ""
            for fam, tool in _FAMILIES
        }
        return {"backend": self.name, "files": files, "default": default, "tables": tables}

    def plan(self, mode: str, opts: FirewallOptions) -> list[str]:
        return [shlex.join(argv) for argv in render_ufw(mode, opts)]

    def apply(self, mode: str, opts: FirewallOptions) -> list[str]:
        changes = []
        for argv in render_ufw(mode, opts):
            run_tool(argv)
            changes.append(f"ufw: {shlex.join(argv)}")
        return changes

    def restore(self, snapshot: dict[str, Any]) -> list[str]:
        changes = self._restore_files(snapshot)
        for family, tool in _FAMILIES:
            saved = snapshot["tables"].get(family, "")
            if "*filter" in saved:
                run_tool([f"{tool}-restore"], stdin=saved)
                changes.append(f"ufw: restored the {family} filter table ({tool}-restore)")
            elif self._table_exists(family):
                run_tool(["nft", "delete", "table", family, "filter"])
                changes.append(f"ufw: removed the {family} filter table UFW had created")
        return changes

    def _restore_files(self, snapshot: dict[str, Any]) -> list[str]:
        changes = []
        files: dict[str, Any] = snapshot["files"]
        for name, entry in files.items():
            path = self.paths.etc / name
            data = base64.b64decode(entry["data"])
            if not path.is_file() or path.read_bytes() != data:
                write_atomic(path, data, mode=entry["mode"])
                changes.append(f"ufw: restored {path}")
        for path in self.paths.etc.iterdir():
            if path.is_file() and path.name not in files and _BACKUP.fullmatch(path.name):
                path.unlink()
                changes.append(f"ufw: removed backup {path}")
        default = snapshot.get("default")
        if default is not None:
            data = base64.b64decode(default["data"])
            if not self.paths.default.is_file() or self.paths.default.read_bytes() != data:
                write_atomic(self.paths.default, data, mode=default["mode"])
                changes.append(f"ufw: restored {self.paths.default}")
        return changes

    @staticmethod
    def _table_exists(family: str) -> bool:
        try:
            run_tool(["nft", "list", "table", family, "filter"])
        except ToolError:
            return False
        return True

"""Point the host's resolver at the DNS responder: a systemd-resolved drop-in or /etc/hosts.

Two mechanisms, each a pure render function plus small apply/revert functions:

* resolved: `/etc/systemd/resolved.conf.d/berth.conf` with `DNS=<responder>` and
  `Domains=~<suffix>` (a routing-only domain: queries under the suffix go to Berth),
  then resolved is restarted to read it. Revert deletes that file, only if it is ours
  (it starts with `DROPIN_HEADER`), and restarts resolved again.
* hosts: a block between `# BEGIN berth managed block` / `# END berth managed block`
  holding exactly the current services (`127.0.0.1 api.svc.internal`). Everything
  outside the block is kept byte for byte. The file is replaced atomically
  (`write_atomic`: temp file, fsync, rename) unless it is a mount point, as in a
  container whose runtime bind-mounts /etc/hosts, where a rename cannot work and the
  file is rewritten in place instead. Revert removes the block and nothing else.

`apply_wiring(settings, names)` picks the mode from `settings.dns_wiring` (`decide_mode`):
`auto` means resolved when systemd-resolved is active, else hosts; `none` does nothing.

Why a global `DNS=` is safe enough, and when it is not: resolved's global scope is always
a default route, so names matching no link's routing domain are sent to Berth too (in
parallel with the links' servers); Berth answers those REFUSED at once and resolved uses
the links' answers. But a global `DNS=` also switches off `FallbackDNS=`: on a host whose
only servers are the compiled-in fallbacks, every other name would stop resolving. `auto`
therefore chooses hosts mode on such a host (and an explicit `resolved` warns).
`revert_wiring(settings)` undoes both mechanisms whatever the mode, so an uninstall is
exact even after the mode changed.

Shared, not part of `agent.dns`: the responder wires at start (while still root), run-all
keeps /etc/hosts in step with the route table, and the installer wires (`berth installer
wire-dns`) and reverts on uninstall.
"""

import logging
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from agent.durablefiles import write_atomic
from agent.schema.dnsnames import DEFAULT_DNS_SUFFIX, normalize_suffix
from agent.settings import INTERNAL_PROXY_ADDRESS, AgentSettings, parse_hostport

log = logging.getLogger(__name__)

MODE_RESOLVED = "resolved"
MODE_HOSTS = "hosts"
MODE_NONE = "none"
MODES = ("auto", MODE_RESOLVED, MODE_HOSTS, MODE_NONE)

RESOLVED_DROPIN = Path("/etc/systemd/resolved.conf.d/berth.conf")
# Spelled as when this module was agent/dns/wiring.py: revert recognises drop-ins that
# installed agents wrote by this exact line.
DROPIN_HEADER = "# Managed by Berth (agent/dns/wiring.py); removed on uninstall. Do not edit."
HOSTS_BEGIN = "# BEGIN berth managed block"
HOSTS_END = "# END berth managed block"
RESOLVED_STUBS = ("127.0.0.53", "127.0.0.54")  # systemd-resolved's own listeners
_OCTAL = re.compile(r"\\([0-7]{3})")


class WiringError(RuntimeError):
    """The wiring cannot be applied as asked; the message says why and what to do."""


# ---- pure rendering -------------------------------------------------------------------


def dns_servers_in(resolvectl_dns: str, exclude_host: str = "") -> list[str]:
    """The servers listed by `resolvectl dns` ("Global: a b", "Link 2 (eth0): c")."""
    servers = []
    for line in resolvectl_dns.splitlines():
        _, sep, rest = line.partition(":")
        if sep and (line.startswith("Global") or line.startswith("Link ")):
            servers += [
                s for s in rest.split() if not (exclude_host and s.startswith(exclude_host))
            ]
    return servers


def only_fallback_dns(resolvectl_dns: str, resolvectl_status: str, responder_host: str) -> bool:
    """True when resolved resolves other names only through its FallbackDNS= servers."""
    return (
        not dns_servers_in(resolvectl_dns, responder_host)
        and "Fallback DNS Servers" in resolvectl_status
    )


def choose_mode(requested: str, resolved_is_active: bool) -> str:
    if requested not in MODES:
        raise WiringError(f"dns_wiring must be one of {', '.join(MODES)}, got {requested!r}")
    if requested == "auto":
        return MODE_RESOLVED if resolved_is_active else MODE_HOSTS
    return requested


def render_resolved_dropin(dns_bind: str, suffix: str = DEFAULT_DNS_SUFFIX) -> str:
    """The drop-in routing `~suffix` to the responder at `dns_bind` (HOST:PORT)."""
    host, port = parse_hostport(dns_bind, "dns_bind")
    if host in RESOLVED_STUBS:
        raise WiringError(
            f"dns_bind {dns_bind} is systemd-resolved's own stub address: "
            "bind the responder elsewhere, e.g. 127.0.0.153:53"
        )
    if host in ("0.0.0.0", "::", ""):
        raise WiringError(f"dns_bind {dns_bind} is a wildcard: resolved needs one address")
    server = host if port == 53 else (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return (
        f"{DROPIN_HEADER}\n"
        f"# Routes *.{normalize_suffix(suffix)} to the Berth DNS responder; other names are untouched.\n"
        "[Resolve]\n"
        f"DNS={server}\n"
        f"Domains=~{normalize_suffix(suffix)}\n"
    )


def _split_block(text: str, where: str) -> tuple[list[str], list[str] | None, list[str]]:
    """(lines before, block lines or None, lines after); markers must be whole lines."""
    lines = text.splitlines(keepends=True)
    stripped = [line.rstrip("\r\n") for line in lines]
    begins = [i for i, s in enumerate(stripped) if s == HOSTS_BEGIN]
    ends = [i for i, s in enumerate(stripped) if s == HOSTS_END]
    if not begins and not ends:
        return lines, None, []
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise WiringError(
            f"{where}: the berth managed block markers are damaged ({len(begins)} BEGIN, "
            f"{len(ends)} END lines); fix or delete the lines between '{HOSTS_BEGIN}' and "
            f"'{HOSTS_END}' by hand, then retry"
        )
    b, e = begins[0], ends[0]
    return lines[:b], lines[b : e + 1], lines[e + 1 :]


def render_hosts(
    text: str,
    fqdns: Sequence[str],
    address: str = INTERNAL_PROXY_ADDRESS,
    where: str = "hosts file",
) -> str:
    """`text` with the managed block holding exactly `fqdns` (in place, or appended)."""
    before, block, after = _split_block(text, where)
    new_block = [
        HOSTS_BEGIN + "\n",
        *(f"{address} {n}\n" for n in sorted(set(fqdns))),
        HOSTS_END + "\n",
    ]
    if block is None:
        if before and not before[-1].endswith("\n"):
            before[-1] += "\n"
        return "".join(before + new_block)
    return "".join(before + new_block + after)


def strip_hosts(text: str, where: str = "hosts file") -> str:
    """`text` without the managed block; unchanged when there is none."""
    before, block, after = _split_block(text, where)
    return text if block is None else "".join(before + after)


# ---- I/O ------------------------------------------------------------------------------


def resolved_active() -> bool:
    """True when systemd is PID 1 and systemd-resolved is running."""
    if not Path("/run/systemd/system").is_dir():
        return False
    try:
        proc = subprocess.run(
            ["systemctl", "is-active", "--quiet", "systemd-resolved.service"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _resolvectl(*args: str) -> str:
    try:
        proc = subprocess.run(["resolvectl", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def resolved_relies_on_fallback(dns_bind: str) -> bool:
    host, _ = parse_hostport(dns_bind, "dns_bind")
    return only_fallback_dns(_resolvectl("dns"), _resolvectl("status"), host)


FALLBACK_WARNING = (
    "systemd-resolved has no DNS servers but its FallbackDNS= ones; a global DNS= for Berth "
    "would switch those off and break every other lookup. Configure the host's DNS servers "
    "(resolved.conf DNS= or the network manager) to use resolved mode"
)


def decide_mode(settings: AgentSettings) -> str:
    """The wiring mode for `settings.dns_wiring`, looking at the host for `auto`."""
    requested = settings.dns_wiring
    if requested != "auto":
        mode = choose_mode(requested, False)
        if mode == MODE_RESOLVED and resolved_relies_on_fallback(settings.dns_bind):
            log.warning("%s.", FALLBACK_WARNING)
        return mode
    if not resolved_active():
        return MODE_HOSTS
    if resolved_relies_on_fallback(settings.dns_bind):
        log.warning("%s; using the /etc/hosts block instead.", FALLBACK_WARNING)
        return MODE_HOSTS
    return MODE_RESOLVED


def _restart_resolved() -> None:
    # resolved 252 has no reload; try-reload-or-restart also covers later versions.
    proc = subprocess.run(
        ["systemctl", "try-reload-or-restart", "systemd-resolved.service"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        raise WiringError(f"restarting systemd-resolved failed: {proc.stderr.strip()}")


def apply_resolved(
    dns_bind: str,
    suffix: str = DEFAULT_DNS_SUFFIX,
    dropin: Path = RESOLVED_DROPIN,
    restart: bool = True,
) -> bool:
    """Write the drop-in if it differs; restart resolved then. True when something changed."""
    content = render_resolved_dropin(dns_bind, suffix)
    try:
        if dropin.read_text() == content:
            return False
    except FileNotFoundError:
        pass
    write_atomic(dropin, content.encode())
    if restart:
        _restart_resolved()
    return True


def revert_resolved(dropin: Path = RESOLVED_DROPIN, restart: bool = True) -> bool:
    """Delete our drop-in (never someone else's file at that path). True when removed."""
    try:
        ours = dropin.read_text().startswith(DROPIN_HEADER)
    except FileNotFoundError:
        return False
    if not ours:
        log.warning("%s was not written by Berth; leaving it in place", dropin)
        return False
    dropin.unlink()
    if restart and resolved_active():
        _restart_resolved()
    return True


def _is_mount_point(path: Path) -> bool:
    """True when `path` itself is a mount point (e.g. a bind-mounted /etc/hosts)."""
    target = os.path.realpath(path)
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    for line in mountinfo.splitlines():
        fields = line.split()
        # field 5 is the mount point, with spaces etc. octal-escaped (\\040)
        if len(fields) > 4 and _OCTAL.sub(lambda m: chr(int(m[1], 8)), fields[4]) == target:
            return True
    return False


def _write_hosts(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    if _is_mount_point(path):
        # A rename over a mount point fails (EBUSY): rewrite the mounted file in place.
        with open(path, "r+b") as f:
            f.write(text.encode())
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
    else:
        write_atomic(path, text.encode(), mode)


def apply_hosts(path: Path, fqdns: Sequence[str], address: str = INTERNAL_PROXY_ADDRESS) -> bool:
    """Make the managed block of `path` hold exactly `fqdns`. True when the file changed."""
    try:
        old = path.read_text()
    except FileNotFoundError:
        old = ""
    new = render_hosts(old, fqdns, address, where=str(path))
    if new == old:
        return False
    _write_hosts(path, new)
    return True


def revert_hosts(path: Path) -> bool:
    """Remove the managed block from `path`. True when the file changed."""
    try:
        old = path.read_text()
    except FileNotFoundError:
        return False
    new = strip_hosts(old, where=str(path))
    if new == old:
        return False
    _write_hosts(path, new)
    return True


def apply_wiring(
    settings: AgentSettings, names: Sequence[str], suffix: str = DEFAULT_DNS_SUFFIX
) -> str:
    """Wire the host resolver for `names` (FQDNs) per `settings.dns_wiring`; return the mode.

    Raises `PermissionError` when not allowed to write the files (callers log it) and
    `WiringError` for a damaged hosts block or an unusable `dns_bind`.
    """
    mode = choose_mode(
        settings.dns_wiring, resolved_active() if settings.dns_wiring == "auto" else False
    )
    if mode == MODE_RESOLVED:
        apply_resolved(settings.dns_bind, suffix)
    elif mode == MODE_HOSTS:
        apply_hosts(settings.hosts_file, names)
    return mode


def revert_wiring(settings: AgentSettings) -> list[str]:
    """Undo both mechanisms; return what was removed (for the uninstaller's report)."""
    removed = []
    if revert_resolved():
        removed.append(str(RESOLVED_DROPIN))
    if revert_hosts(settings.hosts_file):
        removed.append(f"{settings.hosts_file} managed block")
    return removed

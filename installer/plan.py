"""The installer's decisions, as pure functions: validated options, the agent config file,
the security mode to apply, the firewall command, the closing summary.

Nothing here touches the system; `installer.setup` does, in the order this module's
results say. Every invalid option fails with a `PlanError` naming the flag.
"""

import ipaddress
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agent.schema.modes import SECURITY_MODES
from installer.layout import Layout

DNS_WIRINGS = ("auto", "resolved", "hosts", "none")
BACKENDS = ("auto", "ufw", "nftables")
DEFAULT_CONFIRM_TIMEOUT_S = 120.0
_SAFE_ARG = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/[]@%")


class PlanError(ValueError):
    """An option is invalid; the message names the flag and says what would be valid."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


@dataclass(frozen=True)
class InstallOptions:
    control_plane: str
    token: str | None = None
    security_mode: str | None = None  # None: the stack's own mode
    ssh_cidrs: tuple[str, ...] = ()
    ssh_port: int = 22
    consent_block_ssh: bool = False
    allow_ssh_lockout: bool = False
    confirm_timeout_s: float = DEFAULT_CONFIRM_TIMEOUT_S
    dns_wiring: str = "auto"
    firewall_backend: str = "auto"
    wait_s: float = 120.0
    extra_agent_args: tuple[str, ...] = field(default_factory=tuple)


def check_url(url: str, flag: str = "--control-plane") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PlanError(
            flag, f"must be an http(s):// URL such as https://cp.example.com, got {url!r}"
        )
    if parts.query or parts.fragment or any(c not in _SAFE_ARG for c in url):
        raise PlanError(flag, f"must be a plain base URL without spaces or quotes, got {url!r}")
    return url.rstrip("/")


def validate(opts: InstallOptions) -> InstallOptions:
    """Return `opts` normalised, or raise `PlanError` for the first bad option."""
    url = check_url(opts.control_plane)
    if opts.token is not None and (not opts.token or any(c.isspace() for c in opts.token)):
        raise PlanError("--token", "must be the install token shown by the control plane")
    if opts.security_mode is not None and opts.security_mode not in SECURITY_MODES:
        raise PlanError("--security-mode", f"must be one of {', '.join(SECURITY_MODES)}")
    for cidr in opts.ssh_cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise PlanError(
                "--ssh-cidr", f"{cidr!r} is not a network such as 203.0.113.7/32"
            ) from None
    if not 1 <= opts.ssh_port <= 65535:
        raise PlanError("--ssh-port", f"must be 1-65535, got {opts.ssh_port}")
    if opts.confirm_timeout_s < 0:
        raise PlanError("--confirm-timeout", "must be >= 0 seconds (0: never revert)")
    if opts.dns_wiring not in DNS_WIRINGS:
        raise PlanError("--dns-wiring", f"must be one of {', '.join(DNS_WIRINGS)}")
    if opts.firewall_backend not in BACKENDS:
        raise PlanError("--firewall-backend", f"must be one of {', '.join(BACKENDS)}")
    for arg in opts.extra_agent_args:
        if not arg or any(c not in _SAFE_ARG for c in arg):
            raise PlanError("--agent-arg", f"{arg!r} must be one word of [A-Za-z0-9-_.:/]")
    return InstallOptions(**{**opts.__dict__, "control_plane": url})


def agent_args(opts: InstallOptions, layout: Layout) -> list[str]:
    """The `berth agent <component>` options every unit shares (units add their own)."""
    return [
        "--control-plane", opts.control_plane,
        "--state-dir", str(layout.state_dir),
        "--run-dir", str(layout.run_dir),
        "--dns-wiring", opts.dns_wiring,
        "--firewall-backend", opts.firewall_backend,
        *opts.extra_agent_args,
    ]  # fmt: skip


def render_agent_env(args: Sequence[str]) -> str:
    """/etc/berth/agent.env, read by every agent unit (`$BERTH_AGENT_ARGS` splits on spaces)."""
    for arg in args:
        if not arg or any(c not in _SAFE_ARG for c in arg):
            raise PlanError("agent.env", f"{arg!r} cannot be passed through systemd unquoted")
    return (
        "# Written by the Berth installer (berth installer setup); re-run it to change.\n"
        "# Every berth-* agent unit passes these options to `berth agent <component>`.\n"
        f"BERTH_AGENT_ARGS={' '.join(args)}\n"
    )


def parse_agent_env(text: str) -> list[str]:
    for line in text.splitlines():
        if line.startswith("BERTH_AGENT_ARGS="):
            return line.partition("=")[2].split()
    return []


def choose_mode(requested: str | None, stack_mode: str | None) -> tuple[str, str]:
    """(mode to apply, why). The operator's flag wins; else the stack's mode; else open."""
    if requested:
        note = ""
        if stack_mode and stack_mode != requested:
            note = (
                f"; note: the stack says {stack_mode}, which decides where the external "
                "proxy listens (change it in the control plane to match)"
            )
        return requested, f"--security-mode {requested}{note}"
    if stack_mode:
        return stack_mode, f"the stack's security_mode ({stack_mode})"
    return "open", "no --security-mode and no desired state yet: open (nothing changed)"


def firewall_argv(
    opts: InstallOptions, mode: str, proxy_port: int | None, layout: Layout, consent: bool
) -> list[str]:
    """`berth firewall apply ...` for `mode`: commit-confirmed, control plane checked."""
    argv = [
        "apply", "--mode", mode,
        "--backend", opts.firewall_backend,
        "--control-plane", opts.control_plane,
        "--confirm-timeout", f"{opts.confirm_timeout_s:g}",
        "--state-dir", str(layout.firewall_state),
        "--run-dir", str(layout.run_dir),
        "--ssh-port", str(opts.ssh_port),
    ]  # fmt: skip
    if proxy_port is not None:
        argv += ["--proxy-port", str(proxy_port)]
    for cidr in opts.ssh_cidrs:
        argv += ["--ssh-cidr", cidr]
    if consent:
        argv.append("--consent-block-ssh")
    if opts.allow_ssh_lockout:
        argv.append("--allow-ssh-lockout")
    return argv


@dataclass(frozen=True)
class Outcome:
    instance_id: str
    stack_id: str
    registered_now: bool
    units: dict[str, str]
    mode: str
    mode_reason: str
    firewall: str
    proxy_port: int | None
    dns_wiring: str


def summary(outcome: Outcome, layout: Layout) -> str:
    lines = [
        "Berth agent installed.",
        f"  instance     {outcome.instance_id} of stack {outcome.stack_id}"
        + (" (registered now)" if outcome.registered_now else " (already registered)"),
        "  units        " + ", ".join(f"{u.removesuffix('.service')}={s}" for u, s in outcome.units.items()),
        f"  security     {outcome.mode} ({outcome.mode_reason}); firewall: {outcome.firewall}",
        f"  proxy port   {outcome.proxy_port if outcome.proxy_port is not None else '(from the stack)'}",
        f"  DNS wiring   {outcome.dns_wiring}",
        f"  config       {layout.agent_env}; state {layout.state_dir}",
        "  logs         journalctl -u 'berth-*'",
        "  uninstall    curl -fsSL <control-plane>/uninstall.sh | sudo sh  (add -s -- --purge to drop data)",
    ]  # fmt: skip
    return "\n".join(lines)


def shell_join(argv: Sequence[str | Path]) -> str:
    return shlex.join(str(a) for a in argv)

"""Settings every agent process shares, parsed once from the command line.

Components receive one `AgentSettings` object; nothing reads globals or the environment
behind their back.
"""

import argparse
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.bus.endpoints import BusEndpoints
from agent.statelayout import StateLayout

DEFAULT_STATE_DIR = Path("/var/lib/berth")
INTERNAL_PROXY_ADDRESS = "127.0.0.1"  # what every svc.internal name resolves to
DEFAULT_INTERNAL_BIND = f"{INTERNAL_PROXY_ADDRESS}:80"
DEFAULT_DNS_BIND = "127.0.0.153:53"
# The install token never travels on a command line (any local user can read argv): it
# comes from this environment variable or from a 0600 file (--token-file).
TOKEN_ENV = "BERTH_INSTALL_TOKEN"


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{what} must be HOST:PORT (e.g. 127.0.0.1:8080), got {value!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class AgentSettings:
    state_dir: Path
    run_dir: Path
    control_plane: str | None = None
    token: str | None = None
    proxy_bind: str | None = None  # overrides what the desired state says
    internal_bind: str = DEFAULT_INTERNAL_BIND
    dns_bind: str = DEFAULT_DNS_BIND
    hosts_file: Path = Path("/etc/hosts")
    dns_wiring: str = "auto"  # auto | resolved | hosts | none
    services_user: str | None = None  # run services as this user when root
    firewall_backend: str = "auto"  # auto | ufw | nftables
    keep_releases: int = 5  # per service, so a rollback needs no rebuild
    build_timeout_s: float = 900.0
    deploy_timeout_s: float = 60.0  # a new release must become healthy within this
    # cap on every service's drain_timeout_s on this server (None: the services decide)
    drain_timeout_s: float | None = None
    # Firewall changes are explicit (spec §12): the agent applies the stack's security mode
    # only when the operator opted in; tunnel-only also needs consent to blocking SSH.
    follow_security_mode: bool = False
    consent_block_ssh: bool = False
    ssh_port: int = 22
    ssh_cidrs: tuple[str, ...] = ()  # proxy-only allows SSH only from these
    tunnel_metrics: str | None = None  # cloudflared metrics HOST:PORT (its /ready endpoint)
    metrics_bind: str | None = None  # the agent's own /metrics, loopback HOST:PORT (issue 19)
    # directories file:// repositories may be cloned from (the control plane has the same
    # rule); none by default: the reconciler can read far more than the services should
    file_repo_roots: tuple[str, ...] = ()

    @property
    def bus(self) -> BusEndpoints:
        return BusEndpoints(self.run_dir)

    @property
    def state_layout(self) -> StateLayout:
        return StateLayout(self.state_dir)

    def cache_file(self, component: str) -> Path:
        return self.state_layout.route_cache(component)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control-plane", metavar="URL", help="control plane base URL")
    parser.add_argument(
        "--token",
        help=f"refused: argv is visible to every local user; use {TOKEN_ENV} or --token-file",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help=f"install token (first registration only), in a file only root may read; "
        f"or set {TOKEN_ENV}",
    )
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--run-dir", type=Path, help="bus sockets (default: STATE_DIR/run)")
    parser.add_argument("--proxy-bind", metavar="HOST:PORT", help="external proxy address override")
    parser.add_argument("--internal-bind", metavar="HOST:PORT", default=DEFAULT_INTERNAL_BIND)
    parser.add_argument("--dns-bind", metavar="HOST:PORT", default=DEFAULT_DNS_BIND)
    parser.add_argument("--hosts-file", type=Path, default=Path("/etc/hosts"))
    parser.add_argument(
        "--dns-wiring",
        choices=("auto", "resolved", "hosts", "none"),
        default="auto",
        help="how the host resolves <service>.svc.internal",
    )
    parser.add_argument("--services-user", help="unprivileged user for services when root")
    parser.add_argument("--firewall-backend", choices=("auto", "ufw", "nftables"), default="auto")
    parser.add_argument("--tunnel-metrics", metavar="HOST:PORT", help="cloudflared metrics address")
    parser.add_argument(
        "--metrics-bind",
        metavar="HOST:PORT",
        help="serve the agent's own Prometheus /metrics here (loopback only, e.g. 127.0.0.1:9101)",
    )
    parser.add_argument(
        "--keep-releases", type=int, default=5, help="release dirs kept per service"
    )
    parser.add_argument("--build-timeout", type=float, default=900.0, metavar="SECONDS")
    parser.add_argument("--deploy-timeout", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="cap on every service's drain_timeout_s on this server (default: no cap)",
    )
    parser.add_argument(
        "--follow-security-mode",
        action="store_true",
        help="apply the stack's security mode through the firewall helper when it changes",
    )
    parser.add_argument(
        "--consent-block-ssh",
        action="store_true",
        help="with --follow-security-mode: allow tunnel-only",
    )
    parser.add_argument(
        "--allow-file-repos",
        action="append",
        default=[],
        metavar="DIR",
        help="allow file:// repositories under DIR (repeatable; default: none)",
    )
    parser.add_argument("--ssh-port", type=int, default=22, help="SSH port kept open in proxy-only")
    parser.add_argument(
        "--ssh-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="allow SSH from (repeatable)",
    )


def read_token(token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The install token from `token_file` (which must not be readable by others) or the
    environment; None when neither gives one."""
    if token_file is not None:
        try:
            st = token_file.stat()
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"--token-file: cannot read {token_file}: {exc.strerror}") from None
        if st.st_mode & 0o077:
            raise ValueError(
                f"--token-file: {token_file} is readable by others "
                f"(mode {st.st_mode & 0o777:o}); chmod 600 it"
            )
        return token or None
    return environ.get(TOKEN_ENV) or None


def check_loopback(value: str, what: str) -> None:
    """`value` ("HOST:PORT") must be a loopback address: node-local only."""
    host, _ = parse_hostport(value, what)
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"{what} must be a loopback address (127.0.0.1:PORT or [::1]:PORT), got {value!r}"
        )


def from_argv(prog: str, argv: list[str]) -> AgentSettings:
    """Settings from a component's own command line (`python -m agent.<component>`);
    a bad option exits with argparse's usage message, naming the option."""
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser)
    try:
        return from_args(parser.parse_args(argv))
    except ValueError as exc:
        parser.error(str(exc))


def from_args(args: argparse.Namespace) -> AgentSettings:
    if args.token:
        raise ValueError(
            f"--token on the command line is visible to every local user (ps); "
            f"set {TOKEN_ENV} or pass --token-file PATH (mode 600) instead"
        )
    for name in ("proxy_bind", "internal_bind", "dns_bind"):
        value = getattr(args, name)
        if value:
            parse_hostport(value, "--" + name.replace("_", "-"))
    metrics_bind = getattr(args, "metrics_bind", None)
    if metrics_bind:
        check_loopback(metrics_bind, "--metrics-bind")
    if args.keep_releases < 1:
        raise ValueError("--keep-releases must be at least 1")
    for name in ("build_timeout", "deploy_timeout", "drain_timeout"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number of seconds")
    state_dir = args.state_dir.resolve()
    return AgentSettings(
        state_dir=state_dir,
        run_dir=(args.run_dir or StateLayout(state_dir).run).resolve(),
        control_plane=args.control_plane.rstrip("/") if args.control_plane else None,
        token=read_token(args.token_file, os.environ),
        proxy_bind=args.proxy_bind,
        internal_bind=args.internal_bind,
        dns_bind=args.dns_bind,
        hosts_file=args.hosts_file,
        dns_wiring=args.dns_wiring,
        services_user=args.services_user,
        firewall_backend=args.firewall_backend,
        tunnel_metrics=args.tunnel_metrics,
        metrics_bind=metrics_bind or None,
        keep_releases=args.keep_releases,
        build_timeout_s=args.build_timeout,
        deploy_timeout_s=args.deploy_timeout,
        drain_timeout_s=args.drain_timeout,
        follow_security_mode=args.follow_security_mode,
        consent_block_ssh=args.consent_block_ssh,
        ssh_port=args.ssh_port,
        ssh_cidrs=tuple(args.ssh_cidr),
        file_repo_roots=tuple(os.path.abspath(d) for d in args.allow_file_repos),
    )

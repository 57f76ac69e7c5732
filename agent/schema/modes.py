"""The security modes (spec §12): one enum for the stack schema, the firewall helper's
requests, its renderers and the installer."""

from enum import StrEnum


class SecurityMode(StrEnum):
    OPEN = "open"  # no firewall changes
    PROXY_ONLY = "proxy-only"  # inbound: the proxy port, SSH from allowed CIDRs
    TUNNEL_ONLY = "tunnel-only"  # no inbound at all (a Cloudflare Tunnel dials out)


SECURITY_MODES: tuple[str, ...] = tuple(m.value for m in SecurityMode)
DEFAULT_SECURITY_MODE = SecurityMode.TUNNEL_ONLY.value  # spec §12.3: the recommended default

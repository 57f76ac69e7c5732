"""Safety decisions taken before any rule changes (pure; §12.4 "no silent SSH lockout").

* proxy-only: the operator's own SSH session (``SSH_CONNECTION``) must stay allowed:
  its client address inside one of the SSH CIDRs and its server port the SSH port,
  unless the request says ``allow_ssh_lockout`` explicitly.
* tunnel-only blocks SSH for everyone, so it needs explicit consent
  (``consent_block_ssh``: an interactive "yes" or the ``--consent-block-ssh`` flag).
"""

import ipaddress

from agent.bus.firewall import ApplyRequest


class Refused(Exception):
    """The apply would be unsafe; nothing was changed. Carries the request field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def check_apply(req: ApplyRequest) -> None:
    """Raise `Refused` when applying `req` could lock the operator out."""
    if req.mode == "tunnel-only" and not req.consent_block_ssh:
        raise Refused(
            "consent_block_ssh",
            "tunnel-only blocks all inbound traffic, SSH included: reach the server only "
            "through the tunnel afterwards; confirm with --consent-block-ssh",
        )
    if req.mode != "proxy-only" or req.ssh_client is None or req.allow_ssh_lockout:
        return
    client = ipaddress.ip_address(req.ssh_client.ip)
    inside = [c for c in req.options.ssh_cidrs if client in ipaddress.ip_network(c)]
    if not inside:
        allowed = ", ".join(req.options.ssh_cidrs) or "none"
        suffix = "/32" if client.version == 4 else "/128"
        raise Refused(
            "options.ssh_cidrs",
            f"your SSH session comes from {client}, outside every allowed SSH CIDR "
            f"({allowed}): this would lock you out. Add --ssh-cidr {client}{suffix} "
            "(or your network), or pass --allow-ssh-lockout to override",
        )
    if req.ssh_client.server_port != req.options.ssh_port:
        raise Refused(
            "options.ssh_port",
            f"your SSH session uses server port {req.ssh_client.server_port} but SSH would "
            f"be allowed on port {req.options.ssh_port}: this would lock you out. Pass "
            f"--ssh-port {req.ssh_client.server_port}, or --allow-ssh-lockout to override",
        )

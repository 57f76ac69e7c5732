"""`berth installer wire-dns`: the root side of the DNS wiring under systemd.

The DNS responder runs as its own unprivileged user, so it cannot edit /etc/hosts or
/etc/systemd/resolved.conf.d. `berth-dns-wiring.path` watches the responder's name cache
(rewritten on every change of service names) and starts `berth-dns-wiring.service`,
which runs this: read that cache, keep only valid DNS labels (`split_labels`, the
responder's own rule), and apply the wiring `agent.resolverwiring.decide_mode` picks (the managed hosts block, or the
static resolved drop-in). The cache is written by an unprivileged process, so nothing but
validated names ever reaches a root-owned file.
"""

import argparse
import logging
from pathlib import Path

from agent import resolverwiring as wiring
from agent import settings as agent_settings
from agent.bus.subscriber import load_cached
from agent.schema.dnsnames import DEFAULT_DNS_SUFFIX, DnsNameError, normalize_suffix, split_labels

log = logging.getLogger("installer")


def names_from(cache: Path) -> tuple[list[str], str]:
    """(FQDNs, suffix) from the responder's cache; none yet when it is missing."""
    table = load_cached(cache)
    if table is None:
        return [], DEFAULT_DNS_SUFFIX
    suffix = normalize_suffix(table.suffix)
    services, rejected = split_labels(r.service for r in table.routes)
    if rejected:
        log.warning("not DNS labels, left out: %s", ", ".join(rejected))
    return [f"{s}.{suffix}" for s in sorted(services)], suffix


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="berth installer wire-dns")
    agent_settings.add_arguments(parser)
    parser.add_argument("--names-from", type=Path, required=True, metavar="CACHE",
                        help="the DNS responder's route cache (dns-routes.json)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        settings = agent_settings.from_args(args)
        names, suffix = names_from(args.names_from)
        # decide_mode, as the responder itself does: `auto` avoids resolved when only its
        # FallbackDNS= servers resolve other names
        mode = wiring.decide_mode(settings)
        if mode == wiring.MODE_RESOLVED:
            wiring.apply_resolved(settings.dns_bind, suffix)
        elif mode == wiring.MODE_HOSTS:
            wiring.apply_hosts(settings.hosts_file, names)
    except (ValueError, DnsNameError, wiring.WiringError, OSError) as exc:
        log.error("resolver wiring failed: %s", exc)
        return 1
    log.info("resolver wiring %s: %s", mode, " ".join(names) or "(no names yet)")
    return 0

"""The zone the responder is authoritative for: a suffix and the services below it.

Pure data, built from the bus's `RouteTable`: every route's service becomes
`<service>.<suffix>`. Names that are not valid DNS labels are left out and reported, so a
bad table entry cannot break the answers for the others.
"""

from dataclasses import dataclass

from agent.bus.messages import RouteTable
from agent.schema.dnsnames import DEFAULT_DNS_SUFFIX, normalize_suffix, split_labels
from agent.settings import INTERNAL_PROXY_ADDRESS

DEFAULT_TTL_S = 5


@dataclass(frozen=True)
class Zone:
    suffix: str = DEFAULT_DNS_SUFFIX
    services: frozenset[str] = frozenset()
    ttl: int = DEFAULT_TTL_S
    serial: int = 1
    address: str = INTERNAL_PROXY_ADDRESS

    def fqdns(self) -> list[str]:
        """Every service's name, sorted: `api.svc.internal`, ..."""
        return [f"{s}.{self.suffix}" for s in sorted(self.services)]


def zone_from_table(
    table: RouteTable, *, serial: int, ttl: int = DEFAULT_TTL_S
) -> tuple[Zone, list[str]]:
    """The zone for `table`, and the service names left out because they are not DNS labels."""
    suffix = normalize_suffix(table.suffix)
    services, rejected = split_labels(r.service for r in table.routes)
    zone = Zone(
        suffix=suffix,
        services=services,
        ttl=ttl,
        serial=serial & 0xFFFFFFFF,
    )
    return zone, rejected

"""The zone the responder is authoritative for: a suffix and the services below it.

Pure data, built from the bus's `RouteTable`: every route's service becomes
`<service>.<suffix>`. Names that are not valid DNS labels are left out and reported, so a
bad table entry cannot break the answers for the others.
"""

import re
from dataclasses import dataclass

from agent.bus.messages import RouteTable

DEFAULT_SUFFIX = "svc.internal"
DEFAULT_TTL_S = 5
DEFAULT_ADDRESS = "127.0.0.1"  # where the internal proxy listens

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class ZoneError(ValueError):
    """An invalid suffix; the message names it and says what is allowed."""


def valid_label(label: str) -> bool:
    return bool(_LABEL.fullmatch(label))


def normalize_suffix(suffix: str) -> str:
    s = suffix.strip().lower().rstrip(".")
    labels = s.split(".")
    if not s or not all(valid_label(lb) for lb in labels) or len(s) > 200:
        raise ZoneError(
            f"DNS suffix {suffix!r} is not a valid domain: use dot-separated labels of "
            "a-z, 0-9 and '-' (e.g. svc.internal)"
        )
    return s


@dataclass(frozen=True)
class Zone:
    suffix: str = DEFAULT_SUFFIX
    services: frozenset[str] = frozenset()
    ttl: int = DEFAULT_TTL_S
    serial: int = 1
    address: str = DEFAULT_ADDRESS

    def fqdns(self) -> list[str]:
        """Every service's name, sorted: `api.svc.internal`, ..."""
        return [f"{s}.{self.suffix}" for s in sorted(self.services)]


def zone_from_table(
    table: RouteTable, *, serial: int, ttl: int = DEFAULT_TTL_S
) -> tuple[Zone, list[str]]:
    """The zone for `table`, and the service names left out because they are not DNS labels."""
    suffix = normalize_suffix(table.suffix)
    names = {r.service.lower() for r in table.routes}
    rejected = sorted(n for n in names if not valid_label(n))
    zone = Zone(
        suffix=suffix,
        services=frozenset(names.difference(rejected)),
        ttl=ttl,
        serial=serial & 0xFFFFFFFF,
    )
    return zone, rejected

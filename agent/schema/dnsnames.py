"""What a service's DNS name may be: one label under a suffix (`api.svc.internal`).

Shared by the schema (a stack's service names and `dns.suffix`), the DNS responder's zone
and the resolver wiring, so all three accept exactly the same names.
"""

import re
from collections.abc import Iterable

DEFAULT_DNS_SUFFIX = "svc.internal"
MAX_SUFFIX_LEN = 200

# applied with `fullmatch`: `$` would also match before a final newline ("api\n")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class DnsNameError(ValueError):
    """An invalid DNS suffix; the message names it and says what is allowed."""


def valid_label(label: str) -> bool:
    return bool(_LABEL.fullmatch(label))


def valid_suffix(suffix: str) -> bool:
    """Dot-separated labels, lower case, no leading or trailing dot."""
    return 0 < len(suffix) <= MAX_SUFFIX_LEN and all(valid_label(lb) for lb in suffix.split("."))


def normalize_suffix(suffix: str) -> str:
    s = suffix.strip().lower().rstrip(".")
    if not valid_suffix(s):
        raise DnsNameError(
            f"DNS suffix {suffix!r} is not a valid domain: use dot-separated labels of "
            "a-z, 0-9 and '-' (e.g. svc.internal)"
        )
    return s


def split_labels(names: Iterable[str]) -> tuple[frozenset[str], list[str]]:
    """(the names that are DNS labels, lower-cased; the others, sorted): a bad name is left
    out and reported, so it cannot break the answers for the others."""
    lowered = {n.lower() for n in names}
    rejected = sorted(n for n in lowered if not valid_label(n))
    return frozenset(lowered.difference(rejected)), rejected

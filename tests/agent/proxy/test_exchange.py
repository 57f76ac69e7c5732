"""`Exchange` keeps every attribute name in its class's shared table (exchange.py)."""

import re
from pathlib import Path

from agent.proxy.exchange import Exchange

PROXY = Path(__file__).resolve().parents[3] / "agent" / "proxy"
# CPython's shared table of attribute names takes at most 30 (SHARED_KEYS_MAX_SIZE), one
# of which the seed instance's creation holds back.
SHARED_NAMES_MAX = 29


def _names() -> set[str]:
    instance = Exchange(None, False, False, False, False)  # type: ignore[arg-type]
    return {n for n in vars(Exchange) if not n.startswith("__")} | set(vars(instance))


def test_every_name_an_exchange_is_given_is_seeded() -> None:
    # what the proxy's code assigns on an exchange (`ex.x =`, `nxt.x +=`, ...)
    assigned = set()
    for source in PROXY.glob("*.py"):
        text = source.read_text()
        assigned |= set(re.findall(r"\b(?:ex|nxt)\.([a-z_]+) *(?:=|\+=|-=)(?!=)", text))
    assert assigned, "no assignment found: the pattern no longer matches the code"
    missing = assigned - _names()
    assert not missing, f"give these a class-level default on Exchange: {sorted(missing)}"


def test_the_names_fit_the_shared_table() -> None:
    assert len(_names()) <= SHARED_NAMES_MAX

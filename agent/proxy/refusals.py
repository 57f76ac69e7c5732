"""Connections refused by the per-client-address cap: counted, and logged rate-limited.

A client over `max_conns_per_address` is cut at accept (client.py). Every refusal is
counted (`total`, since the proxy started); the log gets one line at the first refusal
and then at most one per `LOG_INTERVAL_S`, naming how many were refused since the last
line and the address refused most, so a flood of thousands of connections costs a few
log lines, not thousands. The server's sweeper calls `flush` to report the tail of a
burst.
"""

import logging

log = logging.getLogger("agent.proxy")

LOG_INTERVAL_S = 10.0


class Refusals:
    __slots__ = ("cap", "total", "unlogged", "by_address", "next_log")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.total = 0  # refused since the proxy started
        self.unlogged = 0  # refused since the last log line
        self.by_address: dict[str, int] = {}  # of the unlogged ones
        self.next_log = 0.0  # no line before this time (the loop's clock)

    def refused(self, address: str, now: float) -> None:
        self.total += 1
        self.unlogged += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        if now >= self.next_log:
            self.flush(now)

    def flush(self, now: float) -> None:
        """Log what was refused since the last line, if anything and if it is time."""
        if not self.unlogged or now < self.next_log:
            return
        worst = max(self.by_address, key=self.by_address.__getitem__)
        log.warning(
            "refused %d connection(s) over the per-address cap of %d (%d from %s); "
            "%d refused since start",
            self.unlogged,
            self.cap,
            self.by_address[worst],
            worst,
            self.total,
        )
        self.unlogged = 0
        self.by_address.clear()
        self.next_log = now + LOG_INTERVAL_S

"""Connections refused by the per-address cap are counted and logged, rate-limited."""

import logging

import pytest

from agent.bus.messages import Route
from agent.proxy.refusals import LOG_INTERVAL_S
from tests.agent.proxy.memory import Harness


def _cap_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "per-address cap" in r.getMessage()]


def test_refused_connections_are_counted_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.proxy")
    h = Harness([Route("web", 9, "/")])
    try:
        server = h.server
        for _ in range(server.config.max_conns_per_address - 1):  # (the harness made one)
            h.new_client()
            assert not h.sink.closed
        assert server.refusals.total == 0 and _cap_lines(caplog) == []
        for _ in range(5):
            h.new_client()
            assert h.sink.aborted  # cut at accept
        assert server.refusals.total == 5
        assert _cap_lines(caplog) == [
            f"refused 1 connection(s) over the per-address cap of "
            f"{server.config.max_conns_per_address} (1 from 203.0.113.5); 1 refused since start"
        ]
        server.refusals.flush(server.now + LOG_INTERVAL_S / 2)  # too early: nothing more
        assert len(_cap_lines(caplog)) == 1
        server.refusals.flush(server.now + LOG_INTERVAL_S)  # the sweeper, later
        assert _cap_lines(caplog)[1].startswith("refused 4 connection(s)")
        assert _cap_lines(caplog)[1].endswith("(4 from 203.0.113.5); 5 refused since start")
        server.refusals.flush(server.now + 3 * LOG_INTERVAL_S)  # nothing new: no line
        assert len(_cap_lines(caplog)) == 2
    finally:
        h.close()

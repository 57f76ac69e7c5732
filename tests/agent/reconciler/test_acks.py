"""Acknowledgement tracking and the drain decision (pure, on a fake clock)."""

import pytest

from agent.bus.reports import ProxyReport
from agent.reconciler.acks import FORGET_AFTER_S, ProxyRegistry, drain_decision

V1, V2 = (5, 1), (5, 2)


def report(name: str, version=V1, **in_flight: int) -> ProxyReport:
    return ProxyReport(name, version, {int(p[1:]): n for p, n in in_flight.items()})


def test_a_swap_waits_for_every_live_proxy_and_names_the_missing():
    reg = ProxyRegistry()
    assert reg.report(report("external-1"), now=0.0) is True  # announced
    assert reg.report(report("internal-2", version=None), now=0.0) is True
    assert reg.missing(V1, now=0.1) == ["internal-2"]  # nothing applied yet
    reg.report(report("internal-2", V2), now=0.2)
    assert reg.missing(V2, now=0.3) == ["external-1"]
    assert reg.report(report("external-1", V2), now=0.4) is False  # known already
    assert reg.missing(V2, now=0.5) == []
    assert reg.missing(V1, now=0.5) == []  # a later version acknowledges an earlier one


def test_no_proxy_no_wait():
    assert ProxyRegistry().missing(V2, now=0.0) == []


def test_a_silent_proxy_is_forgotten_after_a_bounded_time():
    reg = ProxyRegistry()
    reg.report(report("external-1"), now=0.0)
    reg.report(report("internal-2", V2), now=0.0)
    assert reg.missing(V2, now=FORGET_AFTER_S) == ["external-1"]
    reg.report(report("internal-2", V2), now=FORGET_AFTER_S)  # still heartbeating
    assert reg.missing(V2, now=FORGET_AFTER_S + 0.01) == []
    assert reg.live(now=FORGET_AFTER_S + 0.01) == ["internal-2"]


def test_a_proxy_that_says_goodbye_is_forgotten_at_once():
    reg = ProxyRegistry()
    reg.report(report("external-1"), now=0.0)
    reg.report(ProxyReport("external-1", None, gone=True), now=0.1)
    assert reg.live(now=0.1) == [] and reg.missing(V2, now=0.1) == []


def test_in_flight_sums_the_live_proxies_latest_reports():
    reg = ProxyRegistry(forget_after_s=2.0)
    reg.report(report("external-1", p9001=2, p9002=1), now=0.0)
    reg.report(report("internal-2", p9001=1), now=1.0)
    assert reg.in_flight(9001, now=1.0) == 3
    reg.report(report("external-1", p9001=0), now=1.5)  # one finished since
    assert reg.in_flight(9001, now=1.5) == 1
    assert reg.in_flight(9001, now=3.1) == 0  # internal-2 fell silent: forgotten
    assert reg.in_flight(4444, now=1.5) == 0


@pytest.mark.parametrize(
    ("in_flight", "now", "stop", "cut"),
    [
        (0, 0.0, True, 0),  # nothing open: stop at once
        (3, 29.9, False, 0),  # requests open, within the drain timeout: wait
        (3, 30.0, True, 3),  # the timeout passed: stop, cutting what is open
        (0, 45.0, True, 0),
    ],
)
def test_drain_decision(in_flight, now, stop, cut):
    d = drain_decision(in_flight, started=0.0, now=now, timeout_s=30.0)
    assert (d.stop, d.cut) == (stop, cut)


def test_reports_round_trip_and_refuse_garbage():
    r = ProxyReport("external-7", (1, 2), {8001: 3}, gone=False)
    assert ProxyReport.from_json(r.to_json()) == r
    for raw in (
        b"[]",
        b'{"kind":"metrics"}',
        b'{"kind":"proxy-report","proxy":"","version":null,"in_flight":{}}',
        b'{"kind":"proxy-report","proxy":"x","version":[1],"in_flight":{}}',
        b'{"kind":"proxy-report","proxy":"x","version":null,"in_flight":{"a":1}}',
        b'{"kind":"proxy-report","proxy":"x","version":null,"in_flight":{"80":-1}}',
    ):
        with pytest.raises(ValueError):
            ProxyReport.from_json(raw)

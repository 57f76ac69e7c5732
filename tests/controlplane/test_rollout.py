"""The rolling agent upgrade's planner (pure): one server at a time, in registration order,
each after the previous one's healthy heartbeat with the new version; stops at a failure."""

from typing import Any

from controlplane.rollout import Server, plan


def srv(n: int, version: str | None, status: str = "online", state: str | None = "applied",
        upgrade: dict[str, Any] | None = None) -> Server:  # fmt: skip
    return Server(f"id{n}", f"host{n}", status, state, version, upgrade)


def test_off_and_nothing_served() -> None:
    fleet = [srv(1, "1.0")]
    assert plan(False, "1.1", fleet).state == "off" and plan(False, "1.1", fleet).signal is None
    assert plan(True, None, fleet).state == "idle"


def test_one_server_at_a_time_in_order() -> None:
    r = plan(True, "1.1", [srv(1, "1.0"), srv(2, "1.0"), srv(3, "1.0")])
    assert (r.state, r.signal, r.upgraded, r.total) == ("rolling", "id1", 0, 3)
    assert "host1" in r.message and "(1 of 3)" in r.message
    r = plan(True, "1.1", [srv(1, "1.1"), srv(2, "1.0"), srv(3, "1.0")])
    assert (r.state, r.signal, r.upgraded) == ("rolling", "id2", 1)
    r = plan(True, "1.1", [srv(1, "1.1"), srv(2, "1.1"), srv(3, "1.1")])
    assert (r.state, r.signal, r.upgraded) == ("done", None, 3)


def test_waits_for_the_previous_ones_healthy_heartbeat() -> None:
    for status, state in [("online", "applying"), ("stale", "applied"), ("online", "degraded")]:
        r = plan(True, "1.1", [srv(1, "1.1", status, state), srv(2, "1.0")])
        assert (r.state, r.signal) == ("waiting", None), (status, state)
        assert "host1" in r.message
    # upgraded, but its upgrade is still checking (it may switch back): wait
    checking = {"to": "1.1", "outcome": "checking"}
    assert plan(True, "1.1", [srv(1, "1.1", upgrade=checking), srv(2, "1.0")]).state == "waiting"
    # an unhealthy upgraded server with nobody behind it: done, nothing to wait for
    assert plan(True, "1.1", [srv(1, "1.0"), srv(2, "1.1", "offline")]).signal == "id1"
    assert plan(True, "1.1", [srv(1, "1.1", "offline")]).state == "done"


def test_stops_at_the_first_failure() -> None:
    failed = {"to": "1.1", "outcome": "failed", "detail": "berth-proxy.service is failed"}
    r = plan(True, "1.1", [srv(1, "1.1"), srv(2, "1.0", upgrade=failed), srv(3, "1.0")])
    assert (r.state, r.signal) == ("stopped", None)
    assert "host2" in r.message and "berth-proxy.service is failed" in r.message
    # a newer version served, or the server upgraded by hand: it goes on
    assert plan(True, "1.2", [srv(1, "1.1"), srv(2, "1.0", upgrade=failed)]).signal == "id1"
    assert (
        plan(True, "1.1", [srv(1, "1.1"), srv(2, "1.1", upgrade=failed), srv(3, "1.0")]).signal
        == "id3"
    )


def test_skips_revoked_and_silent_servers_and_waits_for_an_offline_one() -> None:
    r = plan(True, "1.1", [srv(1, "1.0", "revoked"), srv(2, None, "offline", None), srv(3, "1.0")])
    assert (r.signal, r.total) == ("id3", 2)
    r = plan(True, "1.1", [srv(1, "1.0", "offline"), srv(2, "1.0")])
    assert r.signal == "id1" and "offline" in r.message  # its turn until it comes back

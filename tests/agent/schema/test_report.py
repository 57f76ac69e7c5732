"""The return path's types: the wire format (what agents of the previous version sent and
control planes of the previous version read) and errors that name the field."""

from datetime import UTC, datetime
from typing import Any

import pytest

from agent.schema import ValidationError
from agent.schema.report import (
    Event,
    Heartbeat,
    LogChunk,
    ServiceSnapshot,
    parse_event,
    parse_heartbeat,
    parse_log_chunk,
    parse_service,
    stored_services,
)

# a heartbeat as the previous version's reconciler built it, as a plain dict
PREVIOUS_HEARTBEAT: dict[str, Any] = {
    "agent_version": "0.9.0",
    "applied_version": 3,
    "desired_version": 4,
    "state": "degraded",
    "reasons": ["web: crash loop: code 1"],
    "services": [
        {
            "name": "web",
            "commit": "a" * 40,
            "desired_commit": "b" * 40,
            "release": "a" * 40,
            "pid": 4242,
            "port": 40001,
            "state": "backoff",
            "health": "unhealthy",
            "restarts": 3,
            "last_exit": "code 1",
            "last_error": None,
        }
    ],
    "security": {"mode": "open", "exposure": "daemon-port"},
    "upgrade": None,
}


def test_heartbeat_round_trips_the_previous_wire_format() -> None:
    hb = parse_heartbeat(PREVIOUS_HEARTBEAT)
    assert hb.services[0] == ServiceSnapshot(
        "web", "a" * 40, "b" * 40, "a" * 40, 4242, 40001, "backoff", "unhealthy", 3, "code 1"
    )
    assert hb.reasons == ("web: crash loop: code 1",) and hb.desired_version == 4
    assert hb.to_json() == PREVIOUS_HEARTBEAT
    assert hb.wire is PREVIOUS_HEARTBEAT  # stored as received


def test_unknown_keys_survive_both_ways() -> None:
    newer = {**PREVIOUS_HEARTBEAT, "uptime_s": 12}
    newer["services"] = [{**PREVIOUS_HEARTBEAT["services"][0], "cpu_s": 1.5}]
    hb = parse_heartbeat(newer)
    assert hb.extra == {"uptime_s": 12} and hb.services[0].extra == {"cpu_s": 1.5}
    assert hb.to_json() == newer


def test_a_sparse_heartbeat_is_accepted() -> None:
    hb = parse_heartbeat({"services": [{"name": "web"}]})
    assert hb == Heartbeat(None, None, None, (ServiceSnapshot("web"),))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"applied_version": "1"}, "applied_version"),
        ({"desired_version": True}, "desired_version"),
        ({"services": {"web": 1}}, "services"),
        ({"services": [1]}, "services"),
        ({"services": [{"name": ""}]}, "services[0].name"),
        ({"services": [{"name": "web"}, {"name": "api", "pid": "12"}]}, "services[1].pid"),
        ({"services": [{"name": "web", "restarts": 1.5}]}, "services[0].restarts"),
        ({"services": [{"name": "web", "state": 5}]}, "services[0].state"),
        ({"security": []}, "security"),
        ({"upgrade": "yes"}, "upgrade"),
        ({"reasons": [1]}, "reasons"),
        ({"state": 5}, "state"),
    ],
)
def test_heartbeat_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_heartbeat({**PREVIOUS_HEARTBEAT, **change})
    assert err.value.field == field


def test_service_health_as_an_object_reads_its_status() -> None:
    assert parse_service({"name": "web", "health": {"status": "healthy"}}, "s").health == "healthy"


def test_event_wire_format() -> None:
    at = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    ev = Event("id-1", "crash", "exited", at, "web", {"exit": "code 1"})
    wire = ev.to_json()
    assert wire == {
        "id": "id-1",
        "type": "crash",
        "service": "web",
        "message": "exited",
        "at": "2024-05-01T12:00:00.123Z",
        "exit": "code 1",
    }
    back = parse_event(wire, "events[0]")
    assert back.at == datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert back.extra == {"exit": "code 1"} and back.service == "web"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": ""}, "events[2].id"),
        ({"type": 7}, "events[2].type"),
        ({"message": ["x"]}, "events[2].message"),
        ({"at": "2024-05-01T12:00:00"}, "events[2].at"),
        ({"service": "x" * 64}, "events[2].service"),
    ],
)
def test_event_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    good = {"id": "e", "type": "run", "message": "", "at": "2024-05-01T12:00:00Z"}
    with pytest.raises(ValidationError) as err:
        parse_event({**good, **change}, "events[2]")
    assert err.value.field == field


def test_log_chunk_wire_format_and_errors() -> None:
    chunk = LogChunk("web", "build", None, "compiling\n")
    assert chunk.to_json() == {"service": "web", "stream": "build", "commit": None,
                               "data": "compiling\n"}  # fmt: skip
    assert parse_log_chunk(chunk.to_json(), "chunks[0]") == chunk
    for change, field in (({"stream": "err"}, "stream"), ({"data": None}, "data"),
                          ({"commit": 5}, "commit"), ({"service": ""}, "service")):  # fmt: skip
        with pytest.raises(ValidationError) as err:
            parse_log_chunk({**chunk.to_json(), **change}, "chunks[1]")
        assert err.value.field == f"chunks[1].{field}"


def test_stored_services_leave_out_what_no_longer_parses() -> None:
    stored = [{"name": "web", "state": "running"}, {"name": 5}, "junk", {"name": "api"}]
    assert [s.name for s in stored_services(stored)] == ["web", "api"]
    assert stored_services(None) == [] and stored_services({"web": 1}) == []

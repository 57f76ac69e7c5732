import random

from agent.reconciler.policy import (
    CONTROL_PLANE_RETRY,
    DEFAULT_HEARTBEAT_INTERVAL_S,
    HEARTBEAT_MIN_GAP_S,
    Backoff,
    Retry,
    ServiceStatus,
    external_bind,
    failures_after_exit,
    heartbeat_interval,
    heartbeat_wait,
    service_env,
    service_urls,
    stack_state,
)
from agent.schema import parse_stack
from agent.schema.document import build_document, parse_document


def desired():
    spec = parse_stack(
        {
            "name": "s",
            "services": [
                {"name": "api", "repo": "file:///a", "run": "x", "env": {"A": "1"}},
                {"name": "my-web", "repo": "file:///a", "run": "x"},
            ],
        }
    )
    return parse_document(build_document("id", 1, spec, {"api": "a" * 40, "my-web": "b" * 40}))


def test_service_urls_and_env():
    d = desired()
    urls = service_urls(d)
    assert urls == {
        "SERVICE_API_URL": "http://api.svc.internal",
        "SERVICE_MY_WEB_URL": "http://my-web.svc.internal",
    }
    env = service_env({"PATH": "/bin"}, urls, d.services[0], 5123)
    assert env["PORT"] == "5123" and env["A"] == "1" and env["PATH"] == "/bin"
    assert env["SERVICE_MY_WEB_URL"] == "http://my-web.svc.internal"


def test_backoff_doubles_to_a_cap_with_jitter():
    b = Backoff(jitter=0)
    assert [b.delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert b.delay(30) == 300
    rng = random.Random(1)
    jittered = Backoff().delay(4, rng)
    assert 8 * 0.8 <= jittered <= 8 * 1.2


def test_control_plane_retries_spread_a_fleet_out():
    """After a control-plane restart every agent fails at once: their first retries must
    not land at one instant, and later ones stay within the doubling's bounds."""
    rng = random.Random(7)
    first = [CONTROL_PLANE_RETRY.delay(1, rng) for _ in range(1000)]
    assert min(first) >= 0.5 and max(first) <= 1.5
    assert max(first) - min(first) > 0.9  # spread over about a second, not one instant
    assert all(CONTROL_PLANE_RETRY.delay(n, rng) <= 60 for n in range(1, 40))
    assert CONTROL_PLANE_RETRY.delay(30, random.Random(3)) >= 30  # capped, still jittered


def test_failures_reset_after_long_run():
    assert failures_after_exit(5, 10) == 6
    assert failures_after_exit(5, 601) == 1


def test_external_bind_by_mode():
    assert external_bind("tunnel-only", 8080) == "127.0.0.1:8080"
    assert external_bind("open", 8080) == "0.0.0.0:8080"
    assert external_bind("proxy-only", 9000) == "0.0.0.0:9000"


def test_stack_state():
    ok = ServiceStatus("a", True, None, False)
    assert stack_state([ok]) == ("applied", [])
    assert stack_state([ok, ServiceStatus("b", False, None, False)]) == ("applying", [])
    state, reasons = stack_state([ok, ServiceStatus("b", True, "build exited with code 1", False)])
    assert state == "degraded" and reasons == ["b: build exited with code 1"]
    assert stack_state([ServiceStatus("c", True, None, True)])[0] == "degraded"


def test_heartbeat_interval_follows_the_control_plane_within_bounds() -> None:
    assert heartbeat_interval(None) == DEFAULT_HEARTBEAT_INTERVAL_S == 15.0  # older control plane
    assert heartbeat_interval(5) == 5.0
    assert heartbeat_interval(3600) == 60.0  # never less often than a minute
    assert heartbeat_interval(0) == 1.0
    assert heartbeat_interval(True) == heartbeat_interval("10") == DEFAULT_HEARTBEAT_INTERVAL_S


def test_a_changed_state_is_reported_at_once_but_debounced() -> None:
    # unchanged: the next heartbeat is due one interval after the last
    assert heartbeat_wait(100.0, 95.0, 15.0, changed=False) == 10.0
    assert heartbeat_wait(100.0, 80.0, 15.0, changed=False) == 0.0
    # changed: now, unless the last heartbeat left less than the debounce gap ago
    assert heartbeat_wait(100.0, 90.0, 60.0, changed=True) == 0.0
    assert heartbeat_wait(100.0, 100.0, 60.0, changed=True) == HEARTBEAT_MIN_GAP_S
    assert heartbeat_wait(100.0, -float("inf"), 15.0, changed=True) == 0.0  # the first one


def test_retry_doubles_per_failure_and_starts_over_after_a_success():
    retry = Retry(Backoff(base_s=1.0, cap_s=8.0, jitter=0))
    assert [retry.failed() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    retry.succeeded()
    assert retry.failed() == 1.0
    spread = Retry()  # the control plane's: ±50% so a fleet does not come back in a wave
    assert 0.5 <= spread.failed() <= 1.5 and spread.backoff is CONTROL_PLANE_RETRY

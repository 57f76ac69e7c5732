import random

from agent.reconciler.policy import (
    Backoff,
    ServiceStatus,
    external_bind,
    failures_after_exit,
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

"""Pure parts of the dashboard, without sockets: the edit form's conversion and error
placement, the login throttle, password hashing, the live diff and log-chunk parsing."""

import pytest

from agent.schema import ValidationError, parse_stack
from controlplane.dashboard import forms
from controlplane.dashboard.live import Snapshot, diff
from controlplane.dashboard.logstore import MAX_CHUNK_CHARS, parse_chunks
from controlplane.dashboard.passwords import hash_password, verify_password
from controlplane.dashboard.throttle import Record, ThrottlePolicy
from controlplane.errors import ApiError

STACK = {
    "name": "shop",
    "security_mode": "proxy-only",
    "poll_interval_s": 2.5,
    "proxy": {"port": 8081},
    "dns": {"suffix": "svc.internal"},
    "services": [
        {"name": "web", "repo": "file:///srv/web", "ref": "main", "build": "make", "run": "./web",
         "port": None, "path": "/", "strip_prefix": False, "env": {"A": "1", "B": "two words"},
         "health": {"path": "/healthz", "interval_s": 5.0, "timeout_s": 2.0, "retries": 3, "start_period_s": 0.0},
         "commit": "a" * 40},
        {"name": "api", "repo": "file:///srv/api", "ref": "v1", "build": "", "run": "./api",
         "port": 9000, "path": "/api", "strip_prefix": True, "env": {}, "health": None, "commit": "b" * 40},
    ],
}  # fmt: skip


def form_fields(form: forms.StackForm) -> dict[str, str]:
    """What a browser would submit for `form` (checkboxes only when checked)."""
    out = {
        "name": form.name, "security_mode": form.security_mode,
        "poll_interval_s": form.poll_interval_s, "proxy.port": form.proxy_port,
        "dns.suffix": form.dns_suffix,
    }  # fmt: skip
    for i, s in enumerate(form.services):
        p = f"services[{i}]."
        for key in ("name", "repo", "ref", "build", "run", "port", "path"):
            out[p + key] = getattr(s, key)
        if s.strip_prefix:
            out[p + "strip_prefix"] = "1"
        for k, row in enumerate(s.env):
            out[f"{p}env[{k}].name"], out[f"{p}env[{k}].value"] = row.name, row.value
        if s.health_enabled:
            out[p + "health.enabled"] = "1"
        for key in ("path", "interval_s", "timeout_s", "retries", "start_period_s"):
            out[f"{p}health.{key}"] = getattr(s, f"health_{key}")
    return out


def test_stored_stack_round_trips_through_the_form() -> None:
    form = forms.from_stack(STACK)
    assert form.services[0].commit == "a" * 40
    parsed = forms.parse_form(form_fields(form.with_blank_rows()))
    assert parsed.errors == {}
    spec = parse_stack(parsed.body)
    expected = parse_stack({k: v for k, v in STACK.items()} | {
        "services": [{k: v for k, v in s.items() if k != "commit"} for s in STACK["services"]]
    })  # fmt: skip
    assert spec == expected


def test_text_that_is_not_a_number_is_reported_at_its_input() -> None:
    fields = form_fields(forms.from_stack(STACK))
    fields["services[1].port"] = "eighty"
    fields["services[0].health.interval_s"] = "soon"
    fields["poll_interval_s"] = "nan"
    parsed = forms.parse_form(fields)
    assert set(parsed.errors) == {
        "services[1].port",
        "services[0].health.interval_s",
        "poll_interval_s",
    }
    assert "'eighty'" in parsed.errors["services[1].port"]
    assert parsed.form.services[1].port == "eighty"  # kept verbatim for the re-render


def test_schema_errors_land_next_to_the_right_input() -> None:
    fields = form_fields(forms.from_stack(STACK))
    fields["services[1].port"] = "80"
    parsed = forms.parse_form(fields)
    with pytest.raises(ValidationError) as exc:
        parse_stack(parsed.body)
    assert forms.input_for_error(exc.value.field, parsed.form) == "services[1].port"
    # env errors name the variable; the form has rows
    fields = form_fields(forms.from_stack(STACK))
    fields["services[0].env[1].name"] = "bad-name"
    parsed = forms.parse_form(fields)
    with pytest.raises(ValidationError) as exc:
        parse_stack(parsed.body)
    assert exc.value.field == "services[0].env.bad-name"
    assert forms.input_for_error(exc.value.field, parsed.form) == "services[0].env[1].name"


def test_env_rows_blank_ignored_nameless_and_duplicates_refused() -> None:
    fields = form_fields(forms.from_stack(STACK))
    fields["services[0].env[5].name"] = ""
    fields["services[0].env[5].value"] = ""
    assert forms.parse_form(fields).body["services"][0]["env"] == {"A": "1", "B": "two words"}
    fields["services[0].env[6].value"] = "orphan"
    fields["services[0].env[7].name"] = "A"
    errors = forms.parse_form(fields).errors
    assert errors["services[0].env[2].name"] == "give the variable a name"
    assert "set twice" in errors["services[0].env[3].name"]


def test_buttons_add_and_remove_without_losing_input() -> None:
    form = forms.from_stack(STACK)
    more = forms.apply_action(form, "add_service")
    assert len(more.services) == 3 and more.services[:2] == form.services
    fewer = forms.apply_action(form, "remove_service:0")
    assert [s.name for s in fewer.services] == ["api"]
    env = forms.apply_action(form, "add_env:1")
    assert len(env.services[1].env) == 1
    for bogus in ("remove_service:9", "remove_service:x", "explode", "add_env:-1"):
        assert forms.apply_action(form, bogus) == form


def test_health_check_off_sends_none_and_unchecked_boxes_are_false() -> None:
    fields = form_fields(forms.from_stack(STACK))
    del fields["services[0].health.enabled"]
    del fields["services[1].strip_prefix"]
    body = forms.parse_form(fields).body
    assert "health" not in body["services"][0]
    assert body["services"][1]["strip_prefix"] is False


def test_throttle_blocks_after_free_failures_and_backs_off() -> None:
    policy = ThrottlePolicy(free_failures=3, base_delay_s=2, max_delay_s=10, window_s=60)
    rec: Record | None = None
    for _ in range(2):
        rec = policy.after_failure(rec, 0.0)
        assert policy.wait(rec, 0.0) == 0
    rec = policy.after_failure(rec, 0.0)
    assert policy.wait(rec, 0.0) == 2
    assert policy.wait(None, 0.0) == 0  # a key without failures
    rec = policy.after_failure(policy.after_failure(rec, 0.0), 0.0)
    assert policy.wait(rec, 0.0) == 8
    rec = policy.after_failure(rec, 0.0)
    assert policy.wait(rec, 0.0) == 10  # capped
    assert policy.wait(rec, 11.0) == 0


def test_throttle_window_expires_old_failures() -> None:
    policy = ThrottlePolicy(free_failures=2, window_s=10)
    rec = policy.after_failure(None, 0.0)
    rec = policy.after_failure(rec, 20.0)
    assert rec == Record(1, 20.0, 0.0) and policy.wait(rec, 20.0) == 0
    assert policy.forgettable_before(20.0) == 10.0


def test_passwords_hash_verify_and_reject_garbage() -> None:
    stored = hash_password("s3cret-passphrase")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert verify_password("s3cret-passphrase", stored)
    assert not verify_password("s3cret-passphrasE", stored)
    assert hash_password("s3cret-passphrase") != stored  # salted
    for bad in ("", "plain", "scrypt$1$2", "bcrypt$1$1$1$aa$bb", "scrypt$x$8$1$00$00"):
        assert not verify_password("anything", bad)


def test_live_diff_names_the_stacks_and_kinds_that_changed() -> None:
    a = Snapshot({"s1": "h1", "s2": "h2"}, {"i1": ("s1", "t1|online")}, {"s1": 5})
    assert diff(a, a) == {}
    b = Snapshot(
        {"s1": "h1", "s2": "h3"}, {"i1": ("s1", "t2|online"), "i2": ("s2", "|offline")}, {"s1": 6}
    )
    assert diff(a, b) == {"s1": {"instances", "events"}, "s2": {"stack", "instances"}}
    c = Snapshot({"s1": "h1"}, {}, {})  # s2 deleted, i1 gone
    assert diff(b, c) == {"s2": {"stack", "instances"}, "s1": {"instances", "events"}}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "chunks"),
        ({"chunks": "x"}, "chunks"),
        ({"chunks": [1]}, "chunks[0]"),
        ({"chunks": [{"service": "", "stream": "run", "data": "x"}]}, "chunks[0].service"),
        ({"chunks": [{"service": "web", "stream": "stdout", "data": "x"}]}, "chunks[0].stream"),
        ({"chunks": [{"service": "web", "stream": "run", "data": 5}]}, "chunks[0].data"),
        ({"chunks": [{"service": "web", "stream": "run", "commit": 7, "data": "x"}]}, "chunks[0].commit"),
        ({"chunks": [{"service": "web", "stream": "run", "data": "x" * (MAX_CHUNK_CHARS + 1)}]}, "chunks[0].data"),
    ],
)  # fmt: skip
def test_log_chunks_bad_input_names_the_field(body: object, field: str) -> None:
    with pytest.raises(ApiError) as exc:
        parse_chunks(body)
    assert exc.value.field == field


def test_log_chunks_empty_data_is_dropped() -> None:
    chunks = parse_chunks({"chunks": [
        {"service": "web", "stream": "run", "data": ""},
        {"service": "web", "stream": "build", "commit": "c" * 40, "data": "ok\n"},
    ]})  # fmt: skip
    assert [(c.stream, c.data) for c in chunks] == [("build", "ok\n")]


def test_error_summary_names_fields_for_people() -> None:
    form = forms.from_stack(STACK)
    assert forms.describe_field("services[1].port", form) == "Service 2 (api): port"
    assert (
        forms.describe_field("services[0].env[1].name", form)
        == "Service 1 (web): environment variable 2"
    )
    assert forms.describe_field("proxy.port", form) == "Proxy port"
    assert forms.describe_field("services[7].ref", form) == "Service 8: ref"

import copy

import pytest

from agent.schema import ValidationError, parse_stack


def body(**overrides):
    b = {
        "name": "shop",
        "security_mode": "open",
        "poll_interval_s": 5,
        "proxy": {"port": 8080},
        "services": [
            {
                "name": "api",
                "repo": "https://example.com/a.git",
                "ref": "main",
                "run": "python app.py",
                "port": 5001,
                "path": "/api",
                "env": {"DEBUG": "1"},
                "health": {
                    "path": "/healthz",
                    "interval_s": 2,
                    "timeout_s": 1,
                    "retries": 3,
                    "start_period_s": 0,
                },
            },
            {
                "name": "web",
                "repo": "git@github.com:acme/web.git",
                "run": "node server.js",
                "port": 5002,
                "path": "/",
            },
        ],
    }
    b.update(overrides)
    return b


def test_valid_stack_parses_with_defaults():
    spec = parse_stack(body())
    assert spec.name == "shop"
    assert [s.name for s in spec.services] == ["api", "web"]
    assert spec.services[0].health.retries == 3
    assert spec.services[1].health is None
    assert spec.services[1].ref == "HEAD"
    assert spec.dns_suffix == "svc.internal"
    assert parse_stack({"name": "x"}).security_mode == "tunnel-only"


def test_round_trip_through_to_dict():
    spec = parse_stack(body())
    assert parse_stack(spec.to_dict()) == spec


def test_trailing_slash_of_path_is_normalised():
    b = body()
    b["services"][0]["path"] = "/api/"
    assert parse_stack(b).services[0].path == "/api"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["services"][0].update(name="API"), "services[0].name"),
        (lambda b: b["services"][0].update(name="-x"), "services[0].name"),
        (lambda b: b["services"][1].update(name="api"), "services[1].name"),
        (lambda b: b["services"][1].update(path="/api"), "services[1].path"),
        (lambda b: b["services"][1].update(port=5001), "services[1].port"),
        (lambda b: b["services"][0].update(port=80), "services[0].port"),
        (lambda b: b["services"][0].update(port=70000), "services[0].port"),
        (lambda b: b["services"][0].update(port="5001"), "services[0].port"),
        (lambda b: b["services"][0].update(path="api"), "services[0].path"),
        (
            lambda b: b["services"][0].update(repo="ext::sh -c touch% /tmp/pwned"),
            "services[0].repo",
        ),
        (lambda b: b["services"][0].update(repo="/local/path"), "services[0].repo"),
        (lambda b: b["services"][0].update(repo="fd::x"), "services[0].repo"),
        (lambda b: b["services"][0].update(ref="--upload-pack=x"), "services[0].ref"),
        (lambda b: b["services"][0].update(run="  "), "services[0].run"),
        (lambda b: b["services"][0].update(env={"lower": "x"}), "services[0].env.lower"),
        (lambda b: b["services"][0].update(env={"PORT": "1"}), "services[0].env.PORT"),
        (lambda b: b["services"][0].update(env={"A": 1}), "services[0].env.A"),
        (
            lambda b: b["services"][0]["health"].update(interval_s=0),
            "services[0].health.interval_s",
        ),
        (lambda b: b["services"][0]["health"].update(timeout_s=-1), "services[0].health.timeout_s"),
        (lambda b: b["services"][0]["health"].update(retries=0), "services[0].health.retries"),
        (lambda b: b["services"][0].update(colour="red"), "services[0].colour"),
        (lambda b: b["services"][0]["health"].update(extra=1), "services[0].health.extra"),
        (lambda b: b.update(security_mode="closed"), "security_mode"),
        (lambda b: b.update(poll_interval_s=0), "poll_interval_s"),
        (lambda b: b.update(unknown=True), "unknown"),
        (lambda b: b.update(proxy={"port": 22}), "proxy.port"),
        (lambda b: b.update(services={}), "services"),
        (lambda b: b.update(name=""), "name"),
    ],
)
def test_bad_fields_are_named(mutate, field):
    b = copy.deepcopy(body())
    mutate(b)
    with pytest.raises(ValidationError) as err:
        parse_stack(b)
    assert err.value.field == field
    assert err.value.detail
    assert err.value.as_dict()["field"] == field


def test_non_object_body():
    with pytest.raises(ValidationError) as err:
        parse_stack([1, 2])
    assert err.value.field == "body"


def _set(where: str, value):
    """A mutation setting `services[0].<where>` (dotted) to `value`."""

    def mutate(b):
        target = b["services"][0]
        *path, last = where.split(".")
        for key in path:
            target = target[key]
        target[last] = value

    return mutate


# NUL bytes (issue 15 item 7): the agent cannot exec or set them, and used to loop forever
# on "embedded null byte"; trailing newlines (item 8): `$` matched before a final "\n".
HOSTILE_STRINGS = [
    ("env", {"DEBUG": "1\x00rm"}, "services[0].env.DEBUG"),
    ("env", {"DE\x00BUG": "1"}, "services[0].env.DE\x00BUG"),
    ("env", {"DEBUG\n": "1"}, "services[0].env.DEBUG\n"),
    ("run", "python app.py\x00--evil", "services[0].run"),
    ("build", "make\x00", "services[0].build"),
    ("name", "api\n", "services[0].name"),
    ("path", "/x\n", "services[0].path"),
    ("health.path", "/healthz\n", "services[0].health.path"),
    ("ref", "ma\nin", "services[0].ref"),
    ("repo", "git@github.com:acme/web.git\n", "services[0].repo"),
    ("repo", "https://example.com/a.git\n", "services[0].repo"),
    ("repo", "https://example.com/a\x00.git", "services[0].repo"),
]


@pytest.mark.parametrize(("where", "value", "field"), HOSTILE_STRINGS, ids=repr)
def test_nul_bytes_and_newlines_are_refused(where, value, field):
    b = copy.deepcopy(body())
    _set(where, value)(b)
    with pytest.raises(ValidationError) as err:
        parse_stack(b)
    assert err.value.field == field and err.value.detail


def test_dns_suffix_with_trailing_newline_is_refused():
    with pytest.raises(ValidationError) as err:
        parse_stack(body(dns={"suffix": "svc.internal\n"}))
    assert err.value.field == "dns.suffix"


def test_drain_timeout_defaults_to_30_s_and_leaves_existing_documents_unchanged():
    spec = parse_stack(body())
    assert [s.drain_timeout_s for s in spec.services] == [30.0, 30.0]
    assert "drain_timeout_s" not in spec.services[0].to_dict()  # same hash as before


def test_drain_timeout_is_per_service_and_bounded():
    b = body()
    b["services"][1]["drain_timeout_s"] = 2.5
    spec = parse_stack(b)
    assert spec.services[1].drain_timeout_s == 2.5
    assert spec.services[1].to_dict()["drain_timeout_s"] == 2.5
    assert (
        parse_stack({**b, "services": [spec.services[1].to_dict()]}).services[0] == spec.services[1]
    )
    for bad in (-1, 3601, "30", True):
        b["services"][1]["drain_timeout_s"] = bad
        with pytest.raises(ValidationError) as err:
            parse_stack(b)
        assert err.value.field == "services[1].drain_timeout_s"

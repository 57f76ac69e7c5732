"""The one field validator and the one security-mode enum, as both the stack schema and
the firewall helper's requests use them."""

import pytest

from agent.bus.firewall import RequestError, parse_request
from agent.schema import SECURITY_MODES, SecurityMode, ValidationError, parse_stack
from agent.schema.fields import Fields


def test_fields_name_the_field_with_the_callers_error_class() -> None:
    f = Fields({"port": 0, "on": "yes"}, "options", {"port", "on"}, RequestError)
    with pytest.raises(RequestError, match=r"^options\.port: must be a port number"):
        f.port("port", None)
    with pytest.raises(RequestError, match=r"^options\.on: must be true or false"):
        f.boolean("on")
    with pytest.raises(ValidationError, match=r"^services\[0\]\.x: unknown key"):
        Fields({"x": 1}, "services[0]", {"name"})
    assert issubclass(RequestError, ValidationError)  # one error shape: field + detail


def test_stack_and_firewall_refuse_unknown_keys_and_modes_alike() -> None:
    with pytest.raises(ValidationError) as stack_err:
        parse_stack({"name": "s", "bogus": 1})
    with pytest.raises(RequestError) as request_err:
        parse_request(b'{"command": "status", "bogus": 1}')
    assert stack_err.value.detail.split(";")[0] == request_err.value.detail.split(";")[0]
    assert SECURITY_MODES == ("open", "proxy-only", "tunnel-only")
    for mode in SecurityMode:
        assert parse_stack({"name": "s", "security_mode": mode}).security_mode == mode
        assert parse_request(
            f'{{"command": "plan", "mode": "{mode}", "options": {{"proxy_port": 8080}}}}'.encode()
        )
    with pytest.raises(ValidationError, match="security_mode: must be one of open, proxy-only"):
        parse_stack({"name": "s", "security_mode": "closed"})
    with pytest.raises(RequestError, match="mode: must be one of open, proxy-only"):
        parse_request(b'{"command": "plan", "mode": "closed"}')

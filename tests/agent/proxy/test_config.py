"""ProxyConfig validation."""

import pytest

from agent.proxy.config import ProxyConfig


def test_defaults_are_valid() -> None:
    config = ProxyConfig()
    assert config.head_timeout == 10.0 and config.max_head_bytes == 32 * 1024
    assert config.reuse_port is False


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("head_timeout", 0),
        ("upstream_timeout", -1.0),
        ("pool_max_idle", "many"),
        ("drain_timeout", True),
    ],
)
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"ProxyConfig.{field} must be a positive number"):
        ProxyConfig(**{field: value})  # type: ignore[arg-type]


def test_small_head_limit_and_reuse_port_type() -> None:
    with pytest.raises(ValueError, match="max_head_bytes must be at least 1024"):
        ProxyConfig(max_head_bytes=100)
    with pytest.raises(ValueError, match="reuse_port must be true or false"):
        ProxyConfig(reuse_port=1)  # type: ignore[arg-type]


def test_from_mapping_refuses_unknown_keys() -> None:
    assert ProxyConfig.from_mapping({"head_timeout": 2}).head_timeout == 2
    with pytest.raises(ValueError, match="unknown ProxyConfig field"):
        ProxyConfig.from_mapping({"head_timout": 2})


def test_connection_cap_must_be_positive_and_loopback_flag_boolean() -> None:
    with pytest.raises(ValueError, match="max_conns_per_address"):
        ProxyConfig(max_conns_per_address=0)
    with pytest.raises(ValueError, match="cap_loopback"):
        ProxyConfig(cap_loopback=1)  # type: ignore[arg-type]

"""Issue 15 item 9: JSON nested deeper than `MAX_JSON_DEPTH` is a 400 naming the limit,
on every JSON endpoint (Quart's and the agents' fast path), never a 500 with a traceback."""

from typing import Any

import pytest
import requests

from controlplane.errors import BadRequest
from controlplane.httpjson import MAX_JSON_DEPTH, parse_json_body
from tests.controlplane.harness import Api, ControlPlane
from tests.controlplane.test_agent_api import enrolled  # noqa: F401  (fixture)

DEEP = b"[" * 1_000_000  # about 1 MB, under the body limit


def test_depth_is_bounded_before_parsing() -> None:
    ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert parse_json_body(ok) is not None
    for bad in (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), DEEP,
                b'{"a":' * 5000 + b"1" + b"}" * 5000):  # fmt: skip
        with pytest.raises(BadRequest) as err:
            parse_json_body(bad)
        assert err.value.code == "too_deep" and str(MAX_JSON_DEPTH) in err.value.detail


def test_brackets_inside_strings_do_not_count() -> None:
    body = b'{"data": "' + b"[{" * 10_000 + b'\\"[[[", "more": ["]]]]"]}'
    assert parse_json_body(body)["more"] == ["]]]]"]


@pytest.mark.parametrize("path", ["/agent/register", "/agent/events", "/agent/logs",
                                  "/agent/heartbeat", "/stacks"])  # fmt: skip
def test_deep_json_is_400_without_traceback(
    server: ControlPlane,
    enrolled: dict[str, Any],  # noqa: F811
    admin_token: str,
    path: str,
) -> None:
    token = admin_token if path == "/stacks" else enrolled["credential"]
    resp = Api(server.url, token).post(
        path, data=DEEP, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "too_deep", resp.text
    assert "Traceback" not in server.log() and "RecursionError" not in server.log()


def test_register_needs_no_credential_and_still_gets_400(server_url: str) -> None:
    resp = requests.post(server_url + "/api/v1/agent/register", data=DEEP, timeout=30)
    assert resp.status_code == 400 and resp.json()["error"] == "too_deep"

"""OpenAPI paths of the agent API (register, desired state, heartbeat, logs, events) (merged into `openapi.document`); docs/api.md describes them
in prose."""

from typing import Any

from controlplane.openapi_build import _AGENT, _OBJ, _op, _q, _resp


def paths() -> dict[str, Any]:
    return {
        "/api/v1/agent/register": {
            "post": _op(
                "Exchange an install token for a credential",
                None,
                _resp("201", "{instance_id, credential, stack_id}", _OBJ),
                body={"type": "object", "required": ["token", "hostname"]},
                errors=("400", "401", "422"),
            )
        },
        "/api/v1/agent/desired-state": {
            "get": _op(
                "This agent's desired state; 304 on a matching If-None-Match",
                _AGENT,
                {**_resp("200", "document", _OBJ), **_resp("304", "unchanged")},
                params=[
                    _q(
                        "wait",
                        {"type": "number", "maximum": 60},
                        "long poll: seconds to wait for a change",
                    )
                ],
                errors=("400", "401"),
            )
        },
        "/api/v1/agent/heartbeat": {
            "post": _op(
                "Latest full status snapshot",
                _AGENT,
                _resp("200", "{ok, desired_hash, heartbeat_interval_s}", _OBJ),
                body={"type": "object"},
                errors=("400", "401", "422"),
            )
        },
        "/api/v1/agent/logs": {
            "post": _op(
                "Service build/run output chunks",
                _AGENT,
                _resp("200", "{accepted: N}", _OBJ),
                body={"type": "object", "required": ["chunks"]},
                errors=("400", "401", "422"),
            )
        },
        "/api/v1/agent/events": {
            "post": _op(
                "A batch of events; idempotent by id",
                _AGENT,
                _resp("200", "{accepted: [ids]}", _OBJ),
                body={"type": "object", "required": ["events"]},
                errors=("400", "401", "422"),
            )
        },
    }

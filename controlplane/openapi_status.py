"""OpenAPI paths of instances' status, rolling agent upgrades, events and the version (merged into `openapi.document`); docs/api.md describes them
in prose."""

from typing import Any

from controlplane.openapi_build import _ADMIN, _OBJ, _STACK_ID, _op, _q, _resp


def paths() -> dict[str, Any]:
    return {
        "/api/v1/stacks/{stack_id}/instances": {
            "parameters": _STACK_ID,
            "get": _op(
                "Instances with their latest heartbeat and status",
                _ADMIN,
                _resp("200", "{instances: [...]}", _OBJ),
            ),
        },
        "/api/v1/stacks/{stack_id}/agent-upgrades": {
            "parameters": _STACK_ID,
            "get": _op(
                "The stack's rolling agent upgrade: on/off, target version, progress",
                _ADMIN,
                _resp(
                    "200",
                    "{auto, state, target_version, upgrading, message, upgraded, total}",
                    _OBJ,
                ),
            ),
            "put": _op(
                "Switch automatic (rolling) agent upgrades on or off",
                _ADMIN,
                _resp(
                    "200",
                    "{auto, state, target_version, upgrading, message, upgraded, total}",
                    _OBJ,
                ),
                body={
                    "type": "object",
                    "required": ["auto"],
                    "properties": {"auto": {"type": "boolean"}},
                },
            ),
        },
        "/api/v1/stacks/{stack_id}/events": {
            "parameters": _STACK_ID,
            "get": _op(
                "Events, newest first",
                _ADMIN,
                _resp("200", "{events: [...], next_before}", _OBJ),
                params=[
                    _q("instance", {"type": "string"}, "instance id"),
                    _q("service", {"type": "string"}, "service name"),
                    _q("type", {"type": "string"}, "event type"),
                    _q("since", {"type": "string"}, "ISO 8601: events at or after"),
                    _q(
                        "before",
                        {"type": "integer"},
                        "cursor: next_before of the previous page",
                    ),
                    _q("limit", {"type": "integer", "maximum": 1000}, "page size (default 100)"),
                ],
            ),
        },
        "/api/v1/version": {
            "get": _op(
                "This control plane's Berth version and the agent version its wheelhouse serves",
                None,
                _resp("200", "{controlplane, agent}", _OBJ),
                errors=(),
            )
        },
    }

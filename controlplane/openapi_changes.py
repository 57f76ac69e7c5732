"""OpenAPI paths of the audit trail, version diffs and notifications (merged into
`openapi.document`); docs/api.md describes them in prose."""

from typing import Any

from controlplane.openapi_build import _ADMIN, _OBJ, _SID, _op, _q, _resp

_CHANNEL = [{"name": "channel_id", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "channel id or name"}]  # fmt: skip


def paths() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "/api/v1/audit": {
            "get": _op(
                "The audit trail, newest first (append-only)", _ADMIN,
                _resp("200", "{records, next_before, retention_days}", _OBJ),
                params=[
                    _q("actor", text, "token or user name"),
                    _q("stack", text, "stack id or name"),
                    _q("action", text, "e.g. stack.update, or a prefix ending in '.'"),
                    _q("since", text, "ISO 8601 time (inclusive)"),
                    _q("until", text, "ISO 8601 time (exclusive)"),
                    _q("before", {"type": "integer"}, "cursor: next_before of the previous page"),
                    _q("limit", {"type": "integer", "maximum": 500}, "page size (default 100)"),
                ],
                errors=("400", "401"),
            ),
        },
        "/api/v1/stacks/{stack_id}/versions/{a}/diff/{b}": {
            "parameters": [
                _SID,
                {"name": "a", "in": "path", "required": True, "schema": {"type": "integer"}},
                {"name": "b", "in": "path", "required": True, "schema": {"type": "integer"}},
            ],
            "get": _op("Field-level diff between two versions", _ADMIN,
                       _resp("200", "{from, to, stack, services, empty}", _OBJ)),
        },
        "/api/v1/stacks/preview": {
            "post": _op("The diff saving this stack body would make (nothing saved)", _ADMIN,
                        _resp("200", "{stack_id, exists, from, to, stack, services, empty}", _OBJ),
                        body=_OBJ),
        },
        "/api/v1/notifications/events": {
            "get": _op("Events a channel can subscribe to", _ADMIN, _resp("200", "{events}", _OBJ),
                       errors=("401",)),
        },
        "/api/v1/notifications/channels": {
            "get": _op("List channels", _ADMIN, _resp("200", "{channels}", _OBJ),
                       params=[_q("stack", text, "only this stack's channels")]),
            "post": _op("Add a channel (webhook, slack, email)", _ADMIN,
                        _resp("201", "the channel", _OBJ), body=_OBJ,
                        errors=("400", "401", "409", "422")),
        },
        "/api/v1/notifications/channels/{channel_id}": {
            "parameters": _CHANNEL,
            "get": _op("A channel", _ADMIN, _resp("200", "the channel", _OBJ)),
            "put": _op("Replace a channel's settings (secret kept unless given)", _ADMIN,
                       _resp("200", "the channel", _OBJ), body=_OBJ,
                       errors=("400", "401", "404", "409", "422")),
            "delete": _op("Delete a channel and its delivery log", _ADMIN, _resp("204", "deleted")),
        },
        "/api/v1/notifications/channels/{channel_id}/test": {
            "parameters": _CHANNEL,
            "post": _op("Queue a test message", _ADMIN, _resp("202", "{queued, key}", _OBJ)),
        },
        "/api/v1/notifications/channels/{channel_id}/deliveries": {
            "parameters": _CHANNEL,
            "get": _op("The channel's delivery log and backlog", _ADMIN,
                       _resp("200", "{deliveries, backlog}", _OBJ)),
        },
    }  # fmt: skip

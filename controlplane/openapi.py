"""The OpenAPI 3.1 document of the HTTP API, served at /api/v1/openapi.json.

Written by hand (the API is small) from a few builders so each path stays one line of
data; docs/api.md is the prose companion.
"""

from typing import Any

_ERR = {"$ref": "#/components/schemas/Error"}
_ADMIN: list[dict[str, list[str]]] = [{"admin": []}]
_AGENT: list[dict[str, list[str]]] = [{"agent": []}]


def _resp(code: str, text: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"description": text}
    if schema is not None:
        body["content"] = {"application/json": {"schema": schema}}
    return {code: body}


def _op(summary: str, security: list[Any] | None, ok: dict[str, Any], *,
        body: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None,
        errors: tuple[str, ...] = ("400", "401", "404", "422")) -> dict[str, Any]:  # fmt: skip
    responses: dict[str, Any] = dict(ok)
    for code in errors:
        responses.update(_resp(code, "error", _ERR))
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if security is not None:
        op["security"] = security
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _q(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": text}


_OBJ = {"type": "object"}
_STACK = {"$ref": "#/components/schemas/Stack"}
_SID = {"name": "stack_id", "in": "path", "required": True, "schema": {"type": "string"}}


def document(server_url: str) -> dict[str, Any]:
    stack_id = [_SID]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Berth control plane", "version": "1"},
        "servers": [{"url": server_url}],
        "components": {
            "securitySchemes": {
                "admin": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "admin token (berth controlplane token create)",
                },
                "agent": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "agent credential from /agent/register",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {
                        "error": {"type": "string"},
                        "detail": {"type": "string"},
                        "field": {"type": "string"},
                    },
                },
                "Service": {
                    "type": "object",
                    "required": ["name", "repo", "run"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {
                            "type": "string",
                            "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
                        },
                        "repo": {
                            "type": "string",
                            "description": "https://, http://, ssh://, git://, file:// or git@host:path",
                        },
                        "ref": {"type": "string", "default": "HEAD"},
                        "build": {"type": "string"},
                        "run": {"type": "string"},
                        "port": {"type": ["integer", "null"], "minimum": 1024, "maximum": 65535},
                        "path": {"type": ["string", "null"], "pattern": "^/"},
                        "strip_prefix": {"type": "boolean"},
                        "env": {
                            "type": "object",
                            "description": "NAME: value; a secret is an object (docs/api.md, Secrets)",
                            "additionalProperties": {
                                "oneOf": [
                                    {"type": "string"},
                                    {
                                        "type": "object",
                                        "required": ["secret"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "secret": {"const": True},
                                            "value": {"type": "string", "writeOnly": True},
                                            "set": {"type": "boolean", "readOnly": True},
                                            "fingerprint": {
                                                "type": ["string", "null"],
                                                "readOnly": True,
                                            },
                                        },
                                    },
                                ]
                            },
                        },
                        "health": {"type": ["object", "null"]},
                        "drain_timeout_s": {"type": "number", "minimum": 0, "maximum": 3600},
                        "commit": {"type": "string", "readOnly": True},
                    },
                },
                "Stack": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string", "readOnly": True},
                        "version": {"type": "integer", "readOnly": True},
                        "hash": {"type": "string", "readOnly": True},
                        "created_at": {"type": "string", "readOnly": True},
                        "updated_at": {"type": "string", "readOnly": True},
                        "name": {"type": "string"},
                        "security_mode": {"enum": ["open", "proxy-only", "tunnel-only"]},
                        "poll_interval_s": {"type": "number"},
                        "proxy": {"type": "object", "properties": {"port": {"type": "integer"}}},
                        "dns": {"type": "object", "properties": {"suffix": {"type": "string"}}},
                        "services": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Service"},
                        },
                    },
                },
            },
        },
        "paths": {
            "/api/v1/stacks": {
                "get": _op("List stacks", _ADMIN, _resp("200", "{stacks: [Stack]}", _OBJ)),
                "post": _op(
                    "Create a stack (refs resolved to commits)",
                    _ADMIN,
                    _resp("201", "the stack", _STACK),
                    body=_STACK,
                    errors=("400", "401", "409", "422"),
                ),
            },
            "/api/v1/stacks/{stack_id}": {
                "parameters": stack_id,
                "get": _op("Get a stack", _ADMIN, _resp("200", "the stack", _STACK)),
                "put": _op(
                    "Replace a stack (new version only if content changed)",
                    _ADMIN,
                    _resp("200", "the stack plus changed", _STACK),
                    body=_STACK,
                    errors=("400", "401", "404", "409", "422"),
                ),
                "delete": _op(
                    "Delete a stack, its versions, tokens, instances and events",
                    _ADMIN,
                    _resp("204", "deleted"),
                ),
            },
            "/api/v1/stacks/{stack_id}/refresh": {
                "parameters": stack_id,
                "post": _op(
                    "Re-resolve git refs", _ADMIN, _resp("200", "the stack plus changed", _STACK)
                ),
            },
            "/api/v1/stacks/{stack_id}/desired-state": {
                "parameters": stack_id,
                "get": _op(
                    "The current desired-state document (ETag)",
                    _ADMIN,
                    _resp("200", "document", _OBJ),
                ),
            },
            "/api/v1/stacks/{stack_id}/versions": {
                "parameters": stack_id,
                "get": _op(
                    "List versions, newest first",
                    _ADMIN,
                    _resp("200", "{versions: [{version, hash, created_at, reason}]}", _OBJ),
                ),
            },
            "/api/v1/stacks/{stack_id}/versions/{version}": {
                "parameters": [
                    *stack_id,
                    {
                        "name": "version",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer"},
                    },
                ],
                "get": _op("One version's document", _ADMIN, _resp("200", "document", _OBJ)),
            },
            "/api/v1/stacks/{stack_id}/rollback": {
                "parameters": stack_id,
                "post": _op(
                    "New version with an old version's content",
                    _ADMIN,
                    _resp("200", "the stack plus changed", _STACK),
                    body={
                        "type": "object",
                        "required": ["version"],
                        "properties": {"version": {"type": "integer"}},
                    },
                ),
            },
            "/api/v1/stacks/{stack_id}/install-tokens": {
                "parameters": stack_id,
                "post": _op(
                    "Create a one-time install token",
                    _ADMIN,
                    _resp("201", "{id, token, expires_at, install_command}", _OBJ),
                ),
                "get": _op(
                    "List install tokens (never the tokens)",
                    _ADMIN,
                    _resp("200", "{install_tokens: [...]}", _OBJ),
                ),
            },
            "/api/v1/stacks/{stack_id}/install-tokens/{token_id}": {
                "parameters": [
                    *stack_id,
                    {
                        "name": "token_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "delete": _op("Revoke an install token", _ADMIN, _resp("204", "revoked")),
            },
            "/api/v1/stacks/{stack_id}/instances": {
                "parameters": stack_id,
                "get": _op(
                    "Instances with their latest heartbeat and status",
                    _ADMIN,
                    _resp("200", "{instances: [...]}", _OBJ),
                ),
            },
            "/api/v1/stacks/{stack_id}/agent-upgrades": {
                "parameters": stack_id,
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
            "/api/v1/version": {
                "get": _op(
                    "This control plane's Berth version and the agent version its wheelhouse serves",
                    None,
                    _resp("200", "{controlplane, agent}", _OBJ),
                    errors=(),
                )
            },
            "/api/v1/stacks/{stack_id}/events": {
                "parameters": stack_id,
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
                        _q(
                            "limit", {"type": "integer", "maximum": 1000}, "page size (default 100)"
                        ),
                    ],
                ),
            },
            "/api/v1/stacks/{stack_id}/webhook": {
                "parameters": stack_id,
                "get": _op("Webhook URL and secret", _ADMIN, _resp("200", "{url, secret}", _OBJ)),
            },
            "/api/v1/instances/{instance_id}": {
                "parameters": [
                    {
                        "name": "instance_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "delete": _op("Revoke an instance's credential", _ADMIN, _resp("204", "revoked")),
            },
            "/api/v1/tokens": {
                "get": _op("List admin tokens", _ADMIN, _resp("200", "{tokens: [...]}", _OBJ))
            },
            "/api/v1/tokens/{token_id}": {
                "parameters": [
                    {
                        "name": "token_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "delete": _op("Revoke admin tokens by id or name", _ADMIN, _resp("204", "revoked")),
            },
            "/api/v1/hooks/git/{stack_id}": {
                "parameters": stack_id,
                "post": _op(
                    "Git push webhook (X-Hub-Signature-256)",
                    None,
                    _resp("200", "{ok, changed, version}", _OBJ),
                    errors=("401",),
                ),
            },
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
            **_changes_paths(),
            **_metrics_paths(),
        },
    }


def _metrics_paths() -> dict[str, Any]:
    from controlplane.openapi_metrics import paths  # it builds on the helpers above

    return paths()


def _changes_paths() -> dict[str, Any]:
    from controlplane.openapi_changes import paths  # it builds on the helpers above

    return paths()

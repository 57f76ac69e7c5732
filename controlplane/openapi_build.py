"""Builders every part of the OpenAPI document uses (`openapi_*.py`), so each path stays
a few lines of data, and the shared components: security schemes and schemas."""

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


def _path(name: str, kind: str = "string") -> dict[str, Any]:
    """A path parameter (every one is required)."""
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}}


_SID = _path("stack_id")
_STACK_ID = [_SID]


_SERVICE_SCHEMA: dict[str, Any] = {
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
}
_STACK_SCHEMA: dict[str, Any] = {
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
}


def components() -> dict[str, Any]:
    return {
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
            "Service": _SERVICE_SCHEMA,
            "Stack": _STACK_SCHEMA,
        },
    }

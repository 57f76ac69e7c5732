"""OpenAPI paths of install tokens, instances' credentials and admin tokens (merged into `openapi.document`); docs/api.md describes them
in prose."""

from typing import Any

from controlplane.openapi_build import _ADMIN, _OBJ, _STACK_ID, _op, _path, _resp


def paths() -> dict[str, Any]:
    return {
        "/api/v1/stacks/{stack_id}/install-tokens": {
            "parameters": _STACK_ID,
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
                *_STACK_ID,
                _path("token_id"),
            ],
            "delete": _op("Revoke an install token", _ADMIN, _resp("204", "revoked")),
        },
        "/api/v1/instances/{instance_id}": {
            "parameters": [_path("instance_id")],
            "delete": _op("Revoke an instance's credential", _ADMIN, _resp("204", "revoked")),
        },
        "/api/v1/tokens": {
            "get": _op("List admin tokens", _ADMIN, _resp("200", "{tokens: [...]}", _OBJ))
        },
        "/api/v1/tokens/{token_id}": {
            "parameters": [_path("token_id")],
            "delete": _op("Revoke admin tokens by id or name", _ADMIN, _resp("204", "revoked")),
        },
    }

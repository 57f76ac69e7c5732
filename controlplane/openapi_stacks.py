"""OpenAPI paths of stacks, their versions and rollback, and the git push webhook (merged into `openapi.document`); docs/api.md describes them
in prose."""

from typing import Any

from controlplane.openapi_build import _ADMIN, _OBJ, _STACK, _STACK_ID, _op, _path, _resp


def paths() -> dict[str, Any]:
    return {**_stacks(), **_history()}


def _stacks() -> dict[str, Any]:
    return {
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
            "parameters": _STACK_ID,
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
            "parameters": _STACK_ID,
            "post": _op(
                "Re-resolve git refs", _ADMIN, _resp("200", "the stack plus changed", _STACK)
            ),
        },
        "/api/v1/stacks/{stack_id}/desired-state": {
            "parameters": _STACK_ID,
            "get": _op(
                "The current desired-state document (ETag)",
                _ADMIN,
                _resp("200", "document", _OBJ),
            ),
        },
    }


def _history() -> dict[str, Any]:
    """Versions, rollback and the webhook that makes new ones."""
    return {
        "/api/v1/stacks/{stack_id}/versions": {
            "parameters": _STACK_ID,
            "get": _op(
                "List versions, newest first",
                _ADMIN,
                _resp("200", "{versions: [{version, hash, created_at, reason}]}", _OBJ),
            ),
        },
        "/api/v1/stacks/{stack_id}/versions/{version}": {
            "parameters": [
                *_STACK_ID,
                _path("version", "integer"),
            ],
            "get": _op("One version's document", _ADMIN, _resp("200", "document", _OBJ)),
        },
        "/api/v1/stacks/{stack_id}/rollback": {
            "parameters": _STACK_ID,
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
        "/api/v1/stacks/{stack_id}/webhook": {
            "parameters": _STACK_ID,
            "get": _op("Webhook URL and secret", _ADMIN, _resp("200", "{url, secret}", _OBJ)),
        },
        "/api/v1/hooks/git/{stack_id}": {
            "parameters": _STACK_ID,
            "post": _op(
                "Git push webhook (X-Hub-Signature-256)",
                None,
                _resp("200", "{ok, changed, version}", _OBJ),
                errors=("401",),
            ),
        },
    }

"""The OpenAPI 3.1 document of the HTTP API, served at /api/v1/openapi.json.

Written by hand (the API is small), one module per resource, each a table of paths built
with `openapi_build`'s helpers: `openapi_stacks` (stacks, versions, rollback, webhook),
`openapi_access` (install tokens, instances, admin tokens), `openapi_status` (instances'
status, agent upgrades, events, version), `openapi_agent` (the agent API),
`openapi_changes` (audit, diffs, preview, notifications) and `openapi_metrics`.
docs/api.md is the prose companion.
"""

from typing import Any

from controlplane import (
    openapi_access,
    openapi_agent,
    openapi_changes,
    openapi_metrics,
    openapi_stacks,
    openapi_status,
)
from controlplane.openapi_build import components

PARTS = (openapi_stacks, openapi_access, openapi_status, openapi_agent, openapi_changes,
         openapi_metrics)  # fmt: skip


def document(server_url: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for part in PARTS:
        paths.update(part.paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "Berth control plane", "version": "1"},
        "servers": [{"url": server_url}],
        "components": components(),
        "paths": paths,
    }

"""OpenAPI paths of the metrics endpoints (merged into `openapi.document`);
docs/api.md and docs/metrics.md describe them in prose."""

from typing import Any

from controlplane.openapi_build import _ADMIN, _AGENT, _OBJ, _SID, _op, _q, _resp


def paths() -> dict[str, Any]:
    text, number = {"type": "string"}, {"type": "number"}
    return {
        "/api/v1/stacks/{stack_id}/metrics": {
            "parameters": [_SID],
            "get": _op(
                "Metric series of a service (or, without service, of the servers)",
                _ADMIN,
                _resp(
                    "200", "{stack, service, instance, from, to, step, resolution, points}", _OBJ
                ),
                params=[
                    _q("service", text, "service name; absent or empty: the servers' figures"),
                    _q(
                        "instance",
                        text,
                        "one instance (server); absent: the stack's servers summed",
                    ),
                    _q("from", number, "unix seconds (default: an hour before `to`)"),
                    _q("to", number, "unix seconds (default: now)"),
                    _q("step", {"type": "integer"}, "seconds per point (default: ~120 points)"),
                ],
            ),  # fmt: skip
        },
        "/api/v1/agent/metrics": {
            "post": _op(
                'A batch of metric points (one per service and interval, "" for the server)',
                _AGENT,
                _resp("200", "{stored, refused?: [services]}", _OBJ),
                body={"type": "object", "required": ["points"]},
                errors=("400", "401", "422"),
            )
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition: fleet and control-plane metrics",
                "security": [{"admin": []}],
                "responses": {
                    "200": {
                        "description": "text/plain; version=0.0.4",
                        "content": {"text/plain": {"schema": text}},
                    },
                    "401": {"description": "no scrape token or admin token"},
                },
            }  # fmt: skip
        },
    }

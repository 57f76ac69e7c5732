"""The Quart application: blueprints by audience, one error mapping, lifecycle hooks.

`create_app(settings)` builds an app whose database engine and long-poll watcher start
with the server (`before_serving`) and stop with it, so the same app object works under
Hypercorn and under Quart's test client.
"""

import logging

from quart import Quart, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from controlplane import (
    api_agent,
    api_changes,
    api_hooks,
    api_notify,
    api_user,
    audit,
    dashboard,
    public,
)
from controlplane.context import AppContext
from controlplane.db import Database
from controlplane.dburl import parse_db_url
from controlplane.errors import ApiError, crash_body, rendered
from controlplane.metrics import api as metrics_api
from controlplane.settings import MAX_BODY_BYTES, ServerSettings

log = logging.getLogger("controlplane")


def create_app(settings: ServerSettings) -> Quart:
    app = Quart(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    db = Database(parse_db_url(settings.db_url))
    ctx = AppContext.create(settings, db)
    app.extensions["berth"] = ctx

    audit.install_request_ids(app)
    app.register_blueprint(api_user.blueprint(ctx), url_prefix="/api/v1")
    app.register_blueprint(api_changes.blueprint(ctx), url_prefix="/api/v1")
    app.register_blueprint(api_notify.blueprint(ctx), url_prefix="/api/v1/notifications")
    app.register_blueprint(api_agent.blueprint(ctx), url_prefix="/api/v1/agent")
    app.register_blueprint(api_hooks.blueprint(ctx), url_prefix="/api/v1/hooks")
    app.register_blueprint(metrics_api.blueprint(ctx), url_prefix="/api/v1")
    app.register_blueprint(metrics_api.scrape_blueprint(ctx))
    app.register_blueprint(public.blueprint(ctx))
    app.register_blueprint(dashboard.blueprint(ctx))

    @app.before_serving
    async def _start() -> None:
        await ctx.start()

    @app.after_serving
    async def _stop() -> None:
        await ctx.stop()
        await db.close()

    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _crash)
    return app


async def _api_error(exc: ApiError) -> Response:
    status, body, headers = rendered(exc)
    return Response(body, status=status, headers=dict(headers))


async def _http_error(exc: HTTPException) -> Response | tuple[Response, int]:
    if not request.path.startswith("/api/"):
        return exc.get_response()  # type: ignore[return-value]
    code = (exc.name or "error").lower().replace(" ", "_")
    detail = exc.description or exc.name or "error"
    if exc.code == 404:
        detail = f"no such endpoint {request.method} {request.path}; see /api/v1/openapi.json"
    elif exc.code == 405:
        detail = f"{request.method} is not allowed on {request.path}"
    elif exc.code == 413:
        detail = f"request body larger than {MAX_BODY_BYTES} bytes"
    return jsonify({"error": code, "detail": detail}), exc.code or 500


async def _crash(exc: Exception) -> tuple[Response, int]:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return jsonify(crash_body(exc)), 500

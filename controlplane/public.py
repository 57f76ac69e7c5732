"""Unauthenticated endpoints: the OpenAPI document, a health check and the installer."""

from importlib import resources
from typing import Any

from quart import Blueprint, Response, request

from controlplane import openapi
from controlplane.context import AppContext
from controlplane.errors import NotFound


def blueprint(ctx: AppContext) -> Blueprint:
    bp = Blueprint("public", __name__)

    @bp.get("/api/v1/openapi.json")
    async def openapi_json() -> dict[str, Any]:
        return openapi.document(ctx.settings.public_url or request.host_url.rstrip("/"))

    @bp.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @bp.get("/install.sh")
    async def install_sh() -> Response:
        script = resources.files("installer").joinpath("install.sh")
        if not script.is_file():
            raise NotFound("this control plane has no installer bundled (installer/install.sh)")
        return Response(script.read_text(), content_type="text/x-shellscript; charset=utf-8")

    return bp

"""Unauthenticated endpoints: the OpenAPI document, a health check, the installer and the
package it installs.

* `/install.sh` is `installer/install.sh` with this control plane's public URL and the
  SHA-256 of every file of the wheelhouse filled in, so `curl -fsSL <cp>/install.sh | sudo
  sh -s -- --token T` needs nothing else and installs only files that match; served with
  `Cache-Control: no-store`. Without `--public-url` (or `--wheelhouse`) it is refused: a
  URL taken from the request's Host header is whatever the client claims.
  `/uninstall.sh` is served as it is.
* `/dist/` serves the wheelhouse (`--wheelhouse DIR`, filled by `berth installer
  wheelhouse DIR`): an HTML page of links that `pip install --no-index --find-links
  <cp>/dist/` reads, and the files themselves. Only plain file names that exist in that
  one directory are served: no subdirectories, no dot files, no path tricks.
* `/api/v1/version`: the control plane's own Berth version and the agent version its
  wheelhouse serves (read from the Berth wheel's name), which agents are compared with.
"""

import asyncio
import hashlib
import html
import re
from importlib import resources
from pathlib import Path
from typing import Any

from quart import Blueprint, Response, request, send_file

from agent import version as versions
from controlplane import openapi
from controlplane.context import AppContext
from controlplane.errors import NotFound
from controlplane.routes import Routes

URL_PLACEHOLDER = "@BERTH_CONTROL_PLANE@"
SHA256_PLACEHOLDER = "@BERTH_DIST_SHA256@"
_DIST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_DIST_TYPES = {".whl": "application/zip", ".gz": "application/gzip"}


def _script(name: str) -> str:
    script = resources.files("installer").joinpath(name)
    if not script.is_file():
        raise NotFound(f"this control plane has no installer bundled (installer/{name})")
    return script.read_text()


def dist_files(wheelhouse: Path) -> list[str]:
    """The servable file names of the wheelhouse, sorted."""
    try:
        return sorted(
            p.name for p in wheelhouse.iterdir() if p.is_file() and _DIST_NAME.fullmatch(p.name)
        )
    except FileNotFoundError:
        return []


_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 hex


def dist_manifest(wheelhouse: Path) -> str:
    """``<sha256>  <name>`` lines (sha256sum's format) for every servable file; a file's
    digest is computed once per (size, mtime)."""
    lines = []
    for name in dist_files(wheelhouse):
        path = wheelhouse / name
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in _digests:
            with path.open("rb") as f:
                _digests[key] = hashlib.file_digest(f, "sha256").hexdigest()
        lines.append(f"{_digests[key]}  {name}")
    return "\n".join(lines)


def dist_index(names: list[str]) -> str:
    links = "\n".join(f'<a href="{html.escape(n)}">{html.escape(n)}</a><br>' for n in names)
    return f"<!doctype html>\n<html><head><title>Berth packages</title></head><body>\n{links}\n</body></html>\n"


routes = Routes()


def blueprint(ctx: AppContext) -> Blueprint:
    bp = Blueprint("public", __name__)
    routes.bind(bp, ctx)
    return bp


def wheelhouse(ctx: AppContext) -> Path:
    where = ctx.settings.wheelhouse
    if not where:
        raise NotFound(
            "this control plane serves no packages: start it with --wheelhouse DIR "
            "(fill DIR with `berth installer wheelhouse DIR`)"
        )
    return Path(where)


@routes.get("/api/v1/openapi.json")
async def openapi_json(ctx: AppContext) -> dict[str, Any]:
    return openapi.document(ctx.settings.public_url or request.host_url.rstrip("/"))


@routes.get("/api/v1/version")
async def version_json(ctx: AppContext) -> dict[str, Any]:
    # what this control plane runs, and the agent version its wheelhouse serves
    return {"controlplane": versions.installed(), "agent": ctx.rollouts.wheelhouse.version()}


@routes.get("/healthz")
async def healthz(ctx: AppContext) -> dict[str, Any]:
    return {"ok": True}


@routes.get("/install.sh")
async def install_sh(ctx: AppContext) -> Response:
    if not ctx.settings.public_url:
        raise NotFound(
            "install.sh is served only by a control plane started with --public-url URL: "
            "the script embeds that URL, and one taken from this request's Host header "
            "could send servers anywhere"
        )
    manifest = await asyncio.to_thread(dist_manifest, wheelhouse(ctx))
    script = (
        _script("install.sh")
        .replace(URL_PLACEHOLDER, ctx.settings.public_url.rstrip("/"))
        .replace(SHA256_PLACEHOLDER, manifest)
    )
    return Response(
        script,
        content_type="text/x-shellscript; charset=utf-8",
        headers={"Cache-Control": "no-store"},
    )


@routes.get("/uninstall.sh")
async def uninstall_sh(ctx: AppContext) -> Response:
    return Response(
        _script("uninstall.sh"),
        content_type="text/x-shellscript; charset=utf-8",
        headers={"Cache-Control": "no-store"},
    )


@routes.get("/dist/")
async def dist_listing(ctx: AppContext) -> Response:
    return Response(
        dist_index(dist_files(wheelhouse(ctx))), content_type="text/html; charset=utf-8"
    )


@routes.get("/dist/<name>")
async def dist_file(ctx: AppContext, name: str) -> Response:
    root = wheelhouse(ctx)
    if not _DIST_NAME.fullmatch(name) or name not in dist_files(root):
        raise NotFound(f"no package {name!r} here; the list is at /dist/")
    kind = _DIST_TYPES.get(Path(name).suffix, "application/octet-stream")
    return await send_file(root / name, mimetype=kind, as_attachment=False)

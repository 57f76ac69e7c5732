"""The OpenAPI document is served without a token and covers every API route."""

import re

import requests

from controlplane.app import create_app
from controlplane.settings import ServerSettings


def test_openapi_lists_every_route(server_url: str) -> None:
    resp = requests.get(f"{server_url}/api/v1/openapi.json", timeout=30)
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.") and doc["servers"][0]["url"] == server_url
    app = create_app(ServerSettings(db_url="sqlite:////nonexistent/never-opened.db"))
    documented = {
        (path, method)
        for path, ops in doc["paths"].items()
        for method in ops
        if method != "parameters"
    }
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule.endswith("openapi.json"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, f"{method} {path} is not in openapi.json"


def test_health_and_installer(server_url: str) -> None:
    assert requests.get(f"{server_url}/healthz", timeout=30).json() == {"ok": True}
    resp = requests.get(f"{server_url}/install.sh", timeout=30)
    # this server has no --public-url: install.sh is refused, not built from the Host header
    assert resp.status_code == 404 and "--public-url" in resp.json()["detail"]

"""Example `web` service: a page showing what it fetched from `api` through SERVICE_API_URL
(http://api.svc.internal: the agent's DNS and internal proxy, no port in sight)."""

import html
import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BUILD = json.loads((Path(__file__).parent.parent / "build-info.json").read_text())


def fetch_api() -> str:
    url = os.environ.get("SERVICE_API_URL", "") + "/hello"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return json.loads(resp.read())["message"]
    except (OSError, ValueError, KeyError) as exc:
        return f"could not reach {url}: {exc}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, "text/plain", b"ok")
            return
        message = html.escape(fetch_api())
        page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Berth example</title></head>
<body><h1>Berth example stack</h1>
<p>web built at {html.escape(BUILD["built_at"])}</p>
<p>api says: <strong id="api-message">{message}</strong></p>
<p>(fetched from {html.escape(os.environ.get("SERVICE_API_URL", "?"))})</p></body></html>"""
        self._send(200, "text/html; charset=utf-8", page.encode())

    def _send(self, status: int, ctype: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        print("web:", fmt % args, flush=True)


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print(f"web listening on 127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()

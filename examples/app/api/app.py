"""Example `api` service: a tiny JSON API (stdlib only, no network needed to build or run).

Reached at /api through the external proxy (prefix kept) and at http://api.svc.internal/
from other services, so it answers with or without the /api prefix.
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

GREETING = "Hello from the api service"
BUILD = json.loads((Path(__file__).parent.parent / "build-info.json").read_text())


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = urlsplit(self.path).path.removeprefix("/api") or "/"  # any query is ignored
        if path == "/healthz":
            self._send(200, {"ok": True})
        elif path in ("/", "/hello"):
            self._send(200, {"message": GREETING, "build": BUILD})
        else:
            self._send(404, {"error": "not found", "path": self.path})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        print("api:", fmt % args, flush=True)


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print(f"api listening on 127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()

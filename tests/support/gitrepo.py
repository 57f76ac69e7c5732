"""Real git repositories on disk for tests."""

import os
import subprocess
from pathlib import Path

ENV = {
    "GIT_AUTHOR_NAME": "Berth test",
    "GIT_AUTHOR_EMAIL": "test@berth.invalid",
    "GIT_COMMITTER_NAME": "Berth test",
    "GIT_COMMITTER_EMAIL": "test@berth.invalid",
}


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    return path


def commit_files(repo: Path, files: dict[str, str], message: str = "change") -> str:
    for name, content in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


# A tiny HTTP service: answers its VERSION on every path, /healthz 200 unless UNHEALTHY.
APP = """
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = open("version.txt").read().strip()


class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = (VERSION + " " + self.path).encode()
        status = 503 if self.path == "/healthz" and os.path.exists("unhealthy") else 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


# APP, but ".../slow?S" answers after S seconds (a request still in flight at a swap)
SLOW_APP = APP.replace(
    "    def do_GET(self):\n",
    "    def do_GET(self):\n"
    "        if 'slow?' in self.path:\n"
    "            import time\n"
    "            time.sleep(float(self.path.rsplit('?', 1)[1]))\n",
)

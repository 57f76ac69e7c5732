"""Small network tools run as scripts inside the test namespaces (argv only).

netprobe.py listen PORT...          accept on 0.0.0.0 and :: until killed
netprobe.py scan HOST PORT...       connect scan; prints the open ports as JSON
netprobe.py http-once PORT          answer one HTTP request, then exit: a control
                                    plane that disappears right after the pre-check
netprobe.py ready PORT STATUS       STAND-IN for cloudflared's metrics server: serves
                                    /ready with STATUS (cloudflared cannot be
                                    installed here; this is not cloudflared)
"""

import http.server
import json
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

SCAN_TIMEOUT_S = 0.5  # a veth answers in well under a millisecond


def listen(ports: list[int]) -> None:
    import selectors

    sel = selectors.DefaultSelector()
    for port in ports:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # v4 and v6 on one socket
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        s.listen(64)
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            conn, _addr = key.fileobj.accept()  # type: ignore[union-attr]
            conn.close()


def _open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=SCAN_TIMEOUT_S):
            return True
    except OSError:
        return False


def scan(host: str, ports: list[int]) -> None:
    with ThreadPoolExecutor(max_workers=len(ports)) as pool:
        found = [
            p for p, ok in zip(ports, pool.map(lambda p: _open(host, p), ports), strict=True) if ok
        ]
    print(json.dumps(found))


def serve(port: int, status: int, once: bool) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("0.0.0.0", port), Handler)
    print("ready", flush=True)
    if once:
        server.handle_request()
        server.server_close()
    else:
        server.serve_forever()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "listen":
        listen([int(p) for p in args])
    elif cmd == "scan":
        scan(args[0], [int(p) for p in args[1:]])
    elif cmd == "http-once":
        serve(int(args[0]), 200, once=True)
    elif cmd == "ready":
        serve(int(args[0]), int(args[1]), once=False)
    else:
        sys.exit(f"unknown command {cmd!r}")

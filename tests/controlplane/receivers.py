"""Real receivers for notification tests: an HTTP server for webhooks (checks the HMAC
signature when given the secret) and an SMTP server (`aiosmtpd`) that requires STARTTLS
and a login, with a self-signed certificate made by `openssl` for 127.0.0.1."""

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from controlplane.api_hooks import verify_signature
from tests.support.ports import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    signed: bool | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """`answers`: status codes for the next requests (then 200); `hold`: while set,
    requests are recorded and then left unanswered until it is cleared."""

    secret: str | None = None
    answers: list[int] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    got: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                rec = Received(self.path, dict(self.headers), body, time.time())
                if receiver.secret is not None:
                    rec.signed = verify_signature(
                        receiver.secret, body, self.headers.get("X-Berth-Signature-256")
                    )
                receiver.got.append(rec)
                if receiver.hold.is_set():
                    receiver.release.wait(60)
                    return  # never answered: the sender dies or times out
                code = receiver.answers.pop(0) if receiver.answers else 200
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(
        self, what: Callable[[list[Received]], bool], timeout_s: float = 30
    ) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if what(list(self.got)):
                return list(self.got)
            time.sleep(0.05)
        raise AssertionError(f"receiver never saw the expected deliveries: {self.got}")

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def self_signed_cert(where: Path) -> tuple[Path, Path]:
    cert, key = where / "smtp-cert.pem", where / "smtp-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


class SmtpReceiver:
    """aiosmtpd on a free loopback port: STARTTLS required, login `user`/`password`."""

    def __init__(self, workdir: Path, user: str, password: str) -> None:
        import ssl

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.cert, key = self_signed_cert(workdir)
        self.messages: list[dict[str, Any]] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                receiver.messages.append({
                    "from": envelope.mail_from, "to": envelope.rcpt_tos,
                    "data": envelope.content.decode("utf-8", "replace"),
                    "tls": session.ssl is not None, "login": session.auth_data,
                })  # fmt: skip
                return "250 OK"

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                         data: Any) -> AuthResult:  # fmt: skip
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
                user.encode(), password.encode())  # fmt: skip
            return AuthResult(success=ok, auth_data=data.login if ok else None)

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.port = free_port()
        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=self.port, tls_context=context,
            require_starttls=True, authenticator=authenticate, auth_require_tls=True,
        )  # fmt: skip
        self.controller.start()

    def wait_for(self, count: int, timeout_s: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} emails, got {self.messages}")

    def close(self) -> None:
        self.controller.stop()

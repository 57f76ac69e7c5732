"""A backend that records the exact bytes it receives and the requests a strict parser
(h11) reads from them, for the request-smuggling tests.

It runs in the test process on its own threads (one per connection) and answers every
request with a body that names it (`<method> <target>`), so a client that gets another
client's answer, or a request the backend never should have seen, is visible. Special
targets make it answer with response-side framing traps:

    /r/204-length     204 with `Content-Length: 5` (and no body, as the RFC demands)
    /r/304-length     304 with `Content-Length: 5` and no body
    /r/204-body       204 with `Content-Length: 5` and 5 bytes it must not have
    /r/204-chunked    204 with `Transfer-Encoding: chunked` and a chunked body
    /r/304-body       304 with `Content-Length: 5` and 5 bytes it must not have
    /r/gzip           `Transfer-Encoding: gzip` (chunked not last): body until close
    /r/head-length    any method: `Content-Length: 5` + 5 bytes, not sent for HEAD
    /r/close          body delimited by closing the connection
    /r/conn-cl        `Connection: content-length` with a Content-Length body
    /r/103            `103 Early Hints` before the 200
    /ws/refuse        an `Upgrade` request answered `200` with a body (upgrade refused)
    /ws/accept        `101`, then echoes whatever arrives, raw
"""

import socket
import threading
from dataclasses import dataclass, field

import h11

from tests.support.ports import free_port

NO_CONTENT_WITH_BODY = {
    b"/r/204-body": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n12345",
    b"/r/204-chunked": b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\n12345\r\n0\r\n\r\n",
    b"/r/304-body": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n12345",
}


@dataclass
class Seen:
    """One request the backend parsed: its connection, line, headers and body."""

    conn: int
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    complete: bool = False
    raw: bytes = b""  # the exact bytes of this request on its connection

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name.lower()]


@dataclass
class ConnLog:
    raw: bytearray = field(default_factory=bytearray)
    error: str | None = None  # what h11 refused, if it refused anything
    cut = False  # the proxy closed the connection in the middle of a request


class RecordingBackend:
    def __init__(self) -> None:
        self.port = free_port()
        self.lock = threading.Lock()
        self.requests: list[Seen] = []
        self.conns: list[ConnLog] = []
        self.sock = socket.create_server(("127.0.0.1", self.port), backlog=256)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            for log in self.conns:
                log.error = None

    def errors(self) -> list[str]:
        with self.lock:
            return [c.error for c in self.conns if c.error]

    def complete(self) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.complete]

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                log = ConnLog()
                self.conns.append(log)
                number = len(self.conns)
            threading.Thread(target=self._serve, args=(conn, number, log), daemon=True).start()

    def _serve(self, sock: socket.socket, number: int, log: ConnLog) -> None:
        parser = h11.Connection(h11.SERVER)
        current: Seen | None = None
        received = 0
        start = 0  # where the current request began in the connection's bytes
        with sock:
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                with self.lock:
                    log.raw += data
                received += len(data)
                parser.receive_data(data)
                while True:
                    try:
                        event = parser.next_event()
                    except h11.RemoteProtocolError as exc:
                        with self.lock:
                            if data == b"" and current is not None:
                                log.cut = True  # closed mid-request: it never completed
                            else:
                                log.error = str(exc)
                        return
                    if event is h11.NEED_DATA or event is h11.PAUSED:
                        break
                    if isinstance(event, h11.ConnectionClosed):
                        return
                    if isinstance(event, h11.Request):
                        current = Seen(number, event.method, event.target, list(event.headers))
                        with self.lock:
                            self.requests.append(current)
                        if parser.client_is_waiting_for_100_continue:
                            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    elif isinstance(event, h11.Data) and current is not None:
                        current.body += event.data
                    elif isinstance(event, h11.EndOfMessage) and current is not None:
                        end = received - len(parser.trailing_data[0])
                        with self.lock:
                            current.complete = True
                            current.raw = bytes(log.raw[start:end])
                        start = end
                        if not self._respond(sock, parser, current):
                            return
                        current = None
                if data == b"":
                    return

    def _respond(self, sock: socket.socket, parser: h11.Connection, req: Seen) -> bool:
        """Answer `req`; False when the connection ends (close-delimited, tunnel over)."""
        path = req.target.split(b"?")[0]
        named = req.method + b" " + req.target
        if path == b"/ws/accept" and req.header(b"upgrade"):
            sock.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                b"Upgrade: " + req.header(b"upgrade")[0] + b"\r\n\r\n"
            )
            while data := sock.recv(65536):
                sock.sendall(data)
            return False
        if path == b"/r/close":
            sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + named)
            return False
        if path == b"/r/gzip":  # RFC 9112 6.3 (4): delimited by the close, not chunked
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n" + named)
            return False
        if path in NO_CONTENT_WITH_BODY:  # a broken backend: the bytes must not reach a client
            sock.sendall(NO_CONTENT_WITH_BODY[path])
            return False
        extra = b""
        body = named
        status = b"200 OK"
        if path == b"/r/204-length":
            status, extra, body = b"204 No Content", b"Content-Length: 5\r\n", b""
        elif path == b"/r/304-length":
            status, extra, body = b"304 Not Modified", b"Content-Length: 5\r\n", b""
        elif path == b"/r/head-length":
            extra, body = b"Content-Length: 5\r\n", b"" if req.method == b"HEAD" else b"12345"
        elif path == b"/r/conn-cl":
            extra = b"Connection: content-length\r\nContent-Length: %d\r\n" % len(body)
        elif path == b"/r/103":
            sock.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n")
        if not extra:
            extra = b"Content-Length: %d\r\n" % (0 if req.method == b"HEAD" else len(body))
            if req.method == b"HEAD":
                extra = b"Content-Length: %d\r\n" % len(named)
                body = b""
        sock.sendall(
            b"HTTP/1.1 " + status + b"\r\nX-Req: " + named + b"\r\n" + extra + b"\r\n" + body
        )
        # keep h11's state machine in step with what was written by hand
        parser.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
        parser.send(h11.EndOfMessage())
        if parser.our_state is h11.MUST_CLOSE or parser.their_state is h11.MUST_CLOSE:
            return False
        try:
            parser.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        return True

"""Reading HTTP/1.1 responses off a raw socket in tests, by the RFC 9112 framing rules.

Written independently of the proxy's parser: a response to HEAD, a 1xx, 204 or 304 has
no body; otherwise chunked, then Content-Length, then until the connection closes.
"""

import socket
from dataclasses import dataclass


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _until(self, marker: bytes) -> bytes | None:
        while marker not in self.buf:
            if not self._fill():
                return None
        part, _, self.buf = self.buf.partition(marker)
        return part

    def _exactly(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill():
                return None
        part, self.buf = self.buf[:n], self.buf[n:]
        return part

    def response(self, method: bytes = b"GET", interim: bool = False) -> Response | None:
        """The next final response (1xx skipped unless `interim`); None at EOF."""
        while True:
            head = self._until(b"\r\n\r\n")
            if head is None:
                return None
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ")[1])
            headers = [(n.strip(), v.strip()) for n, _, v in (x.partition(b":") for x in lines[1:])]
            resp = Response(status, headers, b"")
            if 100 <= status < 200:
                if interim or status == 101:
                    return resp
                continue
            if method == b"HEAD" or status in (204, 304):
                return resp
            te = b",".join(resp.header(b"transfer-encoding")).lower()
            if te and te.rsplit(b",", 1)[-1].strip() == b"chunked":
                body = b""
                while True:
                    size_line = self._until(b"\r\n")
                    if size_line is None:
                        return None
                    size = int(size_line.split(b";")[0], 16)
                    if size == 0:
                        if self._until(b"\r\n\r\n" if self.buf[:2] != b"\r\n" else b"\r\n") is None:
                            return None
                        break
                    chunk = self._exactly(size + 2)
                    if chunk is None:
                        return None
                    body += chunk[:-2]
                resp.body = body
            elif resp.header(b"content-length") and not te:
                body_or_none = self._exactly(int(resp.header(b"content-length")[0]))
                if body_or_none is None:
                    return None
                resp.body = body_or_none
            else:
                while self._fill():
                    pass
                resp.body, self.buf = self.buf, b""
            return resp

    def closed(self) -> bool:
        """True when the peer closes with nothing more to read."""
        while self._fill():
            pass
        return self.eof and not self.buf

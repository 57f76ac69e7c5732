"""A real HTTP (or WebSocket) backend for the proxy tests, run as its own process.

    python backend.py http PORT NAME     plain HTTP/1.1 with keep-alive
    python backend.py ws PORT            websockets echo server

HTTP endpoints (any method):
    /upload        reads the whole body, answers {"bytes": n, "sha256": ...}
    /sse           chunked, five events 0.3 s apart
    /download?n=N  N bytes (Content-Length), written with flow control
    /close         body delimited by closing the connection (no length, no chunks)
    /partial       head promising 1 MB, 10 bytes, then nothing (the test kills us)
    /hang          never answers (the test kills us)
    /early         answers 200 before reading a body, then reads nothing
Requests with `Expect: 100-continue` get a `100 Continue` first.
    anything else  {"name", "method", "path", "headers"} as JSON
The process prints "ready" on stdout once it listens.
"""

import asyncio
import hashlib
import json
import sys

import httptools


class Handler(asyncio.Protocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.count = 0
        self.digest = hashlib.sha256()
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.count = 0
        self.digest = hashlib.sha256()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if any(n.lower() == b"expect" and v.lower() == b"100-continue" for n, v in self.headers):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
        if self.url.startswith(b"/early"):
            self.respond(b'{"early":true}')
            self.transport.pause_reading()  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        self.count += len(body)
        if self.url.startswith(b"/upload"):
            self.digest.update(body)

    def on_message_complete(self) -> None:
        path = self.url.split(b"?")[0]
        if path == b"/early":
            return
        if path == b"/upload":
            body = json.dumps({"bytes": self.count, "sha256": self.digest.hexdigest()}).encode()
            self.respond(body)
        elif path == b"/sse":
            asyncio.ensure_future(self.sse())
        elif path == b"/download":
            n = int(self.url.split(b"n=")[1])
            asyncio.ensure_future(self.download(n))
        elif path == b"/close":
            self.transport.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close")  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]
        elif path == b"/partial":
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n0123456789"
            )
        elif path == b"/hang":
            pass
        else:
            info = {
                "name": self.name,
                "method": self.parser.get_method().decode(),
                "path": self.url.decode(),
                "headers": [[n.decode(), v.decode()] for n, v in self.headers],
                "body_bytes": self.count,
                "conn": self.transport.get_extra_info("peername")[1],  # type: ignore[union-attr]
            }
            self.respond(json.dumps(info).encode())

    def respond(self, body: bytes) -> None:
        self.transport.write(  # type: ignore[union-attr]
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Backend: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (self.name.encode(), len(body), body)
        )

    async def sse(self) -> None:
        t = self.transport
        assert t is not None
        t.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for i in range(5):
            event = b"data: event %d\n\n" % i
            t.write(b"%x\r\n%s\r\n" % (len(event), event))
            await asyncio.sleep(0.3)
        t.write(b"0\r\n\r\n")

    async def download(self, n: int) -> None:
        t = self.transport
        assert t is not None
        t.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
        block = b"x" * 65536
        while n > 0:
            await self.can_write.wait()
            piece = block[: min(n, len(block))]
            t.write(piece)
            n -= len(piece)


async def serve_http(port: int, name: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Handler(name), "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def serve_ws(port: int) -> None:
    from websockets.asyncio.server import serve

    async def echo(ws) -> None:  # type: ignore[no-untyped-def]
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", port, max_size=None) as server:
        print("ready", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "ws":
        asyncio.run(serve_ws(port))
    else:
        asyncio.run(serve_http(port, sys.argv[3] if len(sys.argv) > 3 else "backend"))

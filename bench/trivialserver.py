"""The reference server of bench/controlplane.py's change phase: the agent API reduced to
what the load client needs, with no work behind it, in one uvloop process.

nginx cannot hold long polls, so it cannot show how fast this machine and the load client
get a change to a whole fleet. This server can: it answers polls from one in-memory ETag
(304, or 200 with a small document), heartbeats and metric batches with 200, holds
`?wait=` polls while the agent's ETag is current, and on `PUT /change` sets a new ETag
and answers every held poll at once. Whatever the control plane's change phase takes
beyond this server's is the control plane's.

Run: `python bench/trivialserver.py PORT` (prints "ready" when listening).
"""

import asyncio
import sys
from typing import Any

DOCUMENT = b'{"version":1,"services":[{"name":"web"}]}'


class State:
    def __init__(self) -> None:
        self.version = 1
        self.held: set[Http] = set()

    @property
    def etag(self) -> bytes:
        return b'"v%d"' % self.version


class Http(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buf = b""
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.held.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].split(b"\r\n")
            length = 0
            etag = None
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"if-none-match":
                    etag = value.strip()
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            self.request(head[0].split(b" ")[:2], etag)

    def request(self, line: list[bytes], etag: bytes | None) -> None:
        method, target = line
        state = self.state
        if method == b"PUT":
            state.version += 1
            held, state.held = state.held, set()
            for proto in held:
                proto.document()
            self.reply(b"200 OK", b"", b"")
        elif method == b"POST":
            self.reply(b"200 OK", b"", b'{"ok":true}')
        elif etag != state.etag:
            self.document()
        elif b"?wait=" in target:
            state.held.add(self)
        else:
            self.reply(b"304 Not Modified", b"ETag: " + state.etag + b"\r\n", None)

    def document(self) -> None:
        self.reply(b"200 OK", b"ETag: " + self.state.etag + b"\r\n", DOCUMENT)

    def reply(self, status: bytes, headers: bytes, body: bytes | None) -> None:
        length = b"" if body is None else b"Content-Length: %d\r\n" % len(body)
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\n" + headers + length + b"\r\n" + (body or b"")
        )


async def main(port: int) -> None:
    state = State()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Http(state), "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1])))

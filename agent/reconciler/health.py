"""HTTP health probes against a service's direct localhost port (spec §13: never via the
proxy), with a hard timeout. A 2xx or 3xx status is healthy."""

import asyncio


async def probe(port: int, path: str, timeout_s: float) -> tuple[bool, str]:
    try:
        return await asyncio.wait_for(_probe(port, path), timeout_s)
    except TimeoutError:
        return False, f"timed out after {timeout_s:g} s"
    except OSError as exc:
        return False, exc.strerror or str(exc)


async def _probe(port: int, path: str) -> tuple[bool, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: berth-health\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
    parts = line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, "no HTTP response"
    status = int(parts[1])
    return 200 <= status < 400, f"HTTP {status}"


async def port_open(port: int, timeout_s: float = 1.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True

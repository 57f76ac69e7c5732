"""Helpers for the DNS tests: a bus publisher in a thread, a real responder process.

The responder runs as `berth agent dns` in a subprocess. When the tests run as root it
drops to `nobody` after binding, like in production, so its state and bus directories
are made reachable for that user (in production the unit's user and group do this).
"""

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import zmq.asyncio

from agent.bus.endpoints import BusEndpoints
from agent.bus.messages import Route, RouteTable
from agent.bus.publisher import Publisher
from tests.support.ports import free_port
from tests.support.procs import terminate


class ThreadPublisher:
    """An `agent.bus.publisher.Publisher` on its own event loop in a thread."""

    def __init__(self, run_dir: Path) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-bus", daemon=True)
        self._thread.start()
        self._ctx = zmq.asyncio.Context()
        self._pub = Publisher(BusEndpoints(run_dir), self._ctx)
        self._call(self._pub.start())
        for sock in run_dir.glob("*.sock"):  # the responder may run as nobody
            sock.chmod(0o777)
        self._seq = 0

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def publish(self, *services: str, suffix: str = "svc.internal") -> RouteTable:
        self._seq += 1
        table = RouteTable(
            version=(self._pub.epoch, self._seq),
            suffix=suffix,
            routes=tuple(Route(service=s, port=8000 + i) for i, s in enumerate(services)),
        )
        self._call(self._pub.publish(b"routes", table.to_json()))
        return table

    def close(self) -> None:
        self._call(self._pub.close())
        self._ctx.term()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


class Responder:
    """A `berth agent dns` subprocess on 127.0.0.1:<free port>."""

    def __init__(self, state_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.addr = "127.0.0.1"
        self.log = state_dir / "dns.log"
        self._log_file = open(self.log, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.cli",
                "agent",
                "dns",
                "--dns-bind",
                f"{self.addr}:{self.port}",
                "--state-dir",
                str(state_dir),
                "--dns-wiring",
                "none",
                *extra,
            ],  # fmt: skip
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[3],
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"responder exited:\n{self.log.read_text()}")
            if b"answering on" in self.log.read_bytes():
                return
            time.sleep(0.05)
        raise RuntimeError(f"responder not ready:\n{self.log.read_text()}")

    def query(self, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype)
        send = dns.query.tcp if tcp else dns.query.udp
        return send(q, self.addr, port=self.port, timeout=2)

    def wait_for(self, name: str, rcode: int, timeout: float = 10.0) -> dns.message.Message:
        """Poll until `name` answers with `rcode` (the bus delivers asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.query(name)
            if reply.rcode() == rcode or time.monotonic() > deadline:
                return reply
            time.sleep(0.05)

    def stop(self) -> int:
        status = terminate(self.proc, 10)
        self._log_file.close()
        return status

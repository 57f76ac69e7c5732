"""Real processes for the proxy tests: backends, the proxy itself, a bus publisher.

Everything runs on loopback with ports picked at run time. When the tests run as root
the proxy drops to an unprivileged user after binding, so its state directory is made
traversable and the bus sockets connectable for that user (as the installer does for
the agent's group).
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq
import zmq.asyncio

from agent.bus.endpoints import BusEndpoints
from agent.bus.messages import ROUTES_TOPIC, Route, RouteTable
from agent.bus.publisher import Publisher
from tests.support.ports import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
BACKEND = HERE / "backend.py"


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Backend:
    """`backend.py` as a child process."""

    def __init__(self, name: str = "backend", kind: str = "http") -> None:
        self.name = name
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(BACKEND), kind, str(self.port), name],
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.kill()
            raise RuntimeError(f"backend {name} did not start: {line!r}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


class BusPublisher:
    """The reconciler's side of the bus, on its own event loop thread."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ctx = zmq.asyncio.Context()
        self.publisher = Publisher(BusEndpoints(run_dir), self.ctx)
        self._call(self.publisher.start())
        for sock in run_dir.glob("*.sock"):
            os.chmod(sock, 0o666)  # the proxy may run as nobody after dropping root
        self.seq = 0

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def publish(self, routes: list[Route], external_bind: str | None = None) -> RouteTable:
        self.seq += 1
        table = RouteTable(
            version=(self.publisher.epoch, self.seq),
            routes=tuple(routes),
            external_bind=external_bind,
        )
        self._call(self.publisher.publish(ROUTES_TOPIC, table.to_json()))
        return table

    def close(self) -> None:
        self._call(self.publisher.close())
        self.ctx.term()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


_RUNNER = """
import argparse, json, sys
from agent.logs import setup_logging
from agent.proxy.config import ProxyConfig
from agent.proxy.main import main_external, main_internal
from agent.settings import add_arguments, from_args
kind, config, argv = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
parser = argparse.ArgumentParser()
add_arguments(parser)
setup_logging(kind)
main = main_external if kind == "proxy" else main_internal
sys.exit(main(from_args(parser.parse_args(argv)), ProxyConfig.from_mapping(config)))
"""


class ProxyProcess:
    """The proxy as a real subprocess: `berth agent proxy|internal-proxy ...`."""

    def __init__(
        self,
        state_dir: Path,
        kind: str = "proxy",
        config: dict[str, float] | None = None,
        bind: bool = True,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.kind = kind
        self.log = state_dir / f"{kind}-{self.port}.log"
        argv = ["--state-dir", str(state_dir)]
        if bind:
            flag = "--proxy-bind" if kind == "proxy" else "--internal-bind"
            argv += [flag, f"127.0.0.1:{self.port}"]
        if config is None:
            cmd = [str(Path(sys.executable).parent / "berth"), "agent", kind, *argv]
        else:
            cmd = [sys.executable, "-c", _RUNNER, kind, json.dumps(config), *argv]
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, stderr=self._log_file, cwd=REPO, env={**os.environ, **(env or {})}
        )
        if bind and wait:
            wait_port(self.port, proc=self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def peak_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def uid(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
        raise RuntimeError("no Uid")

    def terminate(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def make_state_dir() -> Path:
    """A state directory the proxy can still use after dropping to `nobody`."""
    path = Path(tempfile.mkdtemp(prefix="berth-proxy-test-"))
    os.chmod(path, 0o755)
    (path / "run").mkdir(mode=0o755)
    return path


def remove_state_dir(path: Path) -> None:
    # A second pass takes what a proxy that was still exiting wrote during the first
    # (its route cache, a log line): one pass alone left such directories in /tmp.
    for _ in range(2):
        shutil.rmtree(path, ignore_errors=True)

"""`berth controlplane serve` for one process: the Quart app, behind the agents' fast path,
on uvicorn (httptools + uvloop) when it is installed, else on Hypercorn.

Why two servers: per request, Hypercorn with its pure-Python h11 parser costs about twice
the CPU of uvicorn with httptools (bench/controlplane.py measures both paths' CPU per
request; docs/api.md "Scale" has the figures), and at fleet scale the control plane is
CPU-bound. Hypercorn stays as the fallback so the control plane runs wherever Quart does.

Both are driven the same way, so `serve` behaves the same on either: this module binds the
socket itself (`--bind HOST:PORT`, `unix:PATH`, or `fd://N` from `serve --workers N`),
handles SIGINT/SIGTERM on its own event loop (graceful stop, 2 s for requests in flight,
exit code 0), tells systemd READY and pings its watchdog from the serving loop, logs no
access lines, keeps idle agent connections 75 s, and trusts no X-Forwarded-* header.
"""

import asyncio
import contextlib
import logging
import logging.handlers
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from queue import SimpleQueue
from typing import Any

from controlplane import stalls
from controlplane.dburl import parse_db_url
from controlplane.settings import ServerSettings
from controlplane.workers import open_sockets, parse_bind

log = logging.getLogger("controlplane")

KEEP_ALIVE_S = 75  # agents reuse their connection between polls
GRACEFUL_S = 2
BACKLOG = 2048  # a restarted control plane is met by a whole fleet at once

Serve = Callable[[Any, socket.socket, asyncio.Event], Awaitable[bool]]


def listening_socket(bind: str) -> socket.socket:
    """The socket to serve: inherited (`fd://N`) or bound here; OSError/ValueError if not."""
    if bind.startswith("fd://"):
        return socket.socket(fileno=int(bind[5:]))
    [sock] = open_sockets(parse_bind(bind), 1)
    return sock


def server_name() -> str:
    """Which HTTP server `serve` will use: "uvicorn" or "hypercorn"."""
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        return "hypercorn"
    return "uvicorn"


def serve(settings: ServerSettings) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    from controlplane.agentfastpath import AgentFastPath
    from controlplane.app import create_app

    try:
        sock = listening_socket(settings.bind)
    except (OSError, ValueError) as exc:
        log.error("cannot serve on %s: %s", settings.bind, exc)
        return 1
    app = create_app(settings)
    ctx = app.extensions["berth"]
    ctx.tune_gc = True
    asgi = AgentFastPath(app, ctx) if settings.fast_path else app
    name = server_name()
    run_server: Serve = _uvicorn if name == "uvicorn" else _hypercorn

    async def run() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("serving on %s with %s (database %s)", settings.bind, name,
                 parse_db_url(settings.db_url).display())  # fmt: skip
        trace = stalls.from_environment()
        if trace is not None:
            trace.start()
        notify = asyncio.create_task(_notify_systemd(sock), name="sd-notify")
        release = asyncio.create_task(_release_long_polls(stop, ctx), name="release-long-polls")
        try:
            return await run_server(asgi, sock, stop)
        finally:
            for task in (notify, release):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if trace is not None:
                trace.stop()
            log.info("stopped")

    try:
        import uvloop

        runner: Callable[[Any], bool] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional at run time
        runner = asyncio.run
    listener = _log_from_a_thread()
    try:
        ok = runner(run())
    except OSError as exc:
        log.error("cannot serve on %s: %s", settings.bind, exc)
        return 1
    finally:
        sock.close()
        listener.stop()  # writes what is queued
    return 0 if ok else 1


def _log_from_a_thread() -> logging.handlers.QueueListener:
    """Log lines are formatted where they are logged but written by a thread: a write to
    a slow stderr (a pipe to journald under load) must not block the event loop."""
    root = logging.getLogger()
    queue: SimpleQueue[logging.LogRecord] = SimpleQueue()
    listener = logging.handlers.QueueListener(queue, *root.handlers, respect_handler_level=True)
    root.handlers = [logging.handlers.QueueHandler(queue)]
    listener.start()
    return listener


async def _release_long_polls(stop: asyncio.Event, ctx: Any) -> None:
    """On SIGTERM, answer every held long poll (304) before the graceful stop: otherwise
    the server waits `GRACEFUL_S` for them and then cancels each with a logged traceback,
    and the fleet's reconnection starts that much later."""
    await stop.wait()
    ctx.watcher.close()


async def _uvicorn(asgi: Any, sock: socket.socket, stop: asyncio.Event) -> bool:
    import uvicorn

    # uvicorn narrates its start at INFO; our own line says where we serve
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    config = uvicorn.Config(
        asgi, http="auto", lifespan="on", access_log=False, log_config=None,
        timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=GRACEFUL_S, backlog=BACKLOG,
        proxy_headers=False, server_header=False,
    )  # fmt: skip
    server = _uvicorn_server(config)
    watch = asyncio.create_task(_exit_on(stop, server), name="uvicorn-stop")
    try:
        await server.serve(sockets=[sock])
    finally:
        watch.cancel()
    return bool(server.started)


def _uvicorn_server(config: Any) -> Any:
    import uvicorn

    class QuietSignals(uvicorn.Server):
        """uvicorn's Server without its own signal handlers (ours set `should_exit`):
        uvicorn re-raises a captured SIGTERM after a graceful stop, which would end the
        process with the signal instead of exit code 0."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietSignals(config)


async def _exit_on(stop: asyncio.Event, server: Any) -> None:
    await stop.wait()
    server.should_exit = True


async def _hypercorn(asgi: Any, sock: socket.socket, stop: asyncio.Event) -> bool:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None  # one line per request costs more than the request itself
    config.errorlog = log
    config.graceful_timeout = float(GRACEFUL_S)
    config.keep_alive_timeout = float(KEEP_ALIVE_S)
    config.backlog = BACKLOG
    await hypercorn_serve(asgi, config, shutdown_trigger=stop.wait)
    return True


async def _notify_systemd(sock: socket.socket) -> None:
    """Under systemd (Type=notify): READY=1 once the socket accepts connections, then
    WATCHDOG=1 from this event loop, so a wedged loop gets the unit restarted."""
    from agent.notify import Notifier

    notifier = Notifier()
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    address = sock.getsockname()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
        address = (wildcard.get(address[0], address[0]), address[1])
    while True:
        try:
            if sock.family == socket.AF_UNIX:
                _, writer = await asyncio.open_unix_connection(address)
            else:
                _, writer = await asyncio.open_connection(*address[:2])
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.1)
    notifier.ready(f"serving on {address}")
    await notifier.watchdog_loop()

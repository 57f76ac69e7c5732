"""The fleet simulator of bench/controlplane.py, run in its own process.

One asyncio process (uvloop when installed). Each simulated agent, every `period_s` at a
random phase, sends `GET /api/v1/agent/desired-state` with its ETag in If-None-Match
(304 expected, or 200 with a new document) and then `POST /api/v1/agent/heartbeat` with a
one-service snapshot, over `connections` shared HTTP/1.1 keep-alive connections. With
`long_poll`, each agent also holds `GET /api/v1/agent/desired-state?wait=25` open on a
connection of its own, as the reconciler does (agent/reconciler/uplink.py,
LONG_POLL_S), which is how a new version reaches it in well under a poll interval.

The load is open loop: a round is due at its time and the poll's latency counts from
then, so a server that falls behind shows it in the tail. A request that fails because
the server is not there (connection refused or closed) is retried by its agent at its next
phase slot, as an agent that backs off does; the parent decides, from the restart's
timestamps, which failures fell in the downtime and which are errors.

Timestamps are `time.monotonic()`, the clock the parent reads too. Protocol: the parent
sends one `Plan` through a multiprocessing pipe, then "stop"; the client answers with one
`Report` when stopped.
"""

import asyncio
import gc
import json
import random
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

LONG_POLL_WAIT_S = 25
TIMEOUT_S = 40.0
POLL, BEAT = 0, 1


@dataclass(frozen=True)
class Plan:
    host: str
    port: int
    credentials: list[str]
    etag: str
    period_s: float
    connections: int
    long_poll: bool
    seed: int = 1


@dataclass
class Report:
    # (due time, kind POLL/BEAT, latency ms or -1 when it failed, failure text or "")
    requests: list[tuple[float, int, float, str]] = field(default_factory=list)
    # (time, agent index, etag): when an agent first held an ETag other than the seed's
    etags: list[tuple[float, int, str]] = field(default_factory=list)
    long_poll_failures: list[tuple[float, str]] = field(default_factory=list)
    client_cpu_s: float = 0.0


class Failed(Exception):
    """A request that got no valid answer."""


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, str | None]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, etag = 0, None
    for line in head.split(b"\r\n")[1:]:
        low = line[:15].lower()
        if low == b"content-length:":
            length = int(line[15:])
        elif low[:5] == b"etag:":
            etag = line[5:].strip().strip(b'"').decode()
    if length:
        await reader.readexactly(length)
    return status, etag


class Fleet:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.report = Report()
        self.etags = [plan.etag] * len(plan.credentials)
        rng = random.Random(plan.seed)
        self.phases = [rng.random() * plan.period_s for _ in plan.credentials]
        hb = json.dumps({"agent_version": "bench", "applied_version": 1, "state": "applied",
                         "services": [{"name": "web", "commit": "0" * 40, "state": "running",
                                       "health": "healthy", "restarts": 0}],
                         "security": {"mode": "open"}}).encode()  # fmt: skip
        host = f"{plan.host}:{plan.port}"
        self.beats = [
            (f"POST /api/v1/agent/heartbeat HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {c}\r\n"
             f"Content-Type: application/json\r\nContent-Length: {len(hb)}\r\n\r\n").encode() + hb
            for c in plan.credentials
        ]  # fmt: skip
        self.host = host
        self.queue: asyncio.Queue[tuple[float, int]] = asyncio.Queue()
        self.stopping = False

    def poll_request(self, agent: int, wait: bool) -> bytes:
        query = f"?wait={LONG_POLL_WAIT_S}" if wait else ""
        return (f"GET /api/v1/agent/desired-state{query} HTTP/1.1\r\nHost: {self.host}\r\n"
                f"Authorization: Bearer {self.plan.credentials[agent]}\r\n"
                f"If-None-Match: \"{self.etags[agent]}\"\r\n\r\n").encode()  # fmt: skip

    def saw(self, agent: int, status: int, etag: str | None) -> None:
        if status == 200 and etag and etag != self.etags[agent]:
            self.etags[agent] = etag
            self.report.etags.append((time.monotonic(), agent, etag))

    async def connection(self) -> None:
        """One shared keep-alive connection: takes rounds (poll, then heartbeat) in turn."""
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        record = self.report.requests.append
        while True:
            due, agent = await self.queue.get()
            kind = POLL
            try:
                if reader is None or writer is None or reader.at_eof():
                    # like urllib3, reconnect when the server closed an idle connection
                    if writer is not None:
                        writer.close()
                    reader, writer = await asyncio.open_connection(self.plan.host, self.plan.port)
                writer.write(self.poll_request(agent, False))
                status, etag = await asyncio.wait_for(_read_response(reader), TIMEOUT_S)
                if status not in (200, 304):
                    raise Failed(f"poll answered {status}")
                self.saw(agent, status, etag)
                now = time.monotonic()
                record((due, POLL, max(0.0, now - due) * 1000, ""))  # timers may fire early
                kind, sent = BEAT, now
                writer.write(self.beats[agent])
                status, _ = await asyncio.wait_for(_read_response(reader), TIMEOUT_S)
                if status != 200:
                    raise Failed(f"heartbeat answered {status}")
                record((sent, BEAT, (time.monotonic() - sent) * 1000, ""))
            except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError, Failed) as exc:
                record((due if kind == POLL else time.monotonic(), kind, -1.0, _why(exc)))
                if writer is not None:
                    writer.close()
                reader = writer = None
            finally:
                self.queue.task_done()

    async def rounds(self) -> None:
        """Put every agent's round in the queue at its due time."""
        period = self.plan.period_s
        order = sorted(range(len(self.phases)), key=self.phases.__getitem__)
        start = time.monotonic()
        cycle = 0
        while not self.stopping:
            base = start + cycle * period
            for agent in order:
                due = base + self.phases[agent]
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.stopping:
                    return
                self.queue.put_nowait((due, agent))
            cycle += 1

    async def long_poll(self, agent: int, start: float) -> None:
        """Hold a long poll open, as the reconciler does; after a failure, come back at
        this agent's next phase slot (a fleet reconnects over one interval)."""
        period = self.plan.period_s
        await asyncio.sleep(max(0.0, start + self.phases[agent] - time.monotonic()))
        while not self.stopping:
            writer = None
            try:
                reader, writer = await asyncio.open_connection(self.plan.host, self.plan.port)
                while not self.stopping:
                    writer.write(self.poll_request(agent, True))
                    status, etag = await asyncio.wait_for(
                        _read_response(reader), LONG_POLL_WAIT_S + TIMEOUT_S
                    )
                    if status not in (200, 304):
                        raise Failed(f"long poll answered {status}")
                    self.saw(agent, status, etag)
            except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError, Failed) as exc:
                self.report.long_poll_failures.append((time.monotonic(), _why(exc)))
            finally:
                if writer is not None:
                    writer.close()
            now = time.monotonic()
            await asyncio.sleep(period - (now - start - self.phases[agent]) % period)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:120]


async def _run(plan: Plan, pipe: Connection) -> Report:
    fleet = Fleet(plan)
    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(fleet.connection(), name=f"conn-{i}") for i in range(plan.connections)]  # fmt: skip
    tasks.append(asyncio.create_task(fleet.rounds(), name="rounds"))
    if plan.long_poll:
        start = time.monotonic()
        tasks += [
            asyncio.create_task(fleet.long_poll(i, start), name=f"long-poll-{i}")
            for i in range(len(plan.credentials))
        ]
    # the client's own collector pauses would show up as server latency: off for the run
    gc.collect()
    gc.freeze()
    gc.disable()
    cpu0 = time.process_time()
    pipe.send("started")
    await loop.run_in_executor(None, pipe.recv)  # "stop"
    fleet.stopping = True
    for task in tasks:
        task.cancel()
    # Python 3.11's wait_for can swallow a cancellation: do not wait for every task forever
    await asyncio.wait(tasks, timeout=5)
    fleet.report.client_cpu_s = time.process_time() - cpu0
    return fleet.report


def main(pipe: Connection) -> None:
    """Entry point of the client process: receive a Plan, run until "stop", send a Report."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    plan: Plan = pipe.recv()
    try:
        import uvloop

        report = uvloop.run(_run(plan, pipe))
    except ImportError:
        report = asyncio.run(_run(plan, pipe))
    pipe.send(report)

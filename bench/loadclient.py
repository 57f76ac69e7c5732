"""The fleet simulator of bench/controlplane.py, run in its own process.

One asyncio process (uvloop when installed). Each simulated agent, every `period_s` at a
random phase, sends `GET /api/v1/agent/desired-state` with its ETag in If-None-Match
(304 expected, or 200 with a new document) and then `POST /api/v1/agent/heartbeat` with a
one-service snapshot, over `connections` shared HTTP/1.1 keep-alive connections. With
`metrics`, every third of its rounds (every 30 s, docs/metrics.md) it then also sends
`POST /api/v1/agent/metrics` with one point for its service and one for the server, as
agent/metrics/batch.py builds them. With `long_poll`, each agent also holds
`GET /api/v1/agent/desired-state?wait=25` open on a connection of its own, as the
reconciler does (agent/reconciler/uplink.py, LONG_POLL_S), which is how a new version
reaches it in well under a poll interval.

The load is open loop: a round is due at its time and the poll's latency counts from
then, so a server that falls behind shows it in the tail. A request that fails because
the server is not there (connection refused or closed) is retried by its agent at its next
phase slot, as an agent that backs off does; the parent decides, from the restart's
timestamps, which failures fell in the downtime and which are errors.

Connections are asyncio protocols, not streams: a response is parsed and the next request
written in the one callback that received it. With streams, each response cost a task
switch or two, and 10,000 long polls answered at once took this client longer to take in
than the control plane to send (bench/trivialserver.py is the reference that shows it).

Timestamps are `time.monotonic()`, the clock the parent reads too. Protocol: the parent
sends one `Plan` through a multiprocessing pipe, then "stop"; the client answers with one
`Report` when stopped.
"""

import asyncio
import collections
import gc
import json
import random
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

LONG_POLL_WAIT_S = 25
TIMEOUT_S = 40.0
POLL, BEAT, METRICS = 0, 1, 2
METRICS_EVERY = 3  # rounds: every 30 s at a 10 s period


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
    metrics: bool = False


@dataclass
class Report:
    # (due time, kind POLL/BEAT/METRICS, latency ms or -1 when it failed, failure text or "")
    requests: list[tuple[float, int, float, str]] = field(default_factory=list)
    # (time, agent index, etag): when an agent first held an ETag other than the seed's
    etags: list[tuple[float, int, str]] = field(default_factory=list)
    long_poll_failures: list[tuple[float, str]] = field(default_factory=list)
    client_cpu_s: float = 0.0


class Failed(Exception):
    """A request that got no valid answer."""


def parse_response(buf: bytearray) -> tuple[int, str | None] | None:
    """Take one whole response off the front of `buf`: (status, ETag), or None if it has
    not all arrived yet."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end])
    length, etag = 0, None
    for line in head.split(b"\r\n")[1:]:
        low = line[:15].lower()
        if low == b"content-length:":
            length = int(line[15:])
        elif low[:5] == b"etag:":
            etag = line[5:].strip().strip(b'"').decode()
    if len(buf) < end + 4 + length:
        return None
    del buf[: end + 4 + length]
    return int(head[9:12]), etag


def metrics_body() -> bytes:
    """One batch: the service's point and the server's (agent/metrics/batch.py)."""
    t = round(time.time() - 30, 3)
    lat = [40, 30, 20, 5, 3, 1, 1, 0, 0, 0, 0, 0]
    return json.dumps({"points": [
        {"t": t, "span": 30.0, "service": "web", "requests": 100, "errors": 1, "bytes_in": 20000,
         "bytes_out": 400000, "lat": lat, "lat_sum": 1.5, "cpu_s": 0.8, "mem": 50_000_000},
        {"t": t, "span": 30.0, "service": "", "cpu_s": 3.1, "cpus": 2, "mem": 900_000_000,
         "mem_total": 4_000_000_000, "disk_used": 10_000_000_000, "disk_total": 40_000_000_000,
         "inodes_free": 2_000_000, "load1": 0.4, "net_rx": 30000, "net_tx": 500000},
    ]}).encode()  # fmt: skip


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
        self.host = f"{plan.host}:{plan.port}"
        self.beats = [self._post("heartbeat", c, hb) for c in plan.credentials]
        self.metrics_body = metrics_body()
        # rounds due and not yet taken by a connection; connections free to take one
        self.backlog: collections.deque[tuple[float, int, bool]] = collections.deque()
        self.idle: list[RoundConnection] = []
        self.stopping = False

    def _post(self, what: str, credential: str, body: bytes) -> bytes:
        return (f"POST /api/v1/agent/{what} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {credential}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip

    def metrics_request(self, agent: int) -> bytes:
        return self._post("metrics", self.plan.credentials[agent], self.metrics_body)

    def poll_request(self, agent: int, wait: bool) -> bytes:
        query = f"?wait={LONG_POLL_WAIT_S}" if wait else ""
        return (f"GET /api/v1/agent/desired-state{query} HTTP/1.1\r\nHost: {self.host}\r\n"
                f"Authorization: Bearer {self.plan.credentials[agent]}\r\n"
                f"If-None-Match: \"{self.etags[agent]}\"\r\n\r\n").encode()  # fmt: skip

    def saw(self, agent: int, status: int, etag: str | None) -> None:
        if status == 200 and etag and etag != self.etags[agent]:
            self.etags[agent] = etag
            self.report.etags.append((time.monotonic(), agent, etag))

    def due(self, due: float, agent: int, metrics: bool) -> None:
        if self.idle:
            self.idle.pop().start(due, agent, metrics)
        else:
            self.backlog.append((due, agent, metrics))

    def free(self, conn: "RoundConnection") -> None:
        """`conn` finished a round: the next due one, or wait for one."""
        if self.backlog and not self.stopping:
            conn.start(*self.backlog.popleft())
        else:
            self.idle.append(conn)

    async def rounds(self) -> None:
        """Hand every agent's round to a connection at its due time."""
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
                metrics = self.plan.metrics and (cycle + agent) % METRICS_EVERY == 0
                self.due(due, agent, metrics)
            cycle += 1


class Link(asyncio.Protocol):
    """One TCP connection of an `Http` client; a new one after each reconnect, so a late
    `connection_lost` of an old connection is told apart."""

    def __init__(self, owner: "Http") -> None:
        self.owner = owner
        self.buf = bytearray()
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (got := parse_response(self.buf)) is not None:
            self.owner.received(self, *got)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(self)


class Http:
    """An HTTP/1.1 client, one request at a time, that hands each whole response to
    `answered` and each failure (closed, timed out, refused) to `fail`."""

    def __init__(self) -> None:
        self.link: Link | None = None
        self.timer: asyncio.TimerHandle | None = None

    async def open(self, host: str, port: int) -> None:
        link = Link(self)
        await asyncio.get_running_loop().create_connection(lambda: link, host, port)
        self.link = link

    def send(self, request: bytes, timeout_s: float) -> None:
        assert self.link is not None
        self.timer = asyncio.get_running_loop().call_later(timeout_s, self.timed_out)
        self.link.transport.write(request)

    def received(self, link: Link, status: int, etag: str | None) -> None:
        if link is self.link:
            if self.timer is not None:
                self.timer.cancel()
            self.answered(status, etag)

    def lost(self, link: Link) -> None:
        if link is self.link:
            self.link = None
            self.failed(ConnectionResetError("connection closed"))

    def timed_out(self) -> None:
        self.failed(Failed("timed out"))

    def failed(self, exc: BaseException) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.link is not None:
            self.link.transport.close()
            self.link = None
        self.fail(exc)

    def close(self) -> None:
        if self.link is not None:
            link, self.link = self.link, None
            link.transport.close()

    def answered(self, status: int, etag: str | None) -> None:
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        raise NotImplementedError


class RoundConnection(Http):
    """One shared keep-alive connection: takes rounds (poll, heartbeat, metrics) in turn."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__()
        self.fleet = fleet
        self.agent = -1
        self.kind = POLL
        self.due = self.sent = 0.0
        self.metrics = False

    def start(self, due: float, agent: int, metrics: bool) -> None:
        self.due, self.agent, self.metrics, self.kind = due, agent, metrics, POLL
        if self.link is None:  # like urllib3: reconnect when the server closed it
            asyncio.get_running_loop().create_task(self.connect_then_poll())
        else:
            self.send(self.fleet.poll_request(agent, False), TIMEOUT_S)

    async def connect_then_poll(self) -> None:
        try:
            await self.open(self.fleet.plan.host, self.fleet.plan.port)
        except OSError as exc:
            self.fail(exc)
            return
        self.send(self.fleet.poll_request(self.agent, False), TIMEOUT_S)

    def answered(self, status: int, etag: str | None) -> None:
        fleet, now = self.fleet, time.monotonic()
        record = fleet.report.requests.append
        if self.kind == POLL:
            if status not in (200, 304):
                return self.failed(Failed(f"poll answered {status}"))
            fleet.saw(self.agent, status, etag)
            record((self.due, POLL, max(0.0, now - self.due) * 1000, ""))  # timers fire early
            self.kind, self.sent = BEAT, now
            self.send(fleet.beats[self.agent], TIMEOUT_S)
            return None
        if status != 200:
            return self.failed(
                Failed(f"{('heartbeat', 'metrics')[self.kind - 1]} answered {status}")
            )
        record((self.sent, self.kind, (now - self.sent) * 1000, ""))
        if self.kind == BEAT and self.metrics:
            self.kind, self.sent = METRICS, now
            self.send(fleet.metrics_request(self.agent), TIMEOUT_S)
            return None
        self.agent = -1
        fleet.free(self)
        return None

    def fail(self, exc: BaseException) -> None:
        if self.agent < 0:
            return  # closed while idle (or already failed): nothing was asked
        due = self.due if self.kind == POLL else time.monotonic()
        self.fleet.report.requests.append((due, self.kind, -1.0, _why(exc)))
        self.agent = -1
        self.fleet.free(self)


class LongPoll(Http):
    """Holds one agent's long poll open, as the reconciler does; after a failure, comes
    back at this agent's next phase slot (a fleet reconnects over one interval)."""

    def __init__(self, fleet: Fleet, agent: int, start: float) -> None:
        super().__init__()
        self.fleet, self.agent, self.start = fleet, agent, start

    def connect_later(self, at: float) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, at - time.monotonic()), lambda: loop.create_task(self.connect()))

    async def connect(self) -> None:
        if self.fleet.stopping:
            return
        try:
            await self.open(self.fleet.plan.host, self.fleet.plan.port)
        except OSError as exc:
            self.fail(exc)
            return
        self.ask()

    def ask(self) -> None:
        self.send(self.fleet.poll_request(self.agent, True), LONG_POLL_WAIT_S + TIMEOUT_S)

    def answered(self, status: int, etag: str | None) -> None:
        if status not in (200, 304):
            return self.failed(Failed(f"long poll answered {status}"))
        self.fleet.saw(self.agent, status, etag)
        if not self.fleet.stopping:
            self.ask()
        return None

    def fail(self, exc: BaseException) -> None:
        if self.fleet.stopping:
            return
        self.fleet.report.long_poll_failures.append((time.monotonic(), _why(exc)))
        period, now = self.fleet.plan.period_s, time.monotonic()
        self.connect_later(
            now + period - (now - self.start - self.fleet.phases[self.agent]) % period
        )


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:120]


async def _run(plan: Plan, pipe: Connection) -> Report:
    fleet = Fleet(plan)
    loop = asyncio.get_running_loop()
    fleet.idle = [RoundConnection(fleet) for _ in range(plan.connections)]
    rounds = asyncio.create_task(fleet.rounds(), name="rounds")
    polls = []
    if plan.long_poll:
        start = time.monotonic()
        for agent in range(len(plan.credentials)):
            polls.append(LongPoll(fleet, agent, start))
            polls[-1].connect_later(start + fleet.phases[agent])
    # the client's own collector pauses would show up as server latency: off for the run
    gc.collect()
    gc.freeze()
    gc.disable()
    cpu0 = time.process_time()
    pipe.send("started")
    await loop.run_in_executor(None, pipe.recv)  # "stop"
    fleet.stopping = True
    rounds.cancel()
    for conn in [*polls, *fleet.idle]:
        conn.close()
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

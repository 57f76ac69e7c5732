"""Worker scenarios on a fake clock: crash, backoff, restart, failed probes. The worker
runs real processes (sh) and real probes (a closed port); only time is injected, so a
five-second backoff is passed by moving the clock, not by sleeping."""

import asyncio
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.metrics.builds import BuildLog
from agent.reconciler import planner
from agent.reconciler.clock import Clock
from agent.reconciler.planner import IllegalTransition, WorkerState
from agent.reconciler.policy import Backoff, build_key, config_hash, service_urls
from agent.reconciler.process import RunAs
from agent.reconciler.store import Store
from agent.reconciler.worker import DesiredConfig, ServiceWorker, Timeouts
from agent.schema.document import build_document, parse_document
from agent.schema.stack import parse_stack


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, s: float) -> None:
        self.now += s

    def clock(self) -> Clock:
        return Clock(monotonic=lambda: self.now, wall=lambda: self.now)


@dataclass
class Ctx:
    """The worker's surroundings, minus the reconciler: events are collected."""

    state_dir: Path
    clock: Clock
    store: Store = field(init=False)
    file_repo_roots: tuple[str, ...] = ()
    run_as: RunAs = RunAs()
    base_env: dict[str, str] = field(default_factory=lambda: {"PATH": "/usr/bin:/bin"})
    timeouts: Timeouts = Timeouts(deploy_s=5, stop_grace_s=1)
    backoff: Backoff = Backoff(base_s=5.0, jitter=0)
    keep_releases: int = 2
    events: list[tuple[str, str]] = field(default_factory=list)
    builds: BuildLog = field(default_factory=BuildLog)

    def __post_init__(self) -> None:
        self.store = Store(self.state_dir / "agent.sqlite3")

    def event(self, type_: str, message: str, service: str | None = None, **extra: Any) -> None:
        self.events.append((type_, message))

    def routes_changed(self) -> None:
        pass

    async def cutover(self, service: str) -> None:
        pass

    async def drain(self, service: str, port: int, timeout_s: float) -> tuple[float, int]:
        return 0.0, 0


def target(run: str, health: dict[str, Any] | None = None) -> DesiredConfig:
    body: dict[str, Any] = {"name": "app", "repo": "file:///nowhere", "run": run}
    if health is not None:
        body["health"] = health
    doc = build_document("s", 1, parse_stack({"name": "s", "services": [body]}), {"app": "c" * 40})
    svc = parse_document(doc).services[0]
    urls = service_urls(parse_document(doc))
    return DesiredConfig(svc, urls, config_hash(svc, urls), build_key(svc))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def exited(worker: ServiceWorker, timeout_s: float = 10.0) -> None:
    """Wait (real time, bounded) until the worker's current process has exited."""
    deadline = time.monotonic() + timeout_s
    assert worker.current is not None and worker.current.popen is not None
    while worker.current.popen.poll() is None:
        assert time.monotonic() < deadline, "the process did not exit"
        await asyncio.sleep(0.02)


def started(worker: ServiceWorker, t: DesiredConfig, tmp_path: Path, port: int = 9) -> None:
    """Put `t` running as the worker's current process (as a deploy leaves it)."""
    worker.set_desired(t)
    worker.set_state(WorkerState.BUILDING)
    worker.set_state(WorkerState.STARTING)
    worker.current = worker.start(t, tmp_path, port)
    worker.mark_running(t)


def test_crash_backs_off_on_the_clock_then_restarts(tmp_path: Path) -> None:
    fake = FakeClock()
    ctx = Ctx(tmp_path, fake.clock())
    worker = ServiceWorker("app", ctx)
    t = target("exit 3")

    async def scenario() -> None:
        started(worker, t, tmp_path)
        await exited(worker)
        assert await worker.step() == planner.ScheduleRestart(5.0, 1)
        assert worker.state is WorkerState.BACKOFF and worker.restart_at == fake.now + 5.0
        assert worker.status().failed == "crash loop: code 3"
        fake.advance(4.9)  # not due yet: the worker idles however long the test takes
        assert isinstance(planner.next_action(worker.view(fake.now), ctx.backoff), planner.Idle)
        fake.advance(0.1)
        assert await worker.step() == planner.Restart()
        assert worker.state is WorkerState.RUNNING and worker.restarts == 1
        await exited(worker)  # crashes again at once: the delay doubles
        assert await worker.step() == planner.ScheduleRestart(10.0, 2)
        fake.advance(10)
        assert await worker.step() == planner.Restart()
        await exited(worker)
        fake.advance(601)  # as if it had run ten minutes: its backoff starts afresh
        assert await worker.step() == planner.ScheduleRestart(5.0, 1)

    asyncio.run(scenario())
    assert [e for e, _ in ctx.events].count("crash") == 3


def test_failed_probes_restart_after_the_backoff(tmp_path: Path) -> None:
    fake = FakeClock()
    ctx = Ctx(tmp_path, fake.clock())
    worker = ServiceWorker("app", ctx)
    hc = {"path": "/", "interval_s": 2, "timeout_s": 1, "retries": 2}
    t = target("sleep 30", hc)

    async def scenario() -> None:
        started(worker, t, tmp_path, port=closed_port())  # never listens: probes fail
        assert worker.health.status == "healthy"  # as a deploy that passed its check
        assert isinstance(planner.next_action(worker.view(fake.now), ctx.backoff), planner.Idle)
        fake.advance(2)
        assert await worker.step() == planner.Probe()
        assert worker.health == planner.Health("healthy", 1) and worker.state == "running"
        fake.advance(2)
        pid = worker.current.rec.pid  # type: ignore[union-attr]
        assert await worker.step() == planner.Probe()
        assert worker.health.status == "unhealthy" and worker.state is WorkerState.BACKOFF
        assert worker.restart_at == fake.now + 5.0 and worker.failures == 1
        assert worker.current.popen.poll() is not None  # type: ignore[union-attr]
        fake.advance(5)
        assert await worker.step() == planner.Restart()
        assert worker.current.rec.pid != pid  # type: ignore[union-attr]
        # the restarted process has a grace period: failed probes in it do not count
        assert worker.grace_until == fake.now + 5
        await worker.stop(worker.current)  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert any(e == "health" and "unhealthy after 2" in m for e, m in ctx.events)


def test_illegal_transition_raises(tmp_path: Path) -> None:
    worker = ServiceWorker("app", Ctx(tmp_path, FakeClock().clock()))
    with pytest.raises(IllegalTransition, match="pending cannot become backoff"):
        worker.set_state(WorkerState.BACKOFF)
    worker.set_state(WorkerState.STOPPED)
    with pytest.raises(IllegalTransition):
        worker.set_state(WorkerState.RUNNING)
    assert worker.state is WorkerState.STOPPED


def test_restart_decisions_are_the_planners() -> None:
    # an adopted process (no target of its own) restarts with the current target
    assert planner.restart_with_own_target(None, "cfg") is False
    assert planner.restart_with_own_target("old", "cfg") is False
    assert planner.restart_with_own_target("cfg", "cfg") is True
    timers = planner.restart_timers(100.0, start_period_s=3.0, deploy_s=60.0)
    assert (timers.probe_at, timers.grace_until) == (103.0, 160.0)
    unhealthy = planner.judge_probe(
        planner.Health("healthy", 2), False, 3, "HTTP 500", starting=False, failures=1,
        backoff=Backoff(base_s=1.0, jitter=0),
    )  # fmt: skip
    assert unhealthy.restart_in_s == 2.0 and unhealthy.failures == 2
    assert unhealthy.health == planner.Health("unhealthy", 3) and unhealthy.event
    grace = planner.judge_probe(
        planner.Health("healthy", 2), False, 3, "refused", starting=True, failures=1,
        backoff=Backoff(jitter=0),
    )  # fmt: skip
    assert grace.restart_in_s is None and grace.health == planner.Health("healthy", 2)


def test_transition_table_covers_every_state() -> None:
    assert set(planner.TRANSITIONS) == set(WorkerState)
    assert planner.TRANSITIONS[WorkerState.STOPPED] == frozenset()
    for state, targets in planner.TRANSITIONS.items():
        assert state not in targets  # staying put is always allowed, never listed

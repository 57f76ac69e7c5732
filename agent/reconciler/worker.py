"""One worker per service: its own queue, so a slow build never delays another service.

The worker is the driver: it builds a `planner.ServiceView` of what it knows and does
what `planner.next_action` says: deploy (`deploy.Deploy` toward the latest `DesiredConfig`: sync, build, start, wait until
ready, cut over), schedule a restart of a crashed process (exponential backoff with
jitter), restart it, probe its health (`planner.judge_probe`: `retries` failures in a
row mark it unhealthy and restart it), or retire it. Its state (`planner.WorkerState`)
moves only along `planner.TRANSITIONS`. Time comes from `ctx.clock`.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any, Protocol

from agent.bus.messages import Route
from agent.metrics.builds import BuildLog
from agent.reconciler import gitsync, health, planner, process, releases
from agent.reconciler.clock import Clock
from agent.reconciler.deploy import Deploy
from agent.reconciler.planner import ServiceView, WorkerState
from agent.reconciler.policy import Backoff, ServiceStatus, service_env
from agent.reconciler.process import RunAs
from agent.reconciler.store import ProcessRecord, Store
from agent.schema.document import DesiredService
from agent.schema.report import ServiceSnapshot

log = logging.getLogger(__name__)

READY_POLL_S = 0.05
CRASH_LOOP_STABLE_S = 30.0  # after repeated crashes, degraded until it ran this long


@dataclass(frozen=True)
class DesiredConfig:
    """What one service should run: its desired spec and commit, the stack's service URLs,
    and the hashes that identify them (a proxy's backend is `agent.proxy.routing.Target`)."""

    svc: DesiredService
    urls: dict[str, str]
    config_hash: str
    build_key: str


@dataclass
class ServiceProcess:
    """One process of a service on this server (not the control plane's `Instance`, which
    is a registered server)."""

    rec: ProcessRecord
    popen: Popen[bytes] | None  # None when adopted after a reconciler restart
    desired: DesiredConfig | None


@dataclass(frozen=True)
class Timeouts:
    build_s: float = 900.0
    deploy_s: float = 60.0
    drain_s: float | None = None  # cap on the services' drain_timeout_s (--drain-timeout)
    stop_grace_s: float = 10.0
    git: gitsync.GitLimits = gitsync.GitLimits()


class WorkerContext(Protocol):
    store: Store
    state_dir: Path
    file_repo_roots: tuple[str, ...]
    run_as: RunAs
    base_env: dict[str, str]
    timeouts: Timeouts
    backoff: Backoff
    keep_releases: int
    clock: Clock
    builds: BuildLog

    def event(self, type_: str, message: str, service: str | None = None, **extra: Any) -> None: ...
    def routes_changed(self) -> None: ...
    async def cutover(self, service: str) -> None: ...
    async def drain(self, service: str, port: int, timeout_s: float) -> tuple[float, int]: ...


class ServiceWorker:
    def __init__(self, name: str, ctx: WorkerContext) -> None:
        self.name = name
        self.ctx = ctx
        self.desired: DesiredConfig | None = None
        self.removed = False
        self.current: ServiceProcess | None = None
        self.paused = False
        self.state = WorkerState.PENDING
        self.health = planner.Health()
        self.restarts = 0
        self.failures = 0
        self.last_exit: str | None = None
        self.last_error: str | None = None
        self.failed_hash: str | None = None
        self.failed_at = 0.0
        self.restart_at: float | None = None
        self.probe_at = 0.0
        self.grace_until = 0.0  # a restarted process's failed probes do not count before this
        self.last_build_log: Path | None = None
        self.wake = asyncio.Event()

    def set_state(self, new: WorkerState) -> None:
        """Move to `new`; `planner.IllegalTransition` if the table does not allow it."""
        self.state = planner.transition(self.state, new)

    # --- inputs ----------------------------------------------------------------------
    def set_desired(self, target: DesiredConfig | None) -> None:
        if target is None:
            self.removed = True
        else:
            self.desired = target
            cur = self.current
            if (
                cur is not None
                and cur.desired is None
                and cur.rec.config_hash == target.config_hash
            ):
                cur.desired = target  # an adopted process: now we know what it runs
        self.wake.set()

    def adopt(self, rec: ProcessRecord) -> None:
        """Take over a process a previous reconciler started (it keeps running)."""
        self.current = ServiceProcess(rec, None, None)
        self.set_state(WorkerState.RUNNING)
        log.info(
            "%s: adopted pid %d on port %d (%s)", self.name, rec.pid, rec.port, rec.commit[:12]
        )

    # --- outputs ---------------------------------------------------------------------
    def route(self) -> Route:
        spec = self.desired.svc.spec if self.desired else None
        return Route(
            service=self.name,
            port=self.current.rec.port if self.current else None,
            path=spec.path if spec else None,
            strip_prefix=spec.strip_prefix if spec else False,
            paused=self.paused,
        )

    def converged(self) -> bool:
        return bool(
            self.desired
            and self.current
            and self.current.rec.config_hash == self.desired.config_hash
            and self.state is WorkerState.RUNNING
        )

    def status(self) -> ServiceStatus:
        failed = None
        if self.desired and self.failed_hash == self.desired.config_hash:
            failed = self.last_error or "deploy failed"
        elif self.state is WorkerState.BACKOFF or self._crash_looping():
            failed = f"crash loop: {self.last_exit}"
        return ServiceStatus(self.name, self.converged(), failed, self.health.status == "unhealthy")

    def _crash_looping(self) -> bool:
        """Crashed at least twice in a row and not yet running stably since the restart."""
        cur = self.current
        return (
            self.failures >= 2
            and cur is not None
            and self.ctx.clock.wall() - cur.rec.started_at < CRASH_LOOP_STABLE_S
        )

    def snapshot(self) -> ServiceSnapshot:
        cur = self.current.rec if self.current else None
        return ServiceSnapshot(
            name=self.name,
            commit=cur.commit if cur else None,
            desired_commit=self.desired.svc.commit if self.desired else None,
            release=Path(cur.release_dir).name if cur else None,
            pid=cur.pid if cur else None,
            port=cur.port if cur else None,
            state=self.state.value,
            health=self.health.status,
            restarts=self.restarts,
            last_exit=self.last_exit,
            last_error=self.last_error,
        )

    # --- the loop: the planner decides, the worker does -------------------------------
    def view(self, now: float) -> ServiceView:
        cur = self.current
        return ServiceView(
            now=now,
            removed=self.removed,
            target_hash=self.desired.config_hash if self.desired else None,
            current_hash=cur.rec.config_hash if cur else None,
            current_alive=self._alive(cur) if cur and self.restart_at is None else False,
            current_started_at=cur.rec.started_at if cur else 0.0,
            wall_now=self.ctx.clock.wall(),
            failed_hash=self.failed_hash,
            failed_at=self.failed_at,
            failures=self.failures,
            restart_at=self.restart_at,
            running=self.state is WorkerState.RUNNING,
            has_health=bool(self.desired and self.desired.svc.spec.health),
            probe_at=self.probe_at,
        )

    async def step(self) -> planner.Action:
        """Decide and do one thing; the action taken."""
        action = planner.next_action(self.view(self.ctx.clock.monotonic()), self.ctx.backoff)
        match action:
            case planner.Retire():
                await self._retire()
            case planner.Deploy():
                await Deploy(self, self.desired).run()  # type: ignore[arg-type]
            case planner.ScheduleRestart(delay_s=delay, failures=failures):
                self._schedule_restart(delay, failures)
            case planner.Restart():
                await self._restart()
            case planner.Probe():
                await self._probe()
            case planner.Idle(wait_s=wait_s):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait_s)
                self.wake.clear()
        return action

    async def run(self) -> None:
        while not isinstance(await self.step(), planner.Retire):
            pass

    def outdated(self, t: DesiredConfig) -> bool:
        """A newer target (or removal) has arrived since `t` was taken up."""
        return self.removed or self.desired is None or self.desired.config_hash != t.config_hash

    # --- what a deploy records -------------------------------------------------------
    def mark_running(self, t: DesiredConfig) -> None:
        self.set_state(WorkerState.RUNNING)
        self.failed_hash = None
        self.last_error = None
        self.failures = 0
        self.restart_at = None
        if t.svc.spec.health and self.health.status != "healthy":
            self.ctx.event("health", "healthy (passed its check at deploy)", self.name)
        self.health = planner.Health("healthy" if t.svc.spec.health else "none")
        self.probe_at = self.ctx.clock.monotonic() + (
            t.svc.spec.health.interval_s if t.svc.spec.health else 0
        )

    def fail(self, t: DesiredConfig, reason: str, kind: str, log_tail: str = "") -> None:
        self.failed_hash = t.config_hash
        self.failed_at = self.ctx.clock.monotonic()
        self.failures += 1
        self.last_error = reason
        # with a current process the old release keeps serving
        self.set_state(WorkerState.FAILED if self.current is None else WorkerState.RUNNING)
        log.error("%s: %s", self.name, reason)
        self.ctx.event(kind, reason, self.name, commit=t.svc.commit, log_tail=log_tail[-2000:])

    # --- files -----------------------------------------------------------------------
    def build_log(self, t: DesiredConfig) -> Path:
        return releases.build_log(self.ctx.state_dir, self.name, t.svc.commit, t.build_key)

    def log_path(self) -> Path:
        return releases.service_log(self.ctx.state_dir, self.name)

    def log_tail(self) -> str:
        return process.tail(self.log_path())

    def prune_releases(self) -> None:
        in_use = Path(self.current.rec.release_dir).name if self.current else None
        repo = self.desired.svc.spec.repo if self.desired else None
        releases.prune(self.ctx.state_dir, self.name, self.ctx.keep_releases, in_use, repo)

    # --- processes -------------------------------------------------------------------
    def start(self, t: DesiredConfig, release: Path, port: int) -> ServiceProcess:
        env = service_env(self.ctx.base_env, t.urls, t.svc, port)
        env.update(releases.env(release, self.ctx.run_as))
        popen = process.spawn(
            ["/bin/sh", "-c", t.svc.spec.run], release, env, self.log_path(), self.ctx.run_as
        )
        ticks = process.start_ticks(popen.pid) or 0
        rec = ProcessRecord(
            service=self.name,
            pid=popen.pid,
            start_ticks=ticks,
            port=port,
            commit=t.svc.commit,
            config_hash=t.config_hash,
            release_dir=str(release),
            started_at=self.ctx.clock.wall(),
        )
        self.ctx.store.save_process(rec)
        log.info(
            "%s: started pid %d on port %d (%s)", self.name, popen.pid, port, t.svc.commit[:12]
        )
        return ServiceProcess(rec, popen, t)

    async def wait_ready(self, inst: ServiceProcess) -> tuple[bool, str]:
        hc = inst.desired.svc.spec.health if inst.desired else None
        now = self.ctx.clock.monotonic
        deadline = now() + self.ctx.timeouts.deploy_s
        why = "not ready"
        while now() < deadline:
            if not self._alive(inst):
                return False, f"exited with {self.last_exit}"
            if hc is not None:
                ok, why = await health.probe(inst.rec.port, hc.path, hc.timeout_s)
            else:
                ok, why = await health.port_open(inst.rec.port), f"port {inst.rec.port} not open"
            if ok:
                return True, "ready"
            await asyncio.sleep(READY_POLL_S)
        return False, f"not ready after {self.ctx.timeouts.deploy_s:g} s ({why})"

    async def stop(self, inst: ServiceProcess, grace_s: float | None = None) -> None:
        await process.stop_group(
            inst.rec.pid,
            inst.rec.start_ticks,
            grace_s or self.ctx.timeouts.stop_grace_s,
            inst.popen,
        )
        self.ctx.store.forget_process(self.name, inst.rec.pid)

    async def _retire(self) -> None:
        if self.current is not None:
            await self.stop(self.current)
            self.ctx.event("run", "service removed and stopped", self.name)
        self.current = None
        self.set_state(WorkerState.STOPPED)

    # --- supervision -----------------------------------------------------------------
    def _alive(self, inst: ServiceProcess) -> bool:
        if inst.popen is not None:
            code = inst.popen.poll()
            if code is not None:
                self.last_exit = process.describe_exit(code)
                return False
            return True
        if process.is_alive(inst.rec.pid, inst.rec.start_ticks):
            return True
        self.last_exit = "unknown status (adopted process)"
        return False

    def _schedule_restart(self, delay_s: float, failures: int) -> None:
        inst = self.current
        assert inst is not None
        ran_for = self.ctx.clock.wall() - inst.rec.started_at
        self.failures = failures
        self.restart_at = self.ctx.clock.monotonic() + delay_s
        self.set_state(WorkerState.BACKOFF)
        self.ctx.store.forget_process(self.name, inst.rec.pid)
        self.ctx.event(
            "crash",
            f"exited with {self.last_exit} after {ran_for:.1f} s; restarting in {delay_s:.1f} s",
            self.name,
            exit=self.last_exit,
            restarts=self.restarts,
            log_tail=self.log_tail()[-1000:],
        )

    async def _restart(self) -> None:
        self.restart_at = None
        old, t = self.current, self.desired
        if old is None or t is None:
            return
        own = old.desired.config_hash if old.desired else None
        target = old.desired if old.desired and planner.restart_with_own_target(
            own, old.rec.config_hash
        ) else t  # fmt: skip
        self.restarts += 1
        self.current = self.start(target, Path(old.rec.release_dir), old.rec.port)
        self.set_state(WorkerState.RUNNING)
        self.health = planner.Health(self.health.status, 0)
        hc = target.svc.spec.health
        timers = planner.restart_timers(
            self.ctx.clock.monotonic(), hc.start_period_s if hc else 0, self.ctx.timeouts.deploy_s
        )
        self.probe_at, self.grace_until = timers.probe_at, timers.grace_until
        self.ctx.event("run", f"restarted (restart #{self.restarts})", self.name)

    async def _probe(self) -> None:
        inst, t = self.current, self.desired
        assert inst is not None and t is not None and t.svc.spec.health is not None
        hc = t.svc.spec.health
        now = self.ctx.clock.monotonic
        self.probe_at = now() + hc.interval_s
        ok, why = await health.probe(inst.rec.port, hc.path, hc.timeout_s)
        verdict = planner.judge_probe(
            self.health, ok, hc.retries, why, starting=now() < self.grace_until,
            failures=self.failures, backoff=self.ctx.backoff,
        )  # fmt: skip
        if ok:
            self.grace_until = 0.0
        self.health = verdict.health
        if verdict.event:
            self.ctx.event("health", verdict.event, self.name)
        if verdict.restart_in_s is not None:
            await self.stop(inst)
            self.last_exit = "stopped: unhealthy"
            self.failures = verdict.failures
            self.restart_at = now() + verdict.restart_in_s
            self.set_state(WorkerState.BACKOFF)

"""One worker per service: its own queue, so a slow build never delays another service.

The worker drives its service toward the latest `DesiredConfig`:

* deploy: sync the repo, check the commit out into a release directory, build (skipped
  when that release was already built), start, wait until ready, then cut over:
  - agent-assigned port: the new process starts beside the old one; once healthy the route
    is swapped and the old one drained and stopped (no gap);
  - fixed port: the route is paused (the proxy holds new requests), the old process
    drains and stops, the new one starts; if it never becomes healthy the old release is
    started again.
  Each route change waits for every live proxy's acknowledgement, and an old process is
  stopped only once the proxies report nothing in flight to it or the service's
  `drain_timeout_s` passed (`ctx.cutover`, `ctx.drain`; docs/reconciler.md).
  A failed build or health check leaves the old release serving and records the reason.
  A sync or build still running when a newer target arrives is superseded: its git or
  build process group is killed and the newer target deploys at once (nothing of the old
  deploy had started).
* supervise: a crashed process restarts with exponential backoff and jitter.
* health: periodic HTTP probes; `retries` failures in a row mark it unhealthy and restart it.
"""

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any, Protocol

from agent.bus.messages import Route
from agent.metrics.builds import BuildLog
from agent.reconciler import gitsync, health, ownership, planner, process
from agent.reconciler.planner import ServiceView
from agent.reconciler.policy import Backoff, ServiceStatus, service_env
from agent.reconciler.process import RunAs
from agent.reconciler.store import ProcessRecord, Store
from agent.schema import ValidationError
from agent.schema.document import DesiredService
from agent.schema.stack import check_repo_source
from agent.statelayout import StateLayout

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
class Instance:
    rec: ProcessRecord
    popen: Popen[bytes] | None  # None when adopted after a reconciler restart
    target: DesiredConfig | None


@dataclass
class _Deploy:
    """What one deploy has done so far, for the steps that follow."""

    target: DesiredConfig
    old: Instance | None
    release: Path = Path()
    new: Instance | None = None


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
    builds: BuildLog

    def event(self, type_: str, message: str, service: str | None = None, **extra: Any) -> None: ...
    def routes_changed(self) -> None: ...
    async def cutover(self, service: str) -> None: ...
    async def drain(self, service: str, port: int, timeout_s: float) -> tuple[float, int]: ...


class ServiceWorker:
    def __init__(self, name: str, ctx: WorkerContext) -> None:
        self.name = name
        self.ctx = ctx
        self.target: DesiredConfig | None = None
        self.removed = False
        self.current: Instance | None = None
        self.paused = False
        self.state = "pending"
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
        self._wake = asyncio.Event()

    # --- inputs ----------------------------------------------------------------------
    def set_target(self, target: DesiredConfig | None) -> None:
        if target is None:
            self.removed = True
        else:
            self.target = target
            cur = self.current
            if cur is not None and cur.target is None and cur.rec.config_hash == target.config_hash:
                cur.target = target  # an adopted process: now we know what it runs
        self._wake.set()

    def adopt(self, rec: ProcessRecord) -> None:
        """Take over a process a previous reconciler started (it keeps running)."""
        self.current = Instance(rec, None, None)
        self.state = "running"
        log.info(
            "%s: adopted pid %d on port %d (%s)", self.name, rec.pid, rec.port, rec.commit[:12]
        )

    # --- outputs ---------------------------------------------------------------------
    def route(self) -> Route:
        spec = self.target.svc.spec if self.target else None
        return Route(
            service=self.name,
            port=self.current.rec.port if self.current else None,
            path=spec.path if spec else None,
            strip_prefix=spec.strip_prefix if spec else False,
            paused=self.paused,
        )

    def converged(self) -> bool:
        return bool(
            self.target
            and self.current
            and self.current.rec.config_hash == self.target.config_hash
            and self.state == "running"
        )

    def status(self) -> ServiceStatus:
        failed = None
        if self.target and self.failed_hash == self.target.config_hash:
            failed = self.last_error or "deploy failed"
        elif self.state == "backoff" or self._crash_looping():
            failed = f"crash loop: {self.last_exit}"
        return ServiceStatus(self.name, self.converged(), failed, self.health.status == "unhealthy")

    def _crash_looping(self) -> bool:
        """Crashed at least twice in a row and not yet running stably since the restart."""
        cur = self.current
        return (
            self.failures >= 2
            and cur is not None
            and time.time() - cur.rec.started_at < CRASH_LOOP_STABLE_S
        )

    def snapshot(self) -> dict[str, Any]:
        cur = self.current.rec if self.current else None
        return {
            "name": self.name,
            "commit": cur.commit if cur else None,
            "desired_commit": self.target.svc.commit if self.target else None,
            "release": Path(cur.release_dir).name if cur else None,
            "pid": cur.pid if cur else None,
            "port": cur.port if cur else None,
            "state": self.state,
            "health": self.health.status,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_error": self.last_error,
        }

    # --- the loop: the planner decides, the worker does -------------------------------
    def view(self, now: float) -> ServiceView:
        cur = self.current
        return ServiceView(
            now=now,
            removed=self.removed,
            target_hash=self.target.config_hash if self.target else None,
            current_hash=cur.rec.config_hash if cur else None,
            current_alive=self._alive(cur) if cur and self.restart_at is None else False,
            current_started_at=cur.rec.started_at if cur else 0.0,
            wall_now=time.time(),
            failed_hash=self.failed_hash,
            failed_at=self.failed_at,
            failures=self.failures,
            restart_at=self.restart_at,
            running=self.state == "running",
            has_health=bool(self.target and self.target.svc.spec.health),
            probe_at=self.probe_at,
        )

    async def run(self) -> None:
        while True:
            action = planner.next_action(self.view(time.monotonic()), self.ctx.backoff)
            match action:
                case planner.Retire():
                    await self._retire()
                    return
                case planner.Deploy():
                    await self._deploy(self.target)  # type: ignore[arg-type]
                case planner.ScheduleRestart(delay_s=delay, failures=failures):
                    self._schedule_restart(delay, failures)
                case planner.Restart():
                    await self._restart()
                case planner.Probe():
                    await self._probe()
                case planner.Idle(wait_s=wait_s):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait_s)
                    self._wake.clear()

    # --- deploy ----------------------------------------------------------------------
    async def _deploy(self, t: DesiredConfig) -> None:
        old = self.current
        plan = planner.deploy_plan(t.svc.spec.port, old.rec.port if old else None)
        self.state = "deploying" if old else "building"
        self.ctx.event("deploy", f"deploying {t.svc.commit[:12]}", self.name, commit=t.svc.commit)
        run = _Deploy(t, old)
        for step in plan:
            if step in (planner.Step.SYNC, planner.Step.BUILD):
                work = self._sync(run) if step is planner.Step.SYNC else self._build(t, run.release)
                result = await self._unless_superseded(work, t)
                if result is None:
                    self._superseded_by(t, "sync" if step is planner.Step.SYNC else "build")
                    return
                ok, why = result
            else:
                ok, why = await self._do(step, run)
            if not ok:
                for back in planner.recovery_plan(
                    step, plan, old_revivable=bool(old and old.target)
                ):
                    await self._do(back, run)
                kind = {planner.Step.SYNC: "sync", planner.Step.BUILD: "build"}.get(step, "health")
                tail = (
                    process.tail(self._build_log(t))
                    if step is planner.Step.BUILD
                    else self._log_tail()
                )
                self._fail(t, why, kind, log_tail=tail)
                return
        self._mark_running(t)
        self.ctx.event(
            "run",
            f"serving {t.svc.commit[:12]} on port {self.current.rec.port}",  # type: ignore[union-attr]
            self.name,
            commit=t.svc.commit,
        )
        await asyncio.to_thread(self._prune_releases)

    def _outdated(self, t: DesiredConfig) -> bool:
        """A newer target (or removal) has arrived since `t` was taken up."""
        return self.removed or self.target is None or self.target.config_hash != t.config_hash

    async def _unless_superseded(
        self, work: Coroutine[Any, Any, tuple[bool, str]], t: DesiredConfig
    ) -> tuple[bool, str] | None:
        """Await `work` for `t`, unless a newer target arrives first: then cancel it and
        answer None. (A cancelled build kills its process group.)"""
        task: asyncio.Task[tuple[bool, str]] = asyncio.ensure_future(work)
        while True:
            wake = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait((task, wake), return_when=asyncio.FIRST_COMPLETED)
            wake.cancel()
            if task.done():
                return task.result()
            self._wake.clear()
            if self._outdated(t):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return None

    def _superseded_by(self, t: DesiredConfig, what: str) -> None:
        newer = self.target.svc.commit[:12] if self.target and not self.removed else "removal"
        self.state = "running" if self.current is not None else "pending"
        log.info("%s: %s of %s superseded by %s", self.name, what, t.svc.commit[:12], newer)
        if what == "build":
            with contextlib.suppress(OSError), open(self._build_log(t), "a") as build_log:
                build_log.write(f"\n[berth] build cancelled: superseded by {newer}\n")
        self.ctx.event(
            "build",
            f"{what} of {t.svc.commit[:12]} cancelled: superseded by {newer}",
            self.name,
            commit=t.svc.commit,
        )

    async def _do(self, step: planner.Step, run: "_Deploy") -> tuple[bool, str]:
        """Execute one deploy step; (ok, why not)."""
        S = planner.Step
        t, old = run.target, run.old
        if step is S.SYNC:
            return await self._sync(run)
        elif step is S.BUILD:
            return await self._build(t, run.release)
        elif step is S.PAUSE:
            self.paused = True
            await self.ctx.cutover(self.name)  # every proxy holds new requests from now on
        elif step is S.UNPAUSE:
            self.paused = False
            await self.ctx.cutover(self.name)
        elif step is S.STOP_OLD and old is not None:
            await self._drain_and_stop(old, t)  # in-flight requests finish on the old one
        elif step is S.START_NEW:
            port = t.svc.spec.port or _free_port()
            self.state = "starting" if old is None else "deploying"
            run.new = self._start(t, run.release, port)
        elif step is S.AWAIT_READY and run.new is not None:
            ok, why = await self._wait_ready(run.new, t)
            if not ok:
                return False, f"new release never became ready: {why}"
            self.current = run.new
        elif step is S.SWAP:
            await self.ctx.cutover(self.name)  # no proxy sends new requests to the old one
        elif step is S.DRAIN_OLD and old is not None:
            await self._drain_and_stop(old, t)
        elif step is S.STOP_NEW and run.new is not None:
            await self._stop(run.new)
            if self.current is run.new:
                self.current = old
        elif step is S.REVIVE_OLD and old is not None and old.target is not None:
            revived = self._start(old.target, Path(old.rec.release_dir), old.rec.port)
            await self._wait_ready(revived, old.target)
            self.current = revived
            self.state = "running"
        return True, "ok"

    def _release_dir(self, t: DesiredConfig) -> Path:
        return StateLayout(self.ctx.state_dir).releases / self.name / t.svc.commit

    def _build_log(self, t: DesiredConfig) -> Path:
        return (
            StateLayout(self.ctx.state_dir).logs
            / self.name
            / f"build-{t.svc.commit[:12]}-{t.build_key}.log"
        )

    async def _sync(self, run: "_Deploy") -> tuple[bool, str]:
        """Mirror and check out the target's commit. Cancelled (superseded), it stops git
        and returns only once the sync thread has let go of the mirror and release."""
        cancel = threading.Event()
        sync = asyncio.ensure_future(asyncio.to_thread(self._prepare_release, run.target, cancel))
        try:
            run.release = await asyncio.shield(sync)
        except asyncio.CancelledError:
            cancel.set()
            with contextlib.suppress(Exception):
                await sync
            raise
        except (gitsync.GitError, OSError) as exc:
            return False, f"git: {exc}"
        return True, "ok"

    def _prepare_release(self, t: DesiredConfig, cancel: threading.Event | None = None) -> Path:
        try:  # the control plane checked it too; a document that skipped it meets this
            check_repo_source(t.svc.spec.repo, self.ctx.file_repo_roots, "repo")
        except ValidationError as exc:
            raise gitsync.GitError(f"refusing to clone {t.svc.spec.repo}: {exc}") from None
        git_dir = StateLayout(self.ctx.state_dir).git
        ownership.make_private_dir(git_dir)  # mirrors: the reconciler's alone
        mirror = gitsync.ensure_commit(
            git_dir, t.svc.spec.repo, t.svc.commit, self.ctx.timeouts.git, cancel
        )
        release = self._release_dir(t)
        if not (release / ".git").exists():  # checked out afresh: never built
            ownership.forget_builds(self.ctx.state_dir, self.name, t.svc.commit)
        gitsync.checkout_release(mirror, t.svc.commit, release)
        if self.ctx.run_as.uid is not None:
            ownership.chown_tree(release, self.ctx.run_as.uid, self.ctx.run_as.gid or 0)
        os.utime(release)  # most recently used: kept longest
        return release

    def _release_env(self, release: Path) -> dict[str, str]:
        env = {"HOME": str(release)}
        if self.ctx.run_as.uid is not None:
            # the worktree's git metadata belongs to the agent: let the services user read it
            env.update(
                GIT_CONFIG_COUNT="1",
                GIT_CONFIG_KEY_0="safe.directory",
                GIT_CONFIG_VALUE_0=str(release),
            )
        return env

    async def _build(self, t: DesiredConfig, release: Path) -> tuple[bool, str]:
        built = ownership.is_built(self.ctx.state_dir, self.name, t.svc.commit, t.build_key)
        if not t.svc.spec.build.strip() or built:
            return True, "no build needed"
        self.ctx.event("build", f"build started for {t.svc.commit[:12]}", self.name)
        env = service_env(self.ctx.base_env, t.urls, t.svc, 0)
        env.pop("PORT")
        env.update(self._release_env(release))
        build_log = self._build_log(t)
        self.last_build_log = build_log
        done = await process.run_build(
            t.svc.spec.build, release, env, build_log, self.ctx.run_as, self.ctx.timeouts.build_s
        )
        self.ctx.builds.record(done.finished(self.name))
        if done.ok:
            ownership.mark_built(self.ctx.state_dir, self.name, t.svc.commit, t.build_key)
            self.ctx.event("build", f"build succeeded in {done.cost}", self.name)
        return done.ok, done.reason

    def _mark_running(self, t: DesiredConfig) -> None:
        self.state = "running"
        self.failed_hash = None
        self.last_error = None
        self.failures = 0
        self.restart_at = None
        if t.svc.spec.health and self.health.status != "healthy":
            self.ctx.event("health", "healthy (passed its check at deploy)", self.name)
        self.health = planner.Health("healthy" if t.svc.spec.health else "none")
        self.probe_at = time.monotonic() + (
            t.svc.spec.health.interval_s if t.svc.spec.health else 0
        )

    def _fail(self, t: DesiredConfig, reason: str, kind: str, log_tail: str = "") -> None:
        self.failed_hash = t.config_hash
        self.failed_at = time.monotonic()
        self.failures += 1
        self.last_error = reason
        if self.current is None:
            self.state = "failed"
        else:
            self.state = "running"  # the old release keeps serving
        log.error("%s: %s", self.name, reason)
        self.ctx.event(kind, reason, self.name, commit=t.svc.commit, log_tail=log_tail[-2000:])

    def log_path(self) -> Path:
        return self._log_path()

    def _log_path(self) -> Path:
        return StateLayout(self.ctx.state_dir).logs / self.name / "service.log"

    def _log_tail(self) -> str:
        return process.tail(self._log_path())

    def _start(self, t: DesiredConfig, release: Path, port: int) -> Instance:
        env = service_env(self.ctx.base_env, t.urls, t.svc, port)
        env.update(self._release_env(release))
        popen = process.spawn(
            ["/bin/sh", "-c", t.svc.spec.run], release, env, self._log_path(), self.ctx.run_as
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
            started_at=time.time(),
        )
        self.ctx.store.save_process(rec)
        log.info(
            "%s: started pid %d on port %d (%s)", self.name, popen.pid, port, t.svc.commit[:12]
        )
        return Instance(rec, popen, t)

    async def _wait_ready(self, inst: Instance, t: DesiredConfig) -> tuple[bool, str]:
        hc = t.svc.spec.health
        deadline = time.monotonic() + self.ctx.timeouts.deploy_s
        why = "not ready"
        while time.monotonic() < deadline:
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

    async def _stop(self, inst: Instance, grace_s: float | None = None) -> None:
        await process.stop_group(
            inst.rec.pid,
            inst.rec.start_ticks,
            grace_s or self.ctx.timeouts.stop_grace_s,
            inst.popen,
        )
        self.ctx.store.forget_process(self.name, inst.rec.pid)

    async def _drain_and_stop(self, old: Instance, t: DesiredConfig) -> None:
        """Stop `old` once the proxies (which acknowledged a table without it) report
        nothing in flight to it, or when the service's drain timeout passes."""
        timeout_s = t.svc.spec.drain_timeout_s
        if self.ctx.timeouts.drain_s is not None:
            timeout_s = min(timeout_s, self.ctx.timeouts.drain_s)
        waited, cut = await self.ctx.drain(self.name, old.rec.port, timeout_s)
        if cut:
            self.ctx.event(
                "deploy",
                f"drain of {old.rec.commit[:12]} timed out after {waited:.1f} s: "
                f"{cut} request(s) still open were cut",
                self.name,
                drain_s=round(waited, 3),
                cut=cut,
            )
        else:
            self.ctx.event(
                "deploy",
                f"old release {old.rec.commit[:12]} drained in {waited:.2f} s",
                self.name,
                drain_s=round(waited, 3),
                cut=0,
            )
        await self._stop(old)  # SIGTERM, SIGKILL after the stop timeout

    async def _retire(self) -> None:
        if self.current is not None:
            await self._stop(self.current)
            self.ctx.event("run", "service removed and stopped", self.name)
        self.current = None
        self.state = "stopped"

    # --- supervision -----------------------------------------------------------------
    def _alive(self, inst: Instance) -> bool:
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
        ran_for = time.time() - inst.rec.started_at
        self.failures = failures
        self.restart_at = time.monotonic() + delay_s
        self.state = "backoff"
        self.ctx.store.forget_process(self.name, inst.rec.pid)
        self.ctx.event(
            "crash",
            f"exited with {self.last_exit} after {ran_for:.1f} s; restarting in {delay_s:.1f} s",
            self.name,
            exit=self.last_exit,
            restarts=self.restarts,
            log_tail=self._log_tail()[-1000:],
        )

    async def _restart(self) -> None:
        self.restart_at = None
        old, t = self.current, self.target
        if old is None or t is None:
            return
        # an adopted process has no DesiredConfig of its own: it ran the current one
        target = (
            old.target
            if old.target is not None and old.target.config_hash == old.rec.config_hash
            else t
        )
        self.restarts += 1
        self.current = self._start(target, Path(old.rec.release_dir), old.rec.port)
        self.state = "running"
        self.health = planner.Health(self.health.status, 0)
        hc = target.svc.spec.health
        now = time.monotonic()
        self.probe_at = now + (hc.start_period_s if hc else 0)
        self.grace_until = now + max(hc.start_period_s if hc else 0, self.ctx.timeouts.deploy_s)
        self.ctx.event("run", f"restarted (restart #{self.restarts})", self.name)

    async def _probe(self) -> None:
        inst, t = self.current, self.target
        assert inst is not None and t is not None and t.svc.spec.health is not None
        hc = t.svc.spec.health
        self.probe_at = time.monotonic() + hc.interval_s
        ok, why = await health.probe(inst.rec.port, hc.path, hc.timeout_s)
        starting = time.monotonic() < self.grace_until
        outcome = planner.after_probe(self.health, ok, hc.retries, why, starting=starting)
        if ok:
            self.grace_until = 0.0
        self.health = outcome.health
        if outcome.event:
            self.ctx.event("health", outcome.event, self.name)
        if outcome.restart:
            await self._stop(inst)
            self.last_exit = "stopped: unhealthy"
            self.failures += 1
            self.restart_at = time.monotonic() + self.ctx.backoff.delay(self.failures)
            self.state = "backoff"

    def _prune_releases(self) -> None:
        """Keep the newest `keep_releases` release directories (rollback needs no rebuild)."""
        root = StateLayout(self.ctx.state_dir).releases / self.name
        if not root.is_dir():
            return
        keep = {Path(self.current.rec.release_dir).name} if self.current else set()
        dirs = sorted(
            (d for d in root.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True
        )
        removed = False
        for d in dirs[self.ctx.keep_releases :]:
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)
                ownership.forget_builds(self.ctx.state_dir, self.name, d.name)
                removed = True
        if removed and self.target is not None:
            gitsync.prune_worktrees(
                gitsync.mirror_path(StateLayout(self.ctx.state_dir).git, self.target.svc.spec.repo)
            )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

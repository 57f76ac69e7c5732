"""One worker per service: its own queue, so a slow build never delays another service.

The worker drives its service toward the latest `Target`:

* deploy: sync the repo, check the commit out into a release directory, build (skipped
  when that release was already built), start, wait until ready, then cut over:
  - agent-assigned port: the new process starts beside the old one; once healthy the route
    is swapped and the old one drained and stopped (no gap);
  - fixed port: the route is paused (the proxy holds new requests), the old process stops,
    the new one starts; if it never becomes healthy the old release is started again.
  A failed build or health check leaves the old release serving and records the reason.
* supervise: a crashed process restarts with exponential backoff and jitter.
* health: periodic HTTP probes; `retries` failures in a row mark it unhealthy and restart it.
"""

import asyncio
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any, Protocol

from agent.bus.messages import Route
from agent.reconciler import gitsync, health, process
from agent.reconciler.policy import Backoff, ServiceStatus, failures_after_exit, service_env
from agent.reconciler.process import RunAs
from agent.reconciler.store import ProcessRecord, Store
from agent.schema.document import DesiredService

log = logging.getLogger(__name__)

TICK_S = 0.25
READY_POLL_S = 0.1
SWAP_SETTLE_S = 0.5  # let every proxy receive the new table before draining the old process


@dataclass(frozen=True)
class Target:
    svc: DesiredService
    urls: dict[str, str]
    config_hash: str
    build_key: str


@dataclass
class Instance:
    rec: ProcessRecord
    popen: Popen[bytes] | None  # None when adopted after a reconciler restart
    target: Target | None


@dataclass(frozen=True)
class Timeouts:
    build_s: float = 900.0
    deploy_s: float = 60.0
    drain_s: float = 30.0
    stop_grace_s: float = 10.0


class WorkerContext(Protocol):
    store: Store
    state_dir: Path
    run_as: RunAs
    base_env: dict[str, str]
    timeouts: Timeouts
    backoff: Backoff
    keep_releases: int

    def event(self, type_: str, message: str, service: str | None = None, **extra: Any) -> None: ...
    def routes_changed(self) -> None: ...


class ServiceWorker:
    def __init__(self, name: str, ctx: WorkerContext) -> None:
        self.name = name
        self.ctx = ctx
        self.target: Target | None = None
        self.removed = False
        self.current: Instance | None = None
        self.paused = False
        self.state = "pending"
        self.health = "unknown"
        self.restarts = 0
        self.failures = 0
        self.last_exit: str | None = None
        self.last_error: str | None = None
        self.failed_hash: str | None = None
        self.failed_at = 0.0
        self.next_restart_at: float | None = None
        self.health_fails = 0
        self.next_probe_at = 0.0
        self._wake = asyncio.Event()

    # --- inputs ----------------------------------------------------------------------
    def set_target(self, target: Target | None) -> None:
        if target is None:
            self.removed = True
        else:
            self.target = target
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
        elif self.state == "backoff":
            failed = f"crash loop: {self.last_exit}"
        return ServiceStatus(self.name, self.converged(), failed, self.health == "unhealthy")

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
            "health": self.health,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_error": self.last_error,
        }

    # --- the loop --------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            if self.removed:
                await self._retire()
                return
            if self._needs_deploy():
                await self._deploy(self.target)  # type: ignore[arg-type]
                continue
            self._supervise()
            if self.next_restart_at is not None and time.monotonic() >= self.next_restart_at:
                await self._restart()
            await self._check_health()
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            except TimeoutError:
                pass
            self._wake.clear()

    def _needs_deploy(self) -> bool:
        t = self.target
        if t is None:
            return False
        if self.current is not None and self.current.rec.config_hash == t.config_hash:
            return False
        if self.failed_hash != t.config_hash:
            return True
        # The desired config failed before. With an old release serving, keep it (auto
        # revert) until a new target arrives; with nothing serving, retry with backoff.
        if self.current is not None:
            return False
        return time.monotonic() - self.failed_at >= self.ctx.backoff.delay(self.failures)

    # --- deploy ----------------------------------------------------------------------
    async def _deploy(self, t: Target) -> None:
        spec = t.svc.spec
        self.state = "deploying" if self.current else "building"
        self.ctx.event("deploy", f"deploying {t.svc.commit[:12]}", self.name, commit=t.svc.commit)
        try:
            release = await asyncio.to_thread(self._prepare_release, t)
        except (gitsync.GitError, OSError) as exc:
            self._fail(t, f"git: {exc}", "sync")
            return
        ok, reason = await self._build(t, release)
        if not ok:
            build_log = self._build_log(t)
            self._fail(t, reason, "build", log_tail=process.tail(build_log))
            return
        old = self.current
        if spec.port is not None and old is not None and old.rec.port == spec.port:
            await self._cutover_fixed_port(t, release, old)
        else:
            await self._cutover_new_port(t, release, old)

    def _release_dir(self, t: Target) -> Path:
        return self.ctx.state_dir / "releases" / self.name / t.svc.commit

    def _build_log(self, t: Target) -> Path:
        return (
            self.ctx.state_dir / "logs" / self.name / f"build-{t.svc.commit[:12]}-{t.build_key}.log"
        )

    def _prepare_release(self, t: Target) -> Path:
        mirror = gitsync.ensure_commit(self.ctx.state_dir / "git", t.svc.spec.repo, t.svc.commit)
        release = self._release_dir(t)
        gitsync.checkout_release(mirror, t.svc.commit, release)
        if self.ctx.run_as.uid is not None:
            gitsync.chown_tree(release, self.ctx.run_as.uid, self.ctx.run_as.gid or 0)
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

    async def _build(self, t: Target, release: Path) -> tuple[bool, str]:
        marker = release / f".berth-built-{t.build_key}"
        if not t.svc.spec.build.strip() or marker.exists():
            return True, "no build needed"
        self.ctx.event("build", f"build started for {t.svc.commit[:12]}", self.name)
        env = service_env(self.ctx.base_env, t.urls, t.svc, 0)
        env.pop("PORT")
        env.update(self._release_env(release))
        started = time.monotonic()
        build_log = self._build_log(t)
        ok, reason = await process.run_build(
            t.svc.spec.build, release, env, build_log, self.ctx.run_as, self.ctx.timeouts.build_s
        )
        if ok:
            marker.touch()
            self.ctx.event(
                "build", f"build succeeded in {time.monotonic() - started:.1f} s", self.name
            )
        return ok, reason

    async def _cutover_new_port(self, t: Target, release: Path, old: Instance | None) -> None:
        port = t.svc.spec.port or _free_port()
        self.state = "starting" if old is None else "deploying"
        new = self._start(t, release, port)
        ok, why = await self._wait_ready(new, t)
        if not ok:
            await self._stop(new)
            self._fail(
                t, f"new release never became ready: {why}", "health", log_tail=self._log_tail()
            )
            return
        self.current = new
        self._mark_running(t)
        self.ctx.routes_changed()
        if old is not None:
            await asyncio.sleep(SWAP_SETTLE_S)
            await self._stop(old, grace_s=self.ctx.timeouts.drain_s)
        self.ctx.event(
            "run", f"serving {t.svc.commit[:12]} on port {port}", self.name, commit=t.svc.commit
        )
        await asyncio.to_thread(self._prune_releases)

    async def _cutover_fixed_port(self, t: Target, release: Path, old: Instance) -> None:
        self.paused = True
        self.ctx.routes_changed()
        try:
            await self._stop(old)
            new = self._start(t, release, old.rec.port)
            ok, why = await self._wait_ready(new, t)
            if ok:
                self.current = new
                self._mark_running(t)
                self.ctx.event(
                    "run",
                    f"serving {t.svc.commit[:12]} on port {new.rec.port}",
                    self.name,
                    commit=t.svc.commit,
                )
                return
            await self._stop(new)
            self._fail(
                t, f"new release never became ready: {why}", "health", log_tail=self._log_tail()
            )
            if old.target is not None:  # bring the previous release back
                revived = self._start(old.target, Path(old.rec.release_dir), old.rec.port)
                await self._wait_ready(revived, old.target)
                self.current = revived
                self.state = "running"
            else:
                self.current = None
        finally:
            self.paused = False
            self.ctx.routes_changed()

    def _mark_running(self, t: Target) -> None:
        self.state = "running"
        self.failed_hash = None
        self.last_error = None
        self.failures = 0
        self.next_restart_at = None
        self.health_fails = 0
        self.health = "healthy" if t.svc.spec.health else "none"
        self.next_probe_at = 0.0

    def _fail(self, t: Target, reason: str, kind: str, log_tail: str = "") -> None:
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

    def _log_path(self) -> Path:
        return self.ctx.state_dir / "logs" / self.name / "service.log"

    def _log_tail(self) -> str:
        return process.tail(self._log_path())

    def _start(self, t: Target, release: Path, port: int) -> Instance:
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

    async def _wait_ready(self, inst: Instance, t: Target) -> tuple[bool, str]:
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

    def _supervise(self) -> None:
        inst = self.current
        if inst is None or self.next_restart_at is not None or self._alive(inst):
            return
        ran_for = time.time() - inst.rec.started_at
        self.failures = failures_after_exit(self.failures, ran_for)
        delay = self.ctx.backoff.delay(self.failures)
        self.next_restart_at = time.monotonic() + delay
        self.state = "backoff"
        self.ctx.store.forget_process(self.name, inst.rec.pid)
        self.ctx.event(
            "crash",
            f"exited with {self.last_exit} after {ran_for:.1f} s; restarting in {delay:.1f} s",
            self.name,
            exit=self.last_exit,
            restarts=self.restarts,
            log_tail=self._log_tail()[-1000:],
        )

    async def _restart(self) -> None:
        self.next_restart_at = None
        old = self.current
        t = self.target
        if old is None or t is None:
            return
        target = (
            old.target
            if old.target is not None and old.target.config_hash == old.rec.config_hash
            else t
        )
        self.restarts += 1
        new = self._start(target, Path(old.rec.release_dir), old.rec.port)
        self.current = new
        self.state = "running"
        self.health_fails = 0
        self.next_probe_at = time.monotonic() + (
            target.svc.spec.health.start_period_s if target.svc.spec.health else 0
        )
        self.ctx.event("run", f"restarted (restart #{self.restarts})", self.name)

    async def _check_health(self) -> None:
        inst, t = self.current, self.target
        if inst is None or t is None or self.state != "running":
            return
        hc = t.svc.spec.health if inst.rec.config_hash == t.config_hash else None
        if hc is None:
            if self.health == "unknown":
                self.health = "none"
            return
        now = time.monotonic()
        if now < self.next_probe_at:
            return
        self.next_probe_at = now + hc.interval_s
        ok, why = await health.probe(inst.rec.port, hc.path, hc.timeout_s)
        if ok:
            self.health_fails = 0
            if self.health != "healthy":
                self.health = "healthy"
                self.ctx.event("health", "healthy", self.name)
            return
        self.health_fails += 1
        if self.health_fails < hc.retries:
            return
        if self.health != "unhealthy":
            self.health = "unhealthy"
            self.ctx.event(
                "health", f"unhealthy after {self.health_fails} failed checks: {why}", self.name
            )
        await self._stop(inst)
        self.last_exit = "stopped: unhealthy"
        self.failures += 1
        self.next_restart_at = time.monotonic() + self.ctx.backoff.delay(self.failures)
        self.state = "backoff"

    def _prune_releases(self) -> None:
        """Keep the newest `keep_releases` release directories (rollback needs no rebuild)."""
        root = self.ctx.state_dir / "releases" / self.name
        if not root.is_dir():
            return
        keep = {Path(self.current.rec.release_dir).name} if self.current else set()
        dirs = sorted(
            (d for d in root.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True
        )
        for d in dirs[self.ctx.keep_releases :]:
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

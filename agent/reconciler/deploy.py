"""One deploy of one service: the planner's steps, executed in order (`Deploy.run`).

* agent-assigned port: the new process starts beside the old one; once healthy the route
  is swapped and the old one drained and stopped (no gap);
* fixed port: the route is paused (the proxy holds new requests), the old process drains
  and stops, the new one starts; if it never becomes healthy the old release is started
  again.

Each route change waits for every live proxy's acknowledgement, and an old process is
stopped only once the proxies report nothing in flight to it or the service's
`drain_timeout_s` passed (`ctx.cutover`, `ctx.drain`; docs/reconciler.md). A failed
build or health check leaves the old release serving and records the reason. A sync or
build still running when a newer target arrives is superseded: its git or build process
group is killed and the newer target deploys at once (nothing of the old deploy had
started).
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.reconciler import gitsync, ownership, planner, process, releases
from agent.reconciler.planner import Step, WorkerState
from agent.reconciler.policy import service_env

if TYPE_CHECKING:
    from agent.reconciler.worker import DesiredConfig, ServiceProcess, ServiceWorker

log = logging.getLogger(__name__)


class Deploy:
    def __init__(self, worker: "ServiceWorker", target: "DesiredConfig") -> None:
        self.w = worker
        self.ctx = worker.ctx
        self.desired = target
        self.old: ServiceProcess | None = worker.current
        self.release = Path()
        self.new: ServiceProcess | None = None

    async def run(self) -> None:
        w, t, old = self.w, self.desired, self.old
        plan = planner.deploy_plan(t.svc.spec.port, old.rec.port if old else None)
        w.set_state(WorkerState.DEPLOYING if old else WorkerState.BUILDING)
        self.ctx.event("deploy", f"deploying {t.svc.commit[:12]}", w.name, commit=t.svc.commit)
        for step in plan:
            if step in (Step.SYNC, Step.BUILD):
                result = await self._unless_superseded(
                    self._sync() if step is Step.SYNC else self._build()
                )
                if result is None:
                    self._superseded("sync" if step is Step.SYNC else "build")
                    return
                ok, why = result
            else:
                ok, why = await self._do(step)
            if not ok:
                for back in planner.recovery_plan(
                    step, plan, old_revivable=bool(old and old.desired)
                ):
                    await self._do(back)
                kind = {Step.SYNC: "sync", Step.BUILD: "build"}.get(step, "health")
                tail = process.tail(w.build_log(t)) if step is Step.BUILD else w.log_tail()
                w.fail(t, why, kind, log_tail=tail)
                return
        w.mark_running(t)
        self.ctx.event(
            "run",
            f"serving {t.svc.commit[:12]} on port {w.current.rec.port}",  # type: ignore[union-attr]
            w.name,
            commit=t.svc.commit,
        )
        await asyncio.to_thread(w.prune_releases)

    async def _unless_superseded(
        self, work: Coroutine[Any, Any, tuple[bool, str]]
    ) -> tuple[bool, str] | None:
        """Await `work`, unless a newer target arrives first: then cancel it and answer
        None. (A cancelled build kills its process group.)"""
        task: asyncio.Task[tuple[bool, str]] = asyncio.ensure_future(work)
        while True:
            wake = asyncio.ensure_future(self.w.wake.wait())
            await asyncio.wait((task, wake), return_when=asyncio.FIRST_COMPLETED)
            wake.cancel()
            if task.done():
                return task.result()
            self.w.wake.clear()
            if self.w.outdated(self.desired):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return None

    def _superseded(self, what: str) -> None:
        w, t = self.w, self.desired
        newer = w.desired.svc.commit[:12] if w.desired and not w.removed else "removal"
        w.set_state(WorkerState.RUNNING if w.current is not None else WorkerState.PENDING)
        log.info("%s: %s of %s superseded by %s", w.name, what, t.svc.commit[:12], newer)
        if what == "build":
            with contextlib.suppress(OSError), open(w.build_log(t), "a") as build_log:
                build_log.write(f"\n[berth] build cancelled: superseded by {newer}\n")
        self.ctx.event(
            "build",
            f"{what} of {t.svc.commit[:12]} cancelled: superseded by {newer}",
            w.name,
            commit=t.svc.commit,
        )

    async def _do(self, step: Step) -> tuple[bool, str]:
        """Execute one deploy step; (ok, why not)."""
        w, t, old = self.w, self.desired, self.old
        if step is Step.SYNC:
            return await self._sync()
        elif step is Step.BUILD:
            return await self._build()
        elif step is Step.PAUSE:
            w.paused = True
            await self.ctx.cutover(w.name)  # every proxy holds new requests from now on
        elif step is Step.UNPAUSE:
            w.paused = False
            await self.ctx.cutover(w.name)
        elif step is Step.STOP_OLD and old is not None:
            await self._drain_and_stop(old)  # in-flight requests finish on the old one
        elif step is Step.START_NEW:
            port = t.svc.spec.port or process.free_port()
            w.set_state(WorkerState.STARTING if old is None else WorkerState.DEPLOYING)
            self.new = w.start(t, self.release, port)
        elif step is Step.AWAIT_READY and self.new is not None:
            ok, why = await w.wait_ready(self.new)
            if not ok:
                return False, f"new release never became ready: {why}"
            w.current = self.new
        elif step is Step.SWAP:
            await self.ctx.cutover(w.name)  # no proxy sends new requests to the old one
        elif step is Step.DRAIN_OLD and old is not None:
            await self._drain_and_stop(old)
        elif step is Step.STOP_NEW and self.new is not None:
            await w.stop(self.new)
            if w.current is self.new:
                w.current = old
        elif step is Step.REVIVE_OLD and old is not None and old.desired is not None:
            revived = w.start(old.desired, Path(old.rec.release_dir), old.rec.port)
            await w.wait_ready(revived)
            w.current = revived
            w.set_state(WorkerState.RUNNING)
        return True, "ok"

    async def _sync(self) -> tuple[bool, str]:
        """Mirror and check out the target's commit. Cancelled (superseded), it stops git
        and returns only once the sync thread has let go of the mirror and release."""
        cancel = threading.Event()
        ctx, svc = self.ctx, self.desired.svc
        sync = asyncio.ensure_future(
            asyncio.to_thread(
                releases.prepare,
                ctx.state_dir,
                svc,
                ctx.file_repo_roots,
                ctx.timeouts.git,
                ctx.run_as,
                cancel,
            )  # fmt: skip
        )
        try:
            self.release = await asyncio.shield(sync)
        except asyncio.CancelledError:
            cancel.set()
            with contextlib.suppress(Exception):
                await sync
            raise
        except (gitsync.GitError, OSError) as exc:
            return False, f"git: {exc}"
        return True, "ok"

    async def _build(self) -> tuple[bool, str]:
        w, t, ctx = self.w, self.desired, self.ctx
        built = ownership.is_built(ctx.state_dir, w.name, t.svc.commit, t.build_key)
        if not t.svc.spec.build.strip() or built:
            return True, "no build needed"
        ctx.event("build", f"build started for {t.svc.commit[:12]}", w.name)
        env = service_env(ctx.base_env, t.urls, t.svc, 0)
        env.pop("PORT")
        env.update(releases.env(self.release, ctx.run_as))
        build_log = w.build_log(t)
        w.last_build_log = build_log
        done = await process.run_build(
            t.svc.spec.build, self.release, env, build_log, ctx.run_as, ctx.timeouts.build_s
        )
        ctx.builds.record(done.finished(w.name))
        if done.ok:
            ownership.mark_built(ctx.state_dir, w.name, t.svc.commit, t.build_key)
            ctx.event("build", f"build succeeded in {done.cost}", w.name)
        return done.ok, done.reason

    async def _drain_and_stop(self, old: "ServiceProcess") -> None:
        """Stop `old` once the proxies (which acknowledged a table without it) report
        nothing in flight to it, or when the service's drain timeout passes."""
        w, ctx = self.w, self.ctx
        timeout_s = self.desired.svc.spec.drain_timeout_s
        if ctx.timeouts.drain_s is not None:
            timeout_s = min(timeout_s, ctx.timeouts.drain_s)
        waited, cut = await ctx.drain(w.name, old.rec.port, timeout_s)
        if cut:
            ctx.event(
                "deploy",
                f"drain of {old.rec.commit[:12]} timed out after {waited:.1f} s: "
                f"{cut} request(s) still open were cut",
                w.name,
                drain_s=round(waited, 3),
                cut=cut,
            )
        else:
            ctx.event(
                "deploy",
                f"old release {old.rec.commit[:12]} drained in {waited:.2f} s",
                w.name,
                drain_s=round(waited, 3),
                cut=0,
            )
        await w.stop(old)  # SIGTERM, SIGKILL after the stop timeout

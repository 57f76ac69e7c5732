"""The reconciler: hand each service of the desired state to its worker, keep the stack's
state, and say it in a heartbeat. Its parts: `uplink` (the control plane: poll, report,
logs), `routes` (the route table and cutover by the proxies' acknowledgement), `worker`
(one per service), `adopt` (processes a previous reconciler left running).

Order of one reconcile (spec §10): validate the document (hash and schema; a bad one is
refused with a `config` event and the previous state keeps running), then each service's
worker syncs, builds, starts or restarts and health-checks on its own queue; removed
services are stopped; the stack is marked applied, applying or degraded; heartbeats
(full snapshots) and outbox events go back to the control plane.

Without the control plane nothing changes on the server: the last valid document is kept
in SQLite and applied at start-up, and running services are re-adopted, not restarted.
"""

import asyncio
import logging
import os
from dataclasses import replace
from typing import Any

from agent.bus.messages import Route
from agent.bus.publisher import Publisher
from agent.bus.reports import ReportReceiver
from agent.metrics.builds import BuildLog
from agent.notify import Notifier
from agent.reconciler import adopt
from agent.reconciler.clock import SYSTEM_CLOCK, Clock
from agent.reconciler.cpclient import AGENT_VERSION
from agent.reconciler.firewalllink import FirewallLink
from agent.reconciler.logfiles import LogSource, rotate_if_large
from agent.reconciler.metricsship import ship_metrics
from agent.reconciler.policy import (
    Backoff,
    build_key,
    carry_config_hash,
    config_hash,
    heartbeat_fingerprint,
    service_urls,
    stack_state,
)
from agent.reconciler.process import RunAs
from agent.reconciler.redact import Redactor
from agent.reconciler.routes import RouteKeeper
from agent.reconciler.secretmemory import SecretMemory
from agent.reconciler.store import Store
from agent.reconciler.uplink import Uplink
from agent.reconciler.worker import DesiredConfig, ServiceWorker, Timeouts
from agent.schema.document import DesiredState, parse_document
from agent.schema.errors import ValidationError
from agent.schema.report import Heartbeat
from agent.settings import AgentSettings

log = logging.getLogger(__name__)

WORKER_RETRY_S = 5.0
HOUSEKEEPING_INTERVAL_S = 10.0
STATUS_TICK_S = 0.25  # how often the stack's state is re-derived from the workers
BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ")


class Reconciler:
    """Local reconciliation: one worker per service, the stack's state, the heartbeat it
    makes. The line to the control plane is `self.uplink`; the route table and cutover
    by acknowledgement are `self.routes`."""

    def __init__(
        self,
        settings: AgentSettings,
        timeouts: Timeouts | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.state_dir = settings.state_dir
        self.store = Store(settings.state_layout.store)
        self.run_as = RunAs.for_agent(settings.services_user)
        self.file_repo_roots = settings.file_repo_roots
        self.base_env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
        self.base_env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        self.timeouts = timeouts or Timeouts(
            build_s=settings.build_timeout_s,
            deploy_s=settings.deploy_timeout_s,
            drain_s=settings.drain_timeout_s,
        )
        self.backoff = Backoff()
        self.keep_releases = settings.keep_releases
        self.builds = BuildLog()  # finished builds, for the metrics (issue 19)
        self.publisher = Publisher(settings.bus)
        self.notifier = Notifier()
        self.desired: DesiredState | None = None
        self.workers: dict[str, ServiceWorker] = {}
        self._worker_tasks: dict[str, asyncio.Task[None]] = {}
        self.routes = RouteKeeper(
            self.publisher, ReportReceiver(settings.bus), self._routes_now, self.event, clock
        )
        self.uplink = Uplink(settings, self.store, self, clock)
        self.firewall_link = FirewallLink(settings, self.event)
        self._security_task: asyncio.Task[None] | None = None
        self.secrets = SecretMemory(self.store)
        self._applied_version: int | None = None
        # what the status loop saw last; a change wakes the uplink's report loop (and so
        # does a new event), which sends a heartbeat when it differs from the last sent
        self._status_print = ""

    @property
    def redactor(self) -> Redactor:
        return self.secrets.redactor

    # --- WorkerContext -----------------------------------------------------------------
    def event(self, type_: str, message: str, service: str | None = None, **extra: Any) -> None:
        redactor = self.secrets.redactor
        if redactor:  # events are shipped: no secret value in them
            message = redactor.redact_text(message)
            extra = {
                k: redactor.redact_text(v) if isinstance(v, str) else v for k, v in extra.items()
            }
        self.store.add_event(type_, message, service, **extra)
        self.uplink.report_wanted.set()

    def routes_changed(self) -> None:
        self.routes.routes_changed()

    async def cutover(self, service: str) -> None:
        await self.routes.cutover(service)

    async def drain(self, service: str, port: int, timeout_s: float) -> tuple[float, int]:
        return await self.routes.drain(service, port, timeout_s)

    def _routes_now(self) -> tuple[DesiredState | None, list[Route]]:
        return self.desired, [w.route() for w in self.workers.values()]

    # --- start-up ------------------------------------------------------------------------
    async def run(self) -> int:
        self._check_layout()
        await self.publisher.start()
        self.routes.reports.start()
        cached = self._cached_desired()
        await self._adopt_processes(cached)
        if cached is not None:
            self.apply(cached)
            log.info("applying cached desired state v%s", cached.version)
        await self.routes.publish()
        self.notifier.ready(self.summary())
        tasks = [
            asyncio.create_task(self.routes.route_loop(), name="routes"),
            asyncio.create_task(self.routes.proxy_loop(), name="proxy-reports"),
            asyncio.create_task(self.notifier.watchdog_loop(), name="watchdog"),
            asyncio.create_task(self._status_loop(), name="status"),
            asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
        ]
        if self.settings.control_plane or self.settings.metrics_bind:
            tasks.append(
                asyncio.create_task(
                    ship_metrics(
                        self.settings.bus,
                        self.store,
                        self.settings.state_dir,
                        self.uplink.client_ready if self.settings.control_plane else None,
                        serve_on=self.settings.metrics_bind,
                        builds=self.builds,
                        restarts=lambda: {n: w.restarts for n, w in self.workers.items()},
                    ),
                    name="metrics",
                )
            )
        if self.settings.control_plane:
            tasks += [asyncio.create_task(t, name="uplink") for t in self.uplink.tasks()]
        else:
            log.warning("no --control-plane given: serving the cached desired state only")
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        return 0

    def _check_layout(self) -> None:
        """User code runs as an unprivileged user: it must be able to reach its releases."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.run_as.uid is None:
            return
        for d in (self.state_dir, *self.state_dir.parents):
            st = d.stat()
            if not st.st_mode & 0o001 and st.st_uid != self.run_as.uid:
                raise SystemExit(
                    f"{d} is not searchable by the services user {self.run_as.name!r} "
                    f"(mode {oct(st.st_mode & 0o777)}); choose a --state-dir under a world-searchable path"
                )
        for path in (self.settings.state_layout.releases, self.settings.state_layout.logs):
            path.mkdir(exist_ok=True)
            path.chmod(0o755)

    def _cached_desired(self) -> DesiredState | None:
        raw = self.store.get_json("desired")
        if raw is None:
            return None
        try:
            return parse_document(raw)
        except ValidationError as exc:
            log.error("cached desired state is invalid, ignoring it: %s", exc)
            return None

    async def _adopt_processes(self, cached: DesiredState | None) -> None:
        """Take over the services a previous reconciler left running (`adopt`)."""
        kept = await adopt.survivors(self.store, cached, self.timeouts.stop_grace_s)
        for service, rec in kept.items():
            carried = carry_config_hash(rec, cached)
            if carried != rec:  # recorded by an agent before the canonical encoding
                self.store.save_process(carried)
            self._worker(service).adopt(carried)

    def _worker(self, name: str) -> ServiceWorker:
        if name not in self.workers:
            worker = ServiceWorker(name, self)
            self.workers[name] = worker
            self._worker_tasks[name] = asyncio.create_task(
                self._run_worker(worker), name=f"service-{name}"
            )
        return self.workers[name]

    async def _run_worker(self, worker: ServiceWorker) -> None:
        try:
            while True:
                try:
                    await worker.run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug in one service's worker must not stop the others
                    log.exception(
                        "worker for %s failed; resuming in %.0f s", worker.name, WORKER_RETRY_S
                    )
                    self.event(
                        "run",
                        "internal error in the service worker; see the agent log",
                        worker.name,
                    )
                    await asyncio.sleep(WORKER_RETRY_S)
        finally:
            if worker.removed:
                self.workers.pop(worker.name, None)
                self._worker_tasks.pop(worker.name, None)
                self.routes_changed()

    # --- applying ------------------------------------------------------------------------
    def apply(self, desired: DesiredState) -> None:
        previous = self.desired
        self.desired = desired
        self.secrets.learn(desired)
        urls = service_urls(desired)
        for svc in desired.services:
            target = DesiredConfig(
                svc=svc, urls=urls, config_hash=config_hash(svc, urls), build_key=build_key(svc)
            )
            self._worker(svc.name).set_desired(target)
        wanted = {s.name for s in desired.services}
        for name, worker in list(self.workers.items()):
            if name not in wanted:
                worker.set_desired(None)
        if previous is None or previous.hash != desired.hash:
            self.event(
                "config",
                f"applying desired state v{desired.version}",
                version=desired.version,
                hash=desired.hash,
            )
        self.routes_changed()
        mode, port = desired.stack.security_mode, desired.stack.proxy_port
        if previous is None or (previous.stack.security_mode, previous.stack.proxy_port) != (
            mode,
            port,
        ):
            if self._security_task is not None:
                self._security_task.cancel()
            self._security_task = asyncio.create_task(
                self.firewall_link.ensure(mode, port, self.uplink.round_trip), name="security"
            )

    def accept_document(self, doc: dict[str, Any]) -> None:
        try:
            desired = parse_document(doc)
        except ValidationError as exc:
            log.error("refusing desired state: %s", exc)
            self.event("config", f"refused desired state: {exc}", field=exc.field)
            return
        if self.desired is not None and desired.hash == self.desired.hash:
            return
        self.store.put_json("desired", doc)
        self.apply(desired)

    # --- status --------------------------------------------------------------------------
    def stack_status(self) -> tuple[str, list[str]]:
        if self.desired is None:
            return "pending", ["no desired state yet"]
        return stack_state(w.status() for w in self.workers.values() if not w.removed)

    def summary(self) -> str:
        state, reasons = self.stack_status()
        version = self.desired.version if self.desired else "-"
        return f"v{version} {state}; {len(self.workers)} services" + (
            f"; {reasons[0]}" if reasons else ""
        )

    async def _status_loop(self) -> None:
        last = None
        while True:
            state, reasons = self.stack_status()
            if (
                self.desired is not None
                and state == "applied"
                and self._applied_version != self.desired.version
            ):
                self._applied_version = self.desired.version
                self.store.put("applied_version", str(self.desired.version))
            current = (state, tuple(reasons), self.desired.version if self.desired else None)
            if current != last:
                last = current
                self.notifier.status(self.summary())
                if self.desired is not None:
                    log.info("stack v%s %s %s", self.desired.version, state, "; ".join(reasons))
                    self.event(
                        "stack",
                        f"v{self.desired.version} {state}"
                        + (f": {'; '.join(reasons)}" if reasons else ""),
                        state=state,
                        version=self.desired.version,
                    )
            status_print = heartbeat_fingerprint(self.heartbeat().to_json())
            if status_print != self._status_print:
                self._status_print = status_print
                self.uplink.report_wanted.set()  # applied, degraded, a crash, health: report it now
            await asyncio.sleep(STATUS_TICK_S)

    def heartbeat(self) -> Heartbeat:
        """The snapshot the uplink sends: stack state, every service, firewall, upgrade."""
        state, reasons = self.stack_status()
        applied = self.store.get("applied_version")
        redact = self.secrets.redactor.redact_text
        services = []
        for w in self.workers.values():
            snap = w.snapshot()
            if snap.last_error is not None:
                snap = replace(snap, last_error=redact(snap.last_error))
            services.append(snap)
        return Heartbeat(
            agent_version=AGENT_VERSION,
            applied_version=int(applied) if applied else None,
            desired_version=self.desired.version if self.desired else None,
            state=state,
            reasons=tuple(redact(r) for r in reasons),
            services=tuple(services),
            security=self.firewall_link.status,
            # the last `berth agent upgrade` (or install.sh re-run) and how it ended
            upgrade=self.store.get_json("upgrade"),
        )

    def log_sources(self) -> list[LogSource]:
        """Every service's run log and its last build's log (for the uplink to ship)."""
        sources = []
        for w in list(self.workers.values()):
            commit = w.current.rec.commit if w.current else None
            sources.append(LogSource(w.name, "run", commit, w.log_path()))
            if w.last_build_log is not None:
                sources.append(LogSource(w.name, "build", commit, w.last_build_log))
        return sources

    async def _housekeeping_loop(self) -> None:
        """Rotate service logs by size; refresh the firewall status for heartbeats."""
        while True:
            for worker in list(self.workers.values()):
                await asyncio.to_thread(rotate_if_large, worker.log_path())
            await self.firewall_link.refresh(
                self.desired.stack.security_mode if self.desired else None
            )
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)


def run_reconciler(settings: AgentSettings) -> int:
    """Run the reconciler on a uvloop event loop until it is stopped (blocks)."""
    import uvloop

    return uvloop.run(Reconciler(settings).run())

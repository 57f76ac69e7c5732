"""The reconciler: pull desired state, hand each service to its worker, publish routes,
report.

Order of one reconcile (spec §10): validate the document (hash and schema; a bad one is
refused with a `config` event and the previous state keeps running), then each service's
worker syncs, builds, starts or restarts and health-checks on its own queue; removed
services are stopped; the stack is marked applied, applying or degraded; heartbeats
(full snapshots) and outbox events go back to the control plane.

Without the control plane nothing changes on the server: the last valid document is kept
in SQLite and applied at start-up, and running services are re-adopted, not restarted.
"""

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from agent.bus.messages import ROUTES_TOPIC
from agent.bus.publisher import Publisher
from agent.bus.reports import ReportReceiver
from agent.metrics.builds import BuildLog
from agent.notify import Notifier
from agent.reconciler import health, process, upgraderequest
from agent.reconciler.acks import ProxyRegistry, drain_decision
from agent.reconciler.admin import save_registration
from agent.reconciler.cpclient import (
    AGENT_VERSION,
    ControlPlaneClient,
    Rejected,
    Throttled,
    Unreachable,
)
from agent.reconciler.logfiles import LogCursor, rotate_if_large
from agent.reconciler.metricsship import ship_metrics
from agent.reconciler.policy import (
    CONTROL_PLANE_RETRY,
    Backoff,
    build_key,
    carry_config_hash,
    config_hash,
    heartbeat_fingerprint,
    heartbeat_interval,
    heartbeat_wait,
    route_table,
    service_urls,
    stack_state,
)
from agent.reconciler.process import RunAs
from agent.reconciler.redact import Redactor
from agent.reconciler.security import Security
from agent.reconciler.store import ProcessRecord, Store
from agent.reconciler.worker import DesiredConfig, ServiceWorker, Timeouts
from agent.schema.document import DesiredState, parse_document
from agent.schema.errors import ValidationError
from agent.settings import AgentSettings

log = logging.getLogger(__name__)

LONG_POLL_S = 25.0
ACK_TIMEOUT_S = 5.0  # a swap waits this long for every live proxy's acknowledgement
FACT_RECHECK_S = 0.5  # re-check liveness while waiting (a silent proxy is forgotten)
WORKER_RETRY_S = 5.0
HOUSEKEEPING_INTERVAL_S = 10.0
LOG_SHIP_INTERVAL_S = 1.0
STATUS_TICK_S = 0.25  # how often the stack's state is re-derived from the workers
BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ")
REDACT_KEY = "redact_values"  # store key: [[name, value], ...], newest first
REDACT_REMEMBERED = 200  # current values plus this many earlier ones stay redacted


class Reconciler:
    def __init__(self, settings: AgentSettings, timeouts: Timeouts | None = None) -> None:
        self.settings = settings
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
        self._routes_dirty = asyncio.Event()
        self._route_seq = 0
        # cutover by acknowledgement: route changes asked for / published, and what the
        # proxies report back (each report and each publication notifies `_facts`)
        self._routes_wanted = 0
        self._routes_published = 0
        self._published_version: tuple[int, int] = (0, 0)
        self.proxies = ProxyRegistry()
        self.reports = ReportReceiver(settings.bus)
        self._facts = asyncio.Condition()
        self._client: ControlPlaneClient | None = None
        self._client_lock = asyncio.Lock()
        self.security = Security(settings, self.event)
        self._security_task: asyncio.Task[None] | None = None
        self._log_cursor = LogCursor()
        # secret values known lately, kept in the (0600) store: output of an old release,
        # shipped even after our restart, may still hold a value that was changed since
        self._secret_values = {(str(n), str(v)) for n, v in self.store.get_json(REDACT_KEY) or []}
        self._redactor = Redactor(sorted(self._secret_values))
        self._applied_version: int | None = None
        self._events_resume_at = 0.0  # monotonic: the control plane asked us to wait
        self._heartbeat_interval_s = heartbeat_interval(None)
        # what the status loop saw last; a change wakes the report loop (and so does a
        # new event), which sends a heartbeat when it differs from the one it sent last
        self._status_print = ""
        self._report_wanted = asyncio.Event()

    # --- WorkerContext -----------------------------------------------------------------
    def event(self, type_: str, message: str, service: str | None = None, **extra: Any) -> None:
        if self._redactor:  # events are shipped: no secret value in them
            message = self._redactor.redact_text(message)
            extra = {
                k: self._redactor.redact_text(v) if isinstance(v, str) else v
                for k, v in extra.items()
            }
        self.store.add_event(type_, message, service, **extra)
        self._report_wanted.set()

    def routes_changed(self) -> None:
        self._routes_wanted += 1
        self._routes_dirty.set()

    async def cutover(self, service: str) -> None:
        """Publish the routes as they are now and wait until every live proxy applied
        them (bounded by `ACK_TIMEOUT_S`; the proxies that did not answer are named in
        an event)."""
        self.routes_changed()
        wanted = self._routes_wanted
        started = time.monotonic()
        deadline = started + ACK_TIMEOUT_S
        async with self._facts:
            while self._routes_published < wanted:
                await self._facts.wait()
            version = self._published_version
            while missing := self.proxies.missing(version, time.monotonic()):
                left = deadline - time.monotonic()
                if left <= 0:
                    self.event(
                        "deploy",
                        f"proxies {', '.join(missing)} did not acknowledge routes "
                        f"{version[0]}.{version[1]} within {ACK_TIMEOUT_S:g} s; going on",
                        service,
                        proxies=missing,
                    )
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._facts.wait(), min(left, FACT_RECHECK_S))
        log.info(
            "%s: routes %s.%s acknowledged by %d proxies in %.3f s",
            service,
            *version,
            len(self.proxies.live(time.monotonic())),
            time.monotonic() - started,
        )

    async def drain(self, service: str, port: int, timeout_s: float) -> tuple[float, int]:
        """Wait until the proxies report nothing in flight to `port` or `timeout_s`
        passes; (seconds waited, requests still open)."""
        started = time.monotonic()
        async with self._facts:
            while True:
                now = time.monotonic()
                decision = drain_decision(
                    self.proxies.in_flight(port, now), started, now, timeout_s
                )
                if decision.stop:
                    return now - started, decision.cut
                left = started + timeout_s - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._facts.wait(), min(left, FACT_RECHECK_S))

    async def _proxy_loop(self) -> None:
        while True:
            report = await self.reports.receive()
            if report is None:
                continue
            if self.proxies.report(report, time.monotonic()):
                log.info("proxy %s announced itself (routes %s)", report.proxy, report.version)
                self.event("proxy", f"proxy {report.proxy} is live")  # e.g. after a restart
            elif report.gone:
                self.event("proxy", f"proxy {report.proxy} stopped")
            async with self._facts:
                self._facts.notify_all()

    # --- start-up ------------------------------------------------------------------------
    async def run(self) -> int:
        self._check_layout()
        await self.publisher.start()
        self.reports.start()
        cached = self._cached_desired()
        await self._adopt_processes(cached)
        if cached is not None:
            self.apply(cached)
            log.info("applying cached desired state v%s", cached.version)
        await self._publish_routes()
        self.notifier.ready(self.summary())
        tasks = [
            asyncio.create_task(self._route_loop(), name="routes"),
            asyncio.create_task(self._proxy_loop(), name="proxy-reports"),
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
                        self._client_ready if self.settings.control_plane else None,
                        serve_on=self.settings.metrics_bind,
                        builds=self.builds,
                        restarts=lambda: {n: w.restarts for n, w in self.workers.items()},
                    ),
                    name="metrics",
                )
            )
        if self.settings.control_plane:
            tasks += [
                asyncio.create_task(self._poll_loop(), name="poll"),
                asyncio.create_task(self._report_loop(), name="report"),
                asyncio.create_task(self._log_loop(), name="logs"),
            ]
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
        """Take over the services a previous reconciler left running (they never stopped).

        Two live processes of one service mean we died mid-cutover: keep the newer only
        if it is ready (it was already serving, or about to); otherwise it may not even
        listen yet, so keep the older one and let the planner redo the deploy (its
        release is built already).
        """
        live: dict[str, list[ProcessRecord]] = {}
        for rec in self.store.processes():  # oldest first
            if process.is_alive(rec.pid, rec.start_ticks):
                live.setdefault(rec.service, []).append(rec)
            else:
                self.store.forget_process(rec.service, rec.pid)
        for service, recs in live.items():
            keep = recs[-1]
            if len(recs) > 1 and not await self._ready(keep, cached):
                keep = recs[-2]
            for rec in recs:
                if rec is not keep:
                    log.info(
                        "%s: stopping pid %d left from an interrupted cutover", service, rec.pid
                    )
                    await process.stop_group(rec.pid, rec.start_ticks, self.timeouts.stop_grace_s)
                    self.store.forget_process(rec.service, rec.pid)
            carried = carry_config_hash(keep, cached)
            if carried != keep:  # recorded by an agent before the canonical encoding
                self.store.save_process(carried)
            self._worker(service).adopt(carried)

    async def _ready(self, rec: ProcessRecord, cached: DesiredState | None) -> bool:
        svc = cached.service(rec.service) if cached else None
        hc = svc.spec.health if svc else None
        if hc is not None:
            ok, _ = await health.probe(rec.port, hc.path, hc.timeout_s)
            return ok
        return await health.port_open(rec.port)

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
        self._learn_secrets(desired)
        urls = service_urls(desired)
        for svc in desired.services:
            target = DesiredConfig(
                svc=svc, urls=urls, config_hash=config_hash(svc, urls), build_key=build_key(svc)
            )
            self._worker(svc.name).set_target(target)
        wanted = {s.name for s in desired.services}
        for name, worker in list(self.workers.items()):
            if name not in wanted:
                worker.set_target(None)
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
                self.security.ensure(mode, port, self._round_trip), name="security"
            )

    async def _round_trip(self) -> bool:
        """One successful call to the control plane (it confirms a firewall change)."""
        if not self.settings.control_plane:
            return True
        try:
            client = await self._client_ready()
            await asyncio.to_thread(client.heartbeat, self.heartbeat())
            return True
        except (Unreachable, Rejected) as exc:
            log.warning("control plane round trip failed: %s", exc)
            return False

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

    # --- routes --------------------------------------------------------------------------
    async def _publish_routes(self) -> None:
        wanted = self._routes_wanted  # every change asked for so far is in this table
        self._route_seq += 1
        table = route_table(
            (self.publisher.epoch, self._route_seq),
            self.desired,
            (w.route() for w in self.workers.values()),
        )
        await self.publisher.publish(ROUTES_TOPIC, table.to_json())
        async with self._facts:
            self._routes_published = wanted
            self._published_version = table.version
            self._facts.notify_all()

    async def _route_loop(self) -> None:
        while True:
            await self._routes_dirty.wait()
            self._routes_dirty.clear()
            await self._publish_routes()

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
            status_print = heartbeat_fingerprint(self.heartbeat())
            if status_print != self._status_print:
                self._status_print = status_print
                self._report_wanted.set()  # applied, degraded, a crash, health: report it now
            await asyncio.sleep(STATUS_TICK_S)

    def heartbeat(self) -> dict[str, Any]:
        state, reasons = self.stack_status()
        applied = self.store.get("applied_version")
        return {
            "agent_version": AGENT_VERSION,
            "applied_version": int(applied) if applied else None,
            "desired_version": self.desired.version if self.desired else None,
            "state": state,
            "reasons": [self._redactor.redact_text(r) for r in reasons],
            "services": [
                {**s, "last_error": self._redactor.redact_text(s["last_error"])}
                if isinstance(s.get("last_error"), str)
                else s
                for s in (w.snapshot() for w in self.workers.values())
            ],
            "security": self.security.status,
            # the last `berth agent upgrade` (or install.sh re-run) and how it ended
            "upgrade": self.store.get_json("upgrade"),
        }

    async def _housekeeping_loop(self) -> None:
        """Rotate service logs by size; refresh the firewall status for heartbeats."""
        while True:
            for worker in list(self.workers.values()):
                await asyncio.to_thread(rotate_if_large, worker.log_path())
            await self.security.refresh(self.desired.stack.security_mode if self.desired else None)
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)

    async def _log_loop(self) -> None:
        """Ship new service and build output to the control plane (for the dashboard)."""
        client = await self._client_ready()
        while True:
            await asyncio.sleep(LOG_SHIP_INTERVAL_S)
            chunks, advances = await asyncio.to_thread(self._collect_logs)
            if not chunks:
                continue
            try:
                await asyncio.to_thread(client.send_logs, chunks)
            except Rejected as exc:
                if exc.status == 404:
                    log.info("this control plane takes no logs (older version); not shipping them")
                    return
                log.warning("log shipping refused: %s", exc)
                continue
            except Throttled as exc:  # offsets unchanged: sent again after the wait
                log.warning("log shipping throttled: %s", exc)
                await asyncio.sleep(exc.retry_after_s)
                continue
            except Unreachable:
                continue  # offsets unchanged: sent again next time
            for path, offset in advances:
                self._log_cursor.advance(path, offset)

    def _learn_secrets(self, desired: DesiredState) -> None:
        known = {
            (name, s.value)
            for svc in desired.services
            for name, s in svc.spec.secrets.items()
            if s.value is not None
        }
        if not known <= self._secret_values:
            older = [p for p in self.store.get_json(REDACT_KEY) or [] if tuple(p) not in known]
            remembered = [*sorted(known), *older][:REDACT_REMEMBERED]
            self.store.put_json(REDACT_KEY, remembered)
            self._secret_values = known | {(str(n), str(v)) for n, v in remembered}
            self._redactor = Redactor(sorted(self._secret_values))

    def _collect_logs(self) -> tuple[list[dict[str, Any]], list[tuple[Path, int]]]:
        chunks: list[dict[str, Any]] = []
        advances: list[tuple[Path, int]] = []
        for worker in list(self.workers.values()):
            commit = worker.current.rec.commit if worker.current else None
            sources = [("run", worker.log_path())]
            if worker.last_build_log is not None:
                sources.append(("build", worker.last_build_log))
            for stream, path in sources:
                new = self._log_cursor.read_new(path, self._redactor)
                if new is not None:
                    chunks.append(
                        {"service": worker.name, "stream": stream, "commit": commit, "data": new[0]}
                    )
                    advances.append((path, new[1]))
        return chunks, advances

    # --- control plane -------------------------------------------------------------------
    async def _client_ready(self) -> ControlPlaneClient:
        """Our credential, registering once with the install token if we have none."""
        async with self._client_lock:  # the poll and report loops both start here
            if self._client is None:
                self._client = await self._register()
            return self._client

    async def _register(self) -> ControlPlaneClient:
        assert self.settings.control_plane
        credential = self.store.get("credential")
        failures = 0
        while credential is None:
            if not self.settings.token:
                raise SystemExit("not registered yet: pass --token with an install token")
            try:
                reg = await asyncio.to_thread(
                    ControlPlaneClient(self.settings.control_plane).register, self.settings.token
                )
            except Unreachable as exc:
                failures += 1
                delay = CONTROL_PLANE_RETRY.delay(failures)
                log.warning("control plane unreachable, retrying in %.1f s: %s", delay, exc)
                await asyncio.sleep(delay)
                continue
            except Rejected as exc:
                raise SystemExit(f"registration refused: {exc}") from exc
            save_registration(self.store, reg)
            os.chmod(self.settings.state_layout.store, 0o600)
            credential = reg.credential
            log.info("registered as instance %s of stack %s", reg.instance_id, reg.stack_id)
        return ControlPlaneClient(self.settings.control_plane, credential)

    async def _poll_loop(self) -> None:
        client = await self._client_ready()
        failures = 0
        while True:
            etag = self.desired.hash if self.desired else None
            started = time.monotonic()
            # a change wakes the long poll at once; the poll interval only bounds how late
            # a missed wake-up (or a server without long polling) is noticed
            interval = self.desired.stack.poll_interval_s if self.desired else 5.0
            try:
                fetched = await asyncio.to_thread(
                    client.fetch_desired, etag, max(1.0, min(LONG_POLL_S, interval))
                )
            except Unreachable as exc:
                failures += 1
                delay = CONTROL_PLANE_RETRY.delay(failures)
                log.warning(
                    "desired state: control plane unreachable, retrying in %.1f s: %s", delay, exc
                )
                await asyncio.sleep(delay)
                continue
            except Rejected as exc:
                log.error("desired state refused (credential revoked?): %s", exc)
                await asyncio.sleep(CONTROL_PLANE_RETRY.cap_s)
                continue
            failures = 0
            if fetched.changed and fetched.document is not None:
                self.accept_document(fetched.document)
            elif time.monotonic() - started < 1.0:
                # the server answered at once: no long poll there, so poll at the interval
                await asyncio.sleep(interval)

    async def _report_loop(self) -> None:
        """Heartbeats and events. A heartbeat goes as soon as the state changes (at most
        every `HEARTBEAT_MIN_GAP_S`) and otherwise every heartbeat interval, which the
        control plane announces (it judges "stale" and "offline" by the same interval).
        The heartbeat goes before the events: an acknowledged event implies it arrived."""
        client = await self._client_ready()
        last_sent = -float("inf")
        sent_print: str | None = None
        failures = 0
        while True:
            self._report_wanted.clear()
            try:
                beat = self.heartbeat()
                beat_print = heartbeat_fingerprint(beat)
                wait = heartbeat_wait(
                    time.monotonic(), last_sent, self._heartbeat_interval_s,
                    beat_print != sent_print,
                )  # fmt: skip
                if wait <= 0:
                    answer = await asyncio.to_thread(client.heartbeat, beat)
                    last_sent, sent_print = time.monotonic(), beat_print
                    self._heartbeat_interval_s = heartbeat_interval(
                        answer.get("heartbeat_interval_s")
                    )
                    wait = self._heartbeat_interval_s
                    self._maybe_request_upgrade(answer)
                await self._flush_events(client)
                failures = 0
            except (Unreachable, Rejected) as exc:
                # events wait in the outbox; back off so an outage is not a log flood
                failures += 1
                delay = CONTROL_PLANE_RETRY.delay(failures)
                log.warning("report failed, retrying in %.1f s: %s", delay, exc)
                await asyncio.sleep(delay)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_wanted.wait(), max(0.01, wait))

    def _maybe_request_upgrade(self, reply: dict[str, Any]) -> None:
        """The control plane's rolling upgrade says it is our turn: ask berth-upgrade.path."""
        target = upgraderequest.wanted(reply, AGENT_VERSION, self.store.get_json("upgrade"))
        if target is not None and upgraderequest.request(self.settings.state_dir, target):
            log.info("the control plane asks for agent %s: upgrade requested", target)
            self.event("upgrade", f"the control plane's rolling upgrade asks for {target}",
                       to=target)  # fmt: skip

    async def _flush_events(self, client: ControlPlaneClient) -> None:
        """Send the outbox; on 429 keep it and wait as asked (heartbeats go on meanwhile)."""
        while time.monotonic() >= self._events_resume_at:
            batch = self.store.pending_events()
            if not batch:
                return
            try:
                accepted = await asyncio.to_thread(client.send_events, batch)
            except Throttled as exc:
                log.warning("events throttled, keeping them: %s", exc)
                self._events_resume_at = time.monotonic() + exc.retry_after_s
                return
            self.store.ack_events(accepted)
            if len(accepted) < len(batch):
                return


def run_reconciler(settings: AgentSettings) -> int:
    """Run the reconciler on a uvloop event loop until it is stopped (blocks)."""
    import uvloop

    return uvloop.run(Reconciler(settings).run())

"""The reconciler's line to the control plane: register, poll, report, ship logs.

Everything here talks HTTP (`cpclient`, on worker threads) and retries with
`policy.Retry`; nothing here decides what runs on the server. The local side
(`reconciler.Reconciler`, seen through `Local`) hands over a new desired document, builds
each heartbeat and names the log files to ship; the uplink decides only when to send.

- poll: a long poll for the desired state (the ETag is the document's hash);
- report: heartbeats (at once on a change, at most every `HEARTBEAT_MIN_GAP_S`, else
  every heartbeat interval the control plane announces), then the event outbox;
- logs: new output of every service's run and build log, offsets advanced only once the
  control plane accepted them.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from typing import Any, Protocol

from agent.reconciler import upgraderequest
from agent.reconciler.admin import save_registration
from agent.reconciler.clock import SYSTEM_CLOCK, Clock
from agent.reconciler.cpclient import (
    AGENT_VERSION,
    ControlPlaneClient,
    Rejected,
    Throttled,
    Unreachable,
)
from agent.reconciler.logfiles import LogCursor, LogSource, collect_chunks
from agent.reconciler.policy import (
    CONTROL_PLANE_RETRY,
    Retry,
    heartbeat_fingerprint,
    heartbeat_interval,
    heartbeat_wait,
)
from agent.reconciler.redact import Redactor
from agent.reconciler.shipping import Shipped, ship
from agent.reconciler.store import Store
from agent.schema.document import DesiredState
from agent.schema.report import Heartbeat
from agent.settings import AgentSettings

log = logging.getLogger(__name__)

LONG_POLL_S = 25.0
LOG_SHIP_INTERVAL_S = 1.0


class Local(Protocol):
    """What the uplink needs of the local reconciliation."""

    desired: DesiredState | None

    @property
    def redactor(self) -> Redactor: ...
    def heartbeat(self) -> Heartbeat: ...
    def accept_document(self, doc: dict[str, Any]) -> None: ...
    def event(self, type_: str, message: str, service: str | None = None, **extra: Any) -> None: ...
    def log_sources(self) -> list[LogSource]: ...


class Uplink:
    def __init__(
        self, settings: AgentSettings, store: Store, local: Local, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.settings = settings
        self.store = store
        self.local = local
        self.clock = clock
        self._client: ControlPlaneClient | None = None
        self._client_lock = asyncio.Lock()
        self._log_cursor = LogCursor()
        self.events_resume_at = 0.0  # monotonic: the control plane asked us to wait
        self.heartbeat_interval_s = heartbeat_interval(None)
        # a state change or a new event wakes the report loop
        self.report_wanted = asyncio.Event()

    def tasks(self) -> list[Coroutine[Any, Any, None]]:
        return [self._poll_loop(), self._report_loop(), self._log_loop()]

    # --- credential ----------------------------------------------------------------------
    async def client_ready(self) -> ControlPlaneClient:
        """Our credential, registering once with the install token if we have none."""
        async with self._client_lock:  # the poll, report and log loops all start here
            if self._client is None:
                self._client = await self._register()
            return self._client

    async def _register(self) -> ControlPlaneClient:
        assert self.settings.control_plane
        credential = self.store.get("credential")
        retry = Retry()
        while credential is None:
            if not self.settings.token:
                raise SystemExit("not registered yet: pass --token with an install token")
            try:
                reg = await asyncio.to_thread(
                    ControlPlaneClient(self.settings.control_plane).register, self.settings.token
                )
            except Unreachable as exc:
                delay = retry.failed()
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

    async def round_trip(self) -> bool:
        """One successful call to the control plane (it confirms a firewall change)."""
        if not self.settings.control_plane:
            return True
        try:
            client = await self.client_ready()
            await asyncio.to_thread(client.heartbeat, self.local.heartbeat())
            return True
        except (Unreachable, Rejected) as exc:
            log.warning("control plane round trip failed: %s", exc)
            return False

    # --- desired state -------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        client = await self.client_ready()
        retry = Retry()
        while True:
            desired = self.local.desired
            etag = desired.hash if desired else None
            started = self.clock.monotonic()
            # a change wakes the long poll at once; the poll interval only bounds how late
            # a missed wake-up (or a server without long polling) is noticed
            interval = desired.stack.poll_interval_s if desired else 5.0
            try:
                fetched = await asyncio.to_thread(
                    client.fetch_desired, etag, max(1.0, min(LONG_POLL_S, interval))
                )
            except Unreachable as exc:
                delay = retry.failed()
                log.warning(
                    "desired state: control plane unreachable, retrying in %.1f s: %s", delay, exc
                )
                await asyncio.sleep(delay)
                continue
            except Rejected as exc:
                log.error("desired state refused (credential revoked?): %s", exc)
                await asyncio.sleep(CONTROL_PLANE_RETRY.cap_s)
                continue
            retry.succeeded()
            if fetched.changed and fetched.document is not None:
                self.local.accept_document(fetched.document)
            elif self.clock.monotonic() - started < 1.0:
                # the server answered at once: no long poll there, so poll at the interval
                await asyncio.sleep(interval)

    # --- heartbeats and events -----------------------------------------------------------
    async def _report_loop(self) -> None:
        """Heartbeats and events. The heartbeat goes before the events: an acknowledged
        event implies it arrived."""
        client = await self.client_ready()
        last_sent = -float("inf")
        sent_print: str | None = None
        retry = Retry()
        while True:
            self.report_wanted.clear()
            try:
                beat = self.local.heartbeat()
                beat_print = heartbeat_fingerprint(beat.to_json())
                wait = heartbeat_wait(
                    self.clock.monotonic(), last_sent, self.heartbeat_interval_s,
                    beat_print != sent_print,
                )  # fmt: skip
                if wait <= 0:
                    answer = await asyncio.to_thread(client.heartbeat, beat)
                    last_sent, sent_print = self.clock.monotonic(), beat_print
                    self.heartbeat_interval_s = heartbeat_interval(
                        answer.get("heartbeat_interval_s")
                    )
                    wait = self.heartbeat_interval_s
                    self._maybe_request_upgrade(answer)
                await self.flush_events(client)
                retry.succeeded()
            except (Unreachable, Rejected) as exc:
                # events wait in the outbox; back off so an outage is not a log flood
                delay = retry.failed()
                log.warning("report failed, retrying in %.1f s: %s", delay, exc)
                await asyncio.sleep(delay)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.report_wanted.wait(), max(0.01, wait))

    def _maybe_request_upgrade(self, reply: dict[str, Any]) -> None:
        """The control plane's rolling upgrade says it is our turn: ask berth-upgrade.path."""
        target = upgraderequest.wanted(reply, AGENT_VERSION, self.store.get_json("upgrade"))
        if target is not None and upgraderequest.request(self.settings.state_dir, target):
            log.info("the control plane asks for agent %s: upgrade requested", target)
            self.local.event("upgrade", f"the control plane's rolling upgrade asks for {target}",
                             to=target)  # fmt: skip

    async def flush_events(self, client: ControlPlaneClient) -> None:
        """Send the outbox; on 429 keep it and wait as asked (heartbeats go on meanwhile)."""
        while self.clock.monotonic() >= self.events_resume_at:
            batch = self.store.pending_events()
            if not batch:
                return
            try:
                accepted = await asyncio.to_thread(client.send_events, batch)
            except Throttled as exc:
                log.warning("events throttled, keeping them: %s", exc)
                self.events_resume_at = self.clock.monotonic() + exc.retry_after_s
                return
            self.store.ack_events(accepted)
            if len(accepted) < len(batch):
                return

    # --- logs ----------------------------------------------------------------------------
    async def _log_loop(self) -> None:
        """Ship new service and build output to the control plane (for the dashboard)."""
        client = await self.client_ready()
        while True:
            await asyncio.sleep(LOG_SHIP_INTERVAL_S)
            sources, redactor = self.local.log_sources(), self.local.redactor
            chunks, advances = await asyncio.to_thread(
                collect_chunks, self._log_cursor, sources, redactor
            )
            if not chunks:
                continue
            shipped = await ship(client.send_logs, chunks, "logs")
            if shipped is Shipped.UNSUPPORTED:
                return
            if shipped is Shipped.NOT_SENT:
                continue  # offsets unchanged: sent again next time
            for path, offset in advances:
                self._log_cursor.advance(path, offset)

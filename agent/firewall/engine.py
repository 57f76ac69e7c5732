"""The firewall engine: status, plan, apply, confirm, revert — shared by the helper
process and the in-process CLI.

An apply, in order (§12.4):

1. resolve the backend (request, then agent config, then detection; a backend already
   holding Berth's rules stays until mode ``open`` is applied);
2. refuse what could lock the operator out (`guards.check_apply`);
3. check the control plane is reachable — if not, refuse, nothing changed;
4. snapshot the backend and persist the undo record (phase ``applying``) *before*
   touching anything;
5. apply; on a tool error restore the snapshot at once;
6. check the control plane again — on failure restore the snapshot at once;
7. mark the apply ``applied`` with its confirm deadline (commit-confirmed); `expire`
   reverts it when the deadline passes unconfirmed.

Mode ``open`` restores the baseline (the firewall as it was before Berth), so "any rules
Berth made before are removed" holds for UFW too.
"""

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.bus.firewall import (
    EXPOSURE,
    ApplyRequest,
    ConfirmRequest,
    FirewallOptions,
    PlanRequest,
    Request,
    RevertRequest,
    StatusRequest,
)
from agent.bus.firewallstatus import FirewallReply, FirewallStatus, LastApply
from agent.firewall.detect import Choice, NoBackend, detect_backend
from agent.firewall.guards import Refused, check_apply
from agent.firewall.nftables import NftablesBackend
from agent.firewall.reachability import CHECK_TIMEOUT_S, check_reachable
from agent.firewall.state import FirewallState, Pending, StateStore, Undo
from agent.firewall.tools import ToolError
from agent.firewall.tunnel import DEFAULT_METRICS, tunnel_state
from agent.firewall.ufw import UfwBackend, UfwPaths

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str

    def snapshot(self) -> dict[str, Any]: ...
    def plan(self, mode: str, opts: FirewallOptions) -> list[str]: ...
    def apply(self, mode: str, opts: FirewallOptions) -> list[str]: ...
    def restore(self, snapshot: dict[str, Any]) -> list[str]: ...


@dataclass(frozen=True)
class FirewallConfig:
    state_dir: Path  # the helper's own directory, e.g. /var/lib/berth/firewall
    backend: str = "auto"  # the agent config's override: auto | ufw | nftables
    tunnel_metrics: tuple[str, int] = DEFAULT_METRICS
    ufw_paths: UfwPaths = field(default_factory=UfwPaths)
    reachability_timeout_s: float = CHECK_TIMEOUT_S


class Firewall:
    def __init__(self, config: FirewallConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = StateStore(config.state_dir)
        self.clock = clock

    # ------------------------------------------------------------------ dispatch

    def handle(self, req: Request) -> FirewallReply:
        if isinstance(req, StatusRequest):
            return self._reply("status", True)
        if isinstance(req, PlanRequest):
            return self.plan(req)
        if isinstance(req, ApplyRequest):
            return self.apply(req)
        if isinstance(req, ConfirmRequest):
            return self.confirm()
        if isinstance(req, RevertRequest):
            return self.revert(req.to)
        raise TypeError(f"not a firewall request: {req!r}")

    def status(self) -> FirewallStatus:
        state = self.store.load()
        return FirewallStatus(
            mode=state.mode,
            exposure=EXPOSURE[state.mode],
            backend=state.backend,
            last_apply=state.last_apply,
            tunnel=tunnel_state(self.config.tunnel_metrics)
            if state.mode == "tunnel-only"
            else None,
            pending_confirm_until=(
                state.pending.until if state.pending and state.pending.phase == "applied" else None
            ),
            backend_reason=state.backend_reason,
        )

    def _reply(self, command: str, ok: bool, **kw: Any) -> FirewallReply:
        return FirewallReply(ok=ok, command=command, status=self.status(), **kw)

    # ------------------------------------------------------------------ backends

    def _backend(self, name: str) -> Backend:
        if name == "ufw":
            return UfwBackend(self.config.ufw_paths)
        return NftablesBackend()

    def _choose(self, requested: str, state: FirewallState) -> Choice:
        if requested == "auto" and self.config.backend != "auto":
            chosen = detect_backend(self.config.backend).backend
            return Choice(chosen, f"{chosen} set in the agent config")
        if requested == "auto" and state.backend and (state.mode != "open" or state.pending):
            return Choice(state.backend, f"{state.backend} already holds Berth's rules")
        choice = detect_backend(requested)
        if (
            state.backend
            and choice.backend != state.backend
            and (state.mode != "open" or state.pending)
        ):
            raise NoBackend(
                f"Berth's rules are in {state.backend}; to switch to {choice.backend}, "
                "apply mode open first (it removes them), then apply again"
            )
        return choice

    # ---------------------------------------------------------------------- plan

    def plan(self, req: PlanRequest) -> FirewallReply:
        state = self.store.load()
        try:
            choice = self._choose(req.backend, state)
        except NoBackend as exc:
            return self._reply("plan", False, error=str(exc), field="backend")
        if req.mode == "open" and state.baseline is not None:
            rules = [f"{choice.backend}: restore the state saved before Berth's first apply"]
        else:
            rules = self._backend(choice.backend).plan(req.mode, req.options)
        return self._reply("plan", True, rules=tuple(rules), changes=(f"backend: {choice.reason}",))

    # --------------------------------------------------------------------- apply

    def apply(self, req: ApplyRequest) -> FirewallReply:
        with self.store.locked():
            return self._apply_locked(req)

    def _refuse(
        self, state: FirewallState, req: ApplyRequest, field_name: str, why: str
    ) -> FirewallReply:
        log.warning("apply %s refused (%s): %s", req.mode, field_name, why)
        last = LastApply(self.clock(), req.mode, state.backend, "refused", why)
        self.store.save(state.with_(last_apply=last))
        return self._reply("apply", False, error=why, field=field_name)

    def _apply_locked(self, req: ApplyRequest) -> FirewallReply:
        state = self.store.load()
        try:
            choice = self._choose(req.backend, state)
            check_apply(req)
        except NoBackend as exc:
            return self._refuse(state, req, "backend", str(exc))
        except Refused as exc:
            return self._refuse(state, req, exc.field, str(exc))
        if req.control_plane:
            why = check_reachable(req.control_plane, self.config.reachability_timeout_s)
            if why:
                return self._refuse(
                    state, req, "control_plane", f"before apply: {why}; nothing changed"
                )

        backend = self._backend(choice.backend)
        # Return to the last *confirmed* state when applies pile up unconfirmed.
        if state.pending:
            undo = state.pending.undo
        else:
            undo = Undo(backend.snapshot(), state.mode, state.backend, state.baseline)
        baseline = state.baseline
        if baseline is None and state.mode == "open" and req.mode != "open":
            baseline = undo.snapshot  # the firewall as it was before Berth
        now = self.clock()
        until = now + req.confirm_timeout_s if req.confirm_timeout_s > 0 else None
        pending = Pending(uuid.uuid4().hex, "applying", until, undo)
        self.store.save(state.with_(pending=pending))  # durable before any change

        try:
            if req.mode == "open" and baseline is not None:
                changes = backend.restore(baseline)
                baseline = None
            else:
                changes = backend.apply(req.mode, req.options)
        except (ToolError, OSError) as exc:
            why = f"apply failed: {exc}; restored the previous state"
            return self._undo(undo, req.mode, why, "failed")

        if req.control_plane:
            why = check_reachable(req.control_plane, self.config.reachability_timeout_s)
            if why:
                why = f"after apply: {why}; reverted at once"
                return self._undo(undo, req.mode, why, "reverted")

        new_pending: Pending | None
        new_undo: Undo | None
        if until is None:
            new_pending, new_undo, detail = None, undo, "applied (no auto-revert)"
        else:
            new_pending = Pending(pending.id, "applied", until, undo)
            new_undo = state.undo
            detail = f"applied; reverts unless confirmed within {req.confirm_timeout_s:g} s"
        self.store.save(
            state.with_(
                mode=req.mode,
                backend=None if req.mode == "open" and baseline is None else choice.backend,
                backend_reason=choice.reason,
                baseline=baseline,
                pending=new_pending,
                undo=new_undo,
                last_apply=LastApply(now, req.mode, choice.backend, "applied", detail),
            )
        )
        log.info("applied %s with %s: %s", req.mode, choice.backend, "; ".join(changes))
        return self._reply("apply", True, changes=tuple(changes))

    def _undo(
        self, undo: Undo, mode: str, why: str, result: str, command: str = "apply"
    ) -> FirewallReply:
        """Restore `undo` (lock held) and record why `mode` was undone.

        The reply is not ok for an apply (it did not take), ok for a revert.
        """
        state = self.store.load()
        backend = self._backend(undo.snapshot["backend"])
        changes = backend.restore(undo.snapshot)
        self.store.save(
            state.with_(
                mode=undo.mode,
                backend=undo.backend,
                baseline=undo.baseline,
                pending=None,
                undo=None,
                last_apply=LastApply(self.clock(), mode, backend.name, result, why),
            )
        )
        log.warning("%s", why)
        ok = command != "apply"
        return self._reply(command, ok, error=None if ok else why, changes=(why, *changes))

    # ------------------------------------------------------------ confirm/revert

    def confirm(self) -> FirewallReply:
        with self.store.locked():
            state = self.store.load()
            if state.pending is None or state.pending.phase != "applied":
                return self._reply("confirm", True, changes=("nothing awaits confirmation",))
            last = state.last_apply
            if last is not None:
                last = LastApply(last.at, last.mode, last.backend, "confirmed", "confirmed")
            self.store.save(state.with_(pending=None, undo=state.pending.undo, last_apply=last))
            log.info("confirmed %s", state.mode)
            return self._reply("confirm", True, changes=(f"kept {state.mode}",))

    def revert(self, to: str = "previous", reason: str = "revert requested") -> FirewallReply:
        with self.store.locked():
            state = self.store.load()
            if to == "baseline":
                return self._revert_baseline(state, reason)
            undo = state.pending.undo if state.pending else state.undo
            if undo is None:
                return self._reply(
                    "revert", False, error="nothing to revert: no earlier apply is recorded"
                )
            return self._undo(undo, state.mode, reason, "reverted", command="revert")

    def _revert_baseline(self, state: FirewallState, reason: str) -> FirewallReply:
        if state.baseline is None:
            if state.mode == "open" and state.backend is None:
                return self._reply("revert", True, changes=("no Berth rules in place",))
            changes = self._backend(state.backend or "nftables").apply("open", FirewallOptions())
        else:
            changes = self._backend(state.baseline["backend"]).restore(state.baseline)
        last = LastApply(
            self.clock(), state.mode, state.backend, "reverted", f"{reason} (to baseline)"
        )
        self.store.save(FirewallState(last_apply=last))
        log.info("restored the firewall as it was before Berth")
        return self._reply("revert", True, changes=tuple(changes))

    # ------------------------------------------------------------------- timers

    def next_deadline(self) -> float | None:
        pending = self.store.load().pending
        return pending.until if pending else None

    def expire(self, only_id: str | None = None) -> FirewallReply | None:
        """Revert an apply that is past its deadline, or was cut short by a crash."""
        with self.store.locked():
            state = self.store.load()
            p = state.pending
            if p is None or (only_id is not None and p.id != only_id):
                return None
            if p.phase == "applying":
                why = "an apply was interrupted (crash?); reverted to the state before it"
            elif p.until is not None and p.until <= self.clock():
                why = "not confirmed in time; reverted automatically"
            else:
                return None
            return self._undo(p.undo, state.mode, why, "reverted", command="revert")

    def set_timer_pid(self, pending_id: str, pid: int) -> None:
        with self.store.locked():
            state = self.store.load()
            if state.pending and state.pending.id == pending_id:
                p = state.pending
                self.store.save(state.with_(pending=Pending(p.id, p.phase, p.until, p.undo, pid)))

"""The reconciler's side of the security modes: keep the firewall helper's status for
heartbeats and, when the operator opted in (`--follow-security-mode`), ask the helper (the
only root process) to apply the stack's mode and confirm it after a round trip to the
control plane. Without the opt-in, firewall changes stay with the installer's explicit,
consented step (spec §12.4), and a mode change only produces an event saying so.

The helper's apply is commit-confirmed: if the reconciler cannot reach the control plane
after the change, it never confirms, and the helper reverts by itself.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agent.bus.firewall import (
    EXPOSURE,
    ApplyRequest,
    ConfirmRequest,
    FirewallClient,
    FirewallOptions,
    FirewallUnavailable,
    StatusRequest,
)
from agent.settings import AgentSettings

log = logging.getLogger(__name__)

STATUS_TIMEOUT_S = 2.0
CONFIRM_TIMEOUT_S = 60.0


class FirewallLink:
    """The reconciler's link to the firewall helper: its status (for heartbeats) and, when
    following the stack's security mode, the commit-confirmed apply."""

    def __init__(self, settings: AgentSettings, event: Callable[..., None]) -> None:
        self.settings = settings
        self.event = event
        self.client = FirewallClient(settings.bus)
        self.status: dict[str, Any] = {
            "mode": None,
            "exposure": None,
            "backend": None,
            "tunnel": None,
        }
        self._warned = False

    def helper_present(self) -> bool:
        return self.settings.bus.firewall_path.exists()

    async def refresh(self, desired_mode: str | None) -> None:
        """Keep `status` current: the helper's view, or what we can say without it."""
        if self.helper_present():
            try:
                reply = await asyncio.to_thread(
                    self.client.request, StatusRequest(), STATUS_TIMEOUT_S
                )
                if reply.status is not None:
                    self.status = {
                        **reply.status.to_dict(),
                        "helper": "running",
                        "desired_mode": desired_mode,
                    }
                    return
            except FirewallUnavailable as exc:
                log.warning("firewall helper status: %s", exc)
        self.status = {
            "mode": "open",
            "exposure": EXPOSURE["open"],
            "backend": None,
            "tunnel": None,
            "helper": "absent",
            "desired_mode": desired_mode,
        }

    async def ensure(
        self, mode: str, proxy_port: int, round_trip: Callable[[], Awaitable[bool]]
    ) -> None:
        """Apply `mode` if the helper runs something else; confirm after `round_trip`."""
        await self.refresh(mode)
        if self.status.get("mode") == mode and not self.status.get("pending_confirm_until"):
            return
        if not self.settings.follow_security_mode:
            if not self._warned:
                self._warned = True
                self.event(
                    "security",
                    f"the stack asks for security mode {mode}; the firewall keeps {self.status.get('mode')} "
                    "(firewall changes are explicit: re-run the installer with --security-mode, or start "
                    "the agent with --follow-security-mode)",
                )
            return
        if not self.helper_present():
            if mode != "open" and not self._warned:
                self._warned = True
                self.event(
                    "security",
                    f"security mode {mode} not enforced: the firewall helper is not running",
                )
            return
        request = ApplyRequest(
            mode=mode,
            options=FirewallOptions(
                proxy_port=proxy_port,
                ssh_port=self.settings.ssh_port,
                ssh_cidrs=self.settings.ssh_cidrs,
            ),
            backend=self.settings.firewall_backend,
            confirm_timeout_s=CONFIRM_TIMEOUT_S,
            control_plane=self.settings.control_plane,
            consent_block_ssh=self.settings.consent_block_ssh,
        )
        try:
            reply = await asyncio.to_thread(self.client.request, request)
        except FirewallUnavailable as exc:
            self.event("security", f"could not apply security mode {mode}: {exc}")
            return
        if not reply.ok:
            self.event(
                "security", f"security mode {mode} refused: {reply.error}", field=reply.field
            )
            return
        self.event(
            "security",
            f"security mode {mode} applied, awaiting confirmation",
            changes=list(reply.changes),
        )
        if not await round_trip():
            self.event(
                "security",
                f"control plane unreachable after applying {mode}: not confirming (it reverts by itself)",
            )
            return
        confirm = await asyncio.to_thread(self.client.request, ConfirmRequest())
        if confirm.ok:
            self.event("security", f"security mode {mode} confirmed")
        else:
            self.event("security", f"confirming security mode {mode} failed: {confirm.error}")
        await self.refresh(mode)

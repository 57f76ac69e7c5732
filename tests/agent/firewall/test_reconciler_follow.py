"""The reconciler's side of security modes (`agent/reconciler/firewalllink.py`) against a real
firewall helper in a test network namespace: it changes the firewall only when the operator
opted in, tunnel-only only with consent, and confirms only after a control-plane round trip."""

import asyncio
from dataclasses import replace

from agent.reconciler.firewalllink import FirewallLink
from agent.settings import AgentSettings


def test_reconciler_applies_the_stack_mode_only_when_opted_in(fw):
    fw.helper("--backend", "nftables")
    events: list[str] = []

    def event(type_, message, service=None, **extra):
        assert type_ == "security"
        events.append(message)

    async def reachable():
        return True

    async def unreachable():
        return False

    base = AgentSettings(state_dir=fw.state_dir, run_dir=fw.run_dir)
    before = fw.ruleset()

    # no opt-in: the firewall is left alone and an event says how to change it
    sec = FirewallLink(base, event)
    asyncio.run(sec.ensure("proxy-only", 8080, reachable))
    assert fw.ruleset() == before
    assert "firewall changes are explicit" in events[-1]
    assert sec.status["mode"] == "open" and sec.status["helper"] == "running"

    # opted in, but tunnel-only blocks SSH: refused without consent, nothing changed
    follow = replace(base, follow_security_mode=True)
    asyncio.run(FirewallLink(follow, event).ensure("tunnel-only", 8080, reachable))
    assert "refused" in events[-1]
    assert fw.ruleset() == before

    # opted in: applied, confirmed after the round trip, reported for heartbeats
    sec = FirewallLink(follow, event)
    asyncio.run(sec.ensure("proxy-only", 8080, reachable))
    assert events[-1] == "security mode proxy-only confirmed"
    assert sec.status["mode"] == "proxy-only" and sec.status["exposure"] == "daemon-port"
    assert not sec.status.get("pending_confirm_until")
    assert "table inet berth" in fw.ruleset() and "tcp dport 8080" in fw.ruleset()

    # with consent, tunnel-only; the control plane unreachable afterwards: never confirmed,
    # so the helper's commit-confirmed apply will revert by itself
    sec = FirewallLink(replace(follow, consent_block_ssh=True), event)
    asyncio.run(sec.ensure("tunnel-only", 8080, unreachable))
    assert "not confirming" in events[-1]
    asyncio.run(sec.refresh("tunnel-only"))
    assert sec.status["mode"] == "tunnel-only" and sec.status["pending_confirm_until"]

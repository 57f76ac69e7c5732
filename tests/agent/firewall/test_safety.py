"""§12.4 safety, for real in network namespaces (nftables backend unless stated):
commit-confirmed auto-revert (helper, in-process CLI, across a helper crash), the
SSH-lockout guard, tunnel-only consent, and the control-plane reachability checks.
"""

import json
import os
import signal
import time

import pytest

from agent.bus.firewall import (
    ApplyRequest,
    ConfirmRequest,
    FirewallOptions,
    RevertRequest,
    StatusRequest,
)

PROXY = 8080
OPTS = FirewallOptions(proxy_port=PROXY)
pytestmark = pytest.mark.root


def wait_for(predicate, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def apply(mode: str = "proxy-only", timeout_s: float = 0, **kw) -> ApplyRequest:  # type: ignore[no-untyped-def]
    return ApplyRequest(
        mode=mode, options=OPTS, backend="nftables", confirm_timeout_s=timeout_s, **kw
    )


def test_unconfirmed_apply_reverts_itself(fw_any):  # type: ignore[no-untyped-def]
    fw = fw_any
    prior = fw.ruleset()
    helper = fw.helper()
    backend = "ufw" if fw.ufw else "nftables"
    req = ApplyRequest(mode="proxy-only", options=OPTS, backend=backend, confirm_timeout_s=1.5)
    reply = helper.client.request(req)
    assert reply.ok, reply.error
    assert reply.status is not None and reply.status.pending_confirm_until is not None
    assert fw.ruleset() != prior
    assert wait_for(lambda: fw.ruleset() == prior)
    status = helper.client.request(StatusRequest()).status
    assert status is not None and status.mode == "open" and status.pending_confirm_until is None
    assert status.last_apply is not None and status.last_apply.result == "reverted"
    assert "not confirmed" in status.last_apply.detail


def test_confirmed_apply_stays_and_revert_undoes_it(fw):  # type: ignore[no-untyped-def]
    prior = fw.ruleset()
    helper = fw.helper()
    assert helper.client.request(apply(timeout_s=1.0)).ok
    confirmed = helper.client.request(ConfirmRequest())
    assert confirmed.ok and confirmed.status is not None
    assert confirmed.status.last_apply is not None
    assert confirmed.status.last_apply.result == "confirmed"
    applied = fw.ruleset()
    time.sleep(1.5)  # past the deadline: nothing may revert now
    assert fw.ruleset() == applied
    assert helper.client.request(StatusRequest()).status.mode == "proxy-only"  # type: ignore[union-attr]
    reverted = helper.client.request(RevertRequest(to="previous"))
    assert reverted.ok and fw.ruleset() == prior
    again = helper.client.request(RevertRequest(to="previous"))
    assert not again.ok and "nothing to revert" in (again.error or "")


def test_pending_apply_is_reverted_after_a_helper_crash(fw):  # type: ignore[no-untyped-def]
    prior = fw.ruleset()
    helper = fw.helper()
    assert helper.client.request(apply(timeout_s=1.0)).ok
    helper.proc.send_signal(signal.SIGKILL)  # no chance to clean up
    helper.proc.wait()
    time.sleep(1.2)
    assert fw.ruleset() != prior  # nobody was there to revert
    fw.helper()  # the restarted helper finds the overdue apply in its state
    assert wait_for(lambda: fw.ruleset() == prior, 5.0)


def test_in_process_cli_apply_reverts_itself(fw):  # type: ignore[no-untyped-def]
    prior = fw.ruleset()
    done = fw.cli("apply", "--mode", "proxy-only", "--proxy-port", str(PROXY),
                  "--backend", "nftables", "--confirm-timeout", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "awaiting confirm" in done.stdout
    state = json.loads((fw.state_dir / "firewall" / "state.json").read_text())
    timer = state["pending"]["timer_pid"]
    assert timer and fw.ruleset() != prior
    try:
        assert wait_for(lambda: fw.ruleset() == prior)
        assert wait_for(lambda: not os.path.exists(f"/proc/{timer}"), 5.0)
    finally:
        if os.path.exists(f"/proc/{timer}"):  # the timer this test's CLI started
            os.kill(timer, signal.SIGKILL)
    status = fw.cli("status", "--json")
    assert json.loads(status.stdout)["status"]["last_apply"]["result"] == "reverted"


def test_in_process_cli_confirm_keeps_rules(fw):  # type: ignore[no-untyped-def]
    # long enough for the confirm CLI to start (a past deadline would revert first)
    done = fw.cli("apply", "--mode", "tunnel-only", "--consent-block-ssh",
                  "--backend", "nftables", "--confirm-timeout", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    state = json.loads((fw.state_dir / "firewall" / "state.json").read_text())
    timer = state["pending"]["timer_pid"]
    try:
        confirmed = fw.cli("confirm")
        assert confirmed.returncode == 0 and "kept tunnel-only" in confirmed.stdout
        applied = fw.ruleset()
        assert wait_for(lambda: not os.path.exists(f"/proc/{timer}"), 8.0)  # woke, did nothing
        assert fw.ruleset() == applied and "table inet berth" in applied
    finally:
        if os.path.exists(f"/proc/{timer}"):
            os.kill(timer, signal.SIGKILL)
    assert fw.cli("revert", "--to", "baseline").returncode == 0
    assert "table inet berth" not in fw.ruleset()


def test_ssh_lockout_guard_refuses(fw):  # type: ignore[no-untyped-def]
    prior = fw.ruleset()
    env = dict(os.environ, SSH_CONNECTION=f"203.0.113.9 50022 {fw.net.srv_ip} 22")
    base = ("apply", "--mode", "proxy-only", "--proxy-port", str(PROXY), "--backend", "nftables",
            "--confirm-timeout", "0")  # fmt: skip

    refused = fw.cli(*base, "--ssh-cidr", "10.0.0.0/8", env=env)
    assert refused.returncode == 1
    assert "203.0.113.9" in refused.stderr and "lock you out" in refused.stderr
    assert fw.ruleset() == prior

    no_cidr = fw.cli(*base, env=env)  # no CIDR at all: no SSH, so also a lockout
    assert no_cidr.returncode == 1 and fw.ruleset() == prior

    wrong_port = fw.cli(*base, "--ssh-cidr", "203.0.113.0/24", "--ssh-port", "2222", env=env)
    assert wrong_port.returncode == 1 and "--ssh-port 22" in wrong_port.stderr
    assert fw.ruleset() == prior

    allowed = fw.cli(*base, "--ssh-cidr", "203.0.113.0/24", env=env)
    assert allowed.returncode == 0, allowed.stderr
    assert "203.0.113.0/24" in fw.ruleset()

    overridden = fw.cli(*base, "--allow-ssh-lockout", env=env)
    assert overridden.returncode == 0, overridden.stderr
    assert "203.0.113.0/24" not in fw.ruleset()
    assert fw.cli("revert", "--to", "baseline").returncode == 0
    assert fw.ruleset() == prior


def test_tunnel_only_needs_consent(fw):  # type: ignore[no-untyped-def]
    prior = fw.ruleset()
    helper = fw.helper()
    done = fw.cli("apply", "--mode", "tunnel-only", "--backend", "nftables")  # through the helper
    assert done.returncode == 1 and "--consent-block-ssh" in done.stderr
    assert fw.ruleset() == prior
    status = helper.client.request(StatusRequest()).status
    assert status is not None and status.mode == "open"
    assert status.last_apply is not None and status.last_apply.result == "refused"


def test_control_plane_lost_after_apply_reverts_at_once(fw):  # type: ignore[no-untyped-def]
    prior = fw.ruleset()
    helper = fw.helper()
    # answers the check before the apply, then is gone: the check after it fails
    fw.start(fw.net.out, "http-once", "8000")
    url = f"http://{fw.net.out_ip}:8000/"
    reply = helper.client.request(apply(timeout_s=30, control_plane=url))
    assert not reply.ok and "after apply" in (reply.error or "")
    assert fw.ruleset() == prior
    assert reply.status is not None and reply.status.mode == "open"
    assert reply.status.pending_confirm_until is None
    assert reply.status.last_apply is not None and reply.status.last_apply.result == "reverted"

    before = helper.client.request(apply(control_plane=url))  # nothing listens any more
    assert (
        not before.ok and before.field == "control_plane" and "before apply" in (before.error or "")
    )
    assert fw.ruleset() == prior


def test_control_plane_reachable_apply_goes_through(fw):  # type: ignore[no-untyped-def]
    helper = fw.helper()
    fw.start(fw.net.out, "ready", "8001", "200")  # any HTTP server will do
    reply = helper.client.request(apply(control_plane=f"http://{fw.net.out_ip}:8001/"))
    assert reply.ok, reply.error
    assert reply.status is not None and reply.status.mode == "proxy-only"

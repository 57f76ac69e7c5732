"""The helper's bus socket, for real: permissions, closed command set, tunnel status."""

import json
import stat

import pytest

from agent.bus.firewall import ApplyRequest, StatusRequest
from agent.bus.firewallstatus import FirewallReply
from agent.firewall.tunnel import cloudflared_present

pytestmark = pytest.mark.root

BAD_REQUESTS = [
    (b"not json", "request"),
    (b"[1, 2]", "request"),
    (b'{"command": "flush"}', "command"),
    (b'{"command": "sh -c reboot"}', "command"),
    (b'{"mode": "open"}', "command"),
    (b'{"command": "status", "extra": 1}', "extra"),
    (b'{"command": "apply", "mode": "closed"}', "mode"),
    (b'{"command": "apply", "mode": "proxy-only"}', "options.proxy_port"),
    (b'{"command": "apply", "mode": "proxy-only", "options": {"proxy_port": "8080"}}',
     "options.proxy_port"),
    (b'{"command": "apply", "mode": "proxy-only", "options": {"proxy_port": 70000}}',
     "options.proxy_port"),
    (b'{"command": "apply", "mode": "proxy-only", "options": {"proxy_port": 80, '
     b'"ssh_cidrs": ["0.0.0.0/0; flush ruleset"]}}', "options.ssh_cidrs[0]"),
    (b'{"command": "apply", "mode": "open", "backend": "iptables"}', "backend"),
    (b'{"command": "apply", "mode": "open", "confirm_timeout_s": -1}', "confirm_timeout_s"),
    (b'{"command": "apply", "mode": "open", "consent_block_ssh": "yes"}', "consent_block_ssh"),
    (b'{"command": "apply", "mode": "open", "control_plane": "file:///etc/passwd"}',
     "control_plane"),
    (b'{"command": "revert", "to": "yesterday"}', "to"),
    (b"\xff\xfe", "request"),
]  # fmt: skip


def test_socket_is_group_only(fw):  # type: ignore[no-untyped-def]
    helper = fw.helper()
    mode = (helper.run_dir / "firewall.sock").stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


def test_malformed_and_unknown_commands_are_rejected_and_change_nothing(fw):  # type: ignore[no-untyped-def]
    helper = fw.helper()
    prior = fw.ruleset()
    state_file = helper.state_dir / "state.json"
    state_before = state_file.read_bytes() if state_file.exists() else None
    for payload, field in BAD_REQUESTS:
        reply = FirewallReply.from_json(helper.client.request_raw(payload, 5.0))
        assert not reply.ok, payload
        assert reply.field == field, (payload, reply.error)
        assert reply.error and field.split("[")[0] in reply.error
        assert reply.status is not None and reply.status.mode == "open"
    assert fw.ruleset() == prior
    assert (state_file.read_bytes() if state_file.exists() else None) == state_before
    log = helper.log_text()
    assert log.count("rejected request") == len(BAD_REQUESTS)
    # still serving, and a valid request still works
    assert helper.client.request(StatusRequest()).ok


def test_tunnel_state_from_the_metrics_ready_endpoint(fw):  # type: ignore[no-untyped-def]
    net = fw.net
    helper = fw.helper("--tunnel-metrics", "127.0.0.1:20999")
    req = ApplyRequest(mode="tunnel-only", backend="nftables", confirm_timeout_s=0,
                       consent_block_ssh=True)  # fmt: skip
    applied = helper.client.request(req)
    assert applied.ok and applied.status is not None
    # nothing answers /ready, and cloudflared is not installed on these machines
    assert applied.status.tunnel == ("disconnected" if cloudflared_present() else "not-installed")

    # STAND-IN for cloudflared's metrics server (cloudflared cannot be installed here)
    standin = fw.start(net.srv, "ready", "20999", "200")
    assert helper.client.request(StatusRequest()).status.tunnel == "connected"  # type: ignore[union-attr]
    net.stop(standin)
    fw.start(net.srv, "ready", "20999", "503")  # running, but no edge connection
    status = helper.client.request(StatusRequest()).status
    assert status is not None and status.tunnel == "disconnected"
    assert (
        json.loads(FirewallReply(True, "status", status).to_json())["status"]["exposure"] == "none"
    )


# a client that drops root to another identity first (the interpreter, under /root, is
# not readable by other users: switch after loading it, as the proxies do)
ASK_STATUS = """
import json, os, sys
from agent.bus import BusEndpoints
from agent.bus.firewall import FirewallClient, FirewallUnavailable, StatusRequest
uid, gid, groups = int(sys.argv[2]), int(sys.argv[3]), [int(g) for g in sys.argv[4:]]
os.setgroups(groups)
os.setgid(gid)
os.setuid(uid)
try:
    reply = FirewallClient(BusEndpoints(__import__("pathlib").Path(sys.argv[1]))).request(
        StatusRequest(), 2.0)
    print(json.dumps({"ok": reply.ok, "field": reply.field, "error": reply.error}))
except FirewallUnavailable as exc:
    print(json.dumps({"unavailable": str(exc)}))
"""


def test_only_root_and_the_reconciler_may_drive_the_helper(fw):  # type: ignore[no-untyped-def]
    """Issue 15.5: the socket's group is the helper's own (the proxies' group `berth` cannot
    even connect), and a process in the proxies' identity that is given that group anyway
    is refused by its peer credentials."""
    import grp
    import pwd
    import subprocess
    import sys
    import time

    from agent.bus import BusEndpoints
    from agent.bus.firewall import FirewallClient
    from agent.identities import ensure_run_all_accounts
    from tests.agent.firewall.conftest import REPO
    from tests.support.dirs import world_dir

    ensure_run_all_accounts()
    proxy = pwd.getpwnam("berth-proxy")
    fw_gid = grp.getgrnam("berth-firewall").gr_gid
    with world_dir("berth-fw-") as d:
        run = d / "run"
        argv = [sys.executable, "-m", "agent.firewall", "--state-dir", str(d / "state"),
                "--run-dir", str(run)]  # fmt: skip
        with (d / "helper.log").open("wb") as log:
            proc = fw.net.popen(fw.net.srv, argv, stderr=log, cwd=REPO)
        sock = run / "firewall.sock"
        deadline = time.monotonic() + 15
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (
                d / "helper.log"
            ).read_text()
            time.sleep(0.05)
        assert sock.stat().st_gid == fw_gid and stat.S_IMODE(sock.stat().st_mode) == 0o660

        def ask(extra_groups: list[int]) -> dict:  # type: ignore[type-arg]
            ids = [str(i) for i in (proxy.pw_uid, proxy.pw_gid, *extra_groups)]
            out = subprocess.run(
                [sys.executable, "-c", ASK_STATUS, str(run), *ids], cwd=REPO,
                capture_output=True, text=True, timeout=30, check=True,
            )  # fmt: skip
            return json.loads(out.stdout)  # type: ignore[no-any-return]

        assert "unavailable" in ask([])  # group `berth` only: the socket stays shut
        refused = ask([fw_gid])
        assert refused["ok"] is False and refused["field"] == "peer", refused
        assert f"uid {proxy.pw_uid}" in refused["error"]
        root = FirewallClient(BusEndpoints(run)).request(StatusRequest(), 5.0)
        assert root.ok
        fw.net.stop(proc)

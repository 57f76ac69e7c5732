"""Resolver wiring: pure rendering, apply/revert on files, /etc/hosts in a private mount ns."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent import resolverwiring as wiring
from agent.settings import AgentSettings
from tests.support.env import require_root, require_tool

HOSTS = "127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n# a comment the admin wrote\n10.0.0.5 db.lan\n"


def test_render_resolved_dropin() -> None:
    text = wiring.render_resolved_dropin("127.0.0.153:53", "svc.internal")
    assert text.startswith(wiring.DROPIN_HEADER)
    assert "[Resolve]\nDNS=127.0.0.153\nDomains=~svc.internal\n" in text
    assert "DNS=127.0.0.1:5353\n" in wiring.render_resolved_dropin("127.0.0.1:5353", "apps.lan")
    assert "DNS=[::1]:5353\n" in wiring.render_resolved_dropin("[::1]:5353")
    with pytest.raises(wiring.WiringError, match="stub address"):
        wiring.render_resolved_dropin("127.0.0.53:53")
    with pytest.raises(wiring.WiringError, match="wildcard"):
        wiring.render_resolved_dropin("0.0.0.0:53")


def test_choose_mode() -> None:
    assert wiring.choose_mode("auto", True) == "resolved"
    assert wiring.choose_mode("auto", False) == "hosts"
    assert wiring.choose_mode("none", True) == "none"
    with pytest.raises(wiring.WiringError, match="dns_wiring must be one of"):
        wiring.choose_mode("dnsmasq", False)


def test_render_hosts_keeps_everything_else() -> None:
    one = wiring.render_hosts(HOSTS, ["web.svc.internal", "api.svc.internal"])
    assert one.startswith(HOSTS)
    assert one[len(HOSTS) :] == (
        "# BEGIN berth managed block\n127.0.0.1 api.svc.internal\n"
        "127.0.0.1 web.svc.internal\n# END berth managed block\n"
    )
    # rewritten in place, lines after the block kept
    two = wiring.render_hosts(one + "192.168.1.1 router\n", ["db.svc.internal"])
    assert "api.svc" not in two and "127.0.0.1 db.svc.internal\n# END" in two
    assert two.endswith("# END berth managed block\n192.168.1.1 router\n")
    assert wiring.strip_hosts(two) == HOSTS + "192.168.1.1 router\n"
    assert wiring.strip_hosts(HOSTS) == HOSTS
    assert wiring.render_hosts("", []) == "# BEGIN berth managed block\n# END berth managed block\n"
    assert wiring.render_hosts("1.2.3.4 x", ["a.svc.internal"]).startswith("1.2.3.4 x\n# BEGIN")


def test_damaged_block_is_an_error_not_a_loss() -> None:
    damaged = HOSTS + wiring.HOSTS_BEGIN + "\n127.0.0.1 api.svc.internal\n"
    with pytest.raises(wiring.WiringError, match="/etc/hosts: the berth managed block markers"):
        wiring.render_hosts(damaged, ["x.svc.internal"], where="/etc/hosts")
    with pytest.raises(wiring.WiringError):
        wiring.strip_hosts(wiring.HOSTS_END + "\n" + wiring.HOSTS_BEGIN + "\n")


def test_apply_revert_files(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    hosts.chmod(0o640)
    assert wiring.apply_hosts(hosts, ["api.svc.internal"])
    assert not wiring.apply_hosts(hosts, ["api.svc.internal"])  # unchanged: no rewrite
    assert hosts.stat().st_mode & 0o777 == 0o640
    assert wiring.revert_hosts(hosts) and hosts.read_text() == HOSTS
    assert not wiring.revert_hosts(hosts)

    dropin = tmp_path / "resolved.conf.d" / "berth.conf"
    assert wiring.apply_resolved("127.0.0.1:5353", "svc.internal", dropin, restart=False)
    assert not wiring.apply_resolved("127.0.0.1:5353", "svc.internal", dropin, restart=False)
    assert wiring.revert_resolved(dropin, restart=False) and not dropin.exists()
    dropin.write_text("[Resolve]\nDNS=9.9.9.9\n")  # someone else's file: left alone
    assert not wiring.revert_resolved(dropin, restart=False) and dropin.exists()


def test_apply_revert_wiring_entry_points(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    settings = AgentSettings(
        state_dir=tmp_path, run_dir=tmp_path, hosts_file=hosts, dns_wiring="hosts"
    )
    assert wiring.apply_wiring(settings, ["api.svc.internal"]) == "hosts"
    assert "127.0.0.1 api.svc.internal\n" in hosts.read_text()
    assert wiring.revert_wiring(settings) == [f"{hosts} managed block"]
    assert hosts.read_text() == HOSTS
    none = AgentSettings(state_dir=tmp_path, run_dir=tmp_path, hosts_file=hosts, dns_wiring="none")
    assert wiring.apply_wiring(none, ["api.svc.internal"]) == "none" and hosts.read_text() == HOSTS


NS_SCRIPT = textwrap.dedent(
    """
    import subprocess, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from agent import resolverwiring as wiring
    from agent.settings import AgentSettings
    s = AgentSettings(state_dir=Path("/tmp"), run_dir=Path("/tmp"), dns_wiring="hosts")
    def getent(name):
        p = subprocess.run(["getent", "hosts", name], capture_output=True, text=True)
        return p.stdout.split()[:1]
    assert s.hosts_file == Path("/etc/hosts")
    wiring.apply_wiring(s, ["api.svc.internal", "web.svc.internal"])
    assert getent("api.svc.internal") == ["127.0.0.1"], getent("api.svc.internal")
    wiring.apply_wiring(s, ["web.svc.internal"])  # live update: exactly the current set
    assert getent("api.svc.internal") == [] and getent("web.svc.internal") == ["127.0.0.1"]
    assert getent("db.lan") == ["10.0.0.5"]
    print(wiring.revert_wiring(s))
    assert getent("web.svc.internal") == []
    """
)


def test_etc_hosts_in_a_private_mount_namespace(tmp_path: Path) -> None:
    """The real /etc/hosts path, with a temp file bound over it in a namespace of our own."""
    require_root()
    require_tool("unshare", "getent")
    fake = tmp_path / "hosts"
    fake.write_text(HOSTS)
    before = Path("/etc/hosts").read_bytes()
    repo = str(Path(__file__).resolve().parents[3])
    script = f'mount --bind {fake} /etc/hosts && exec {sys.executable} -c "$0" {repo}'
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, NS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "managed block" in proc.stdout
    assert fake.read_text() == HOSTS  # reverted exactly (rewritten in place: a mount point)
    assert Path("/etc/hosts").read_bytes() == before  # the machine's own file never touched


def test_fallback_only_detection() -> None:
    dns_out = "Global: 127.0.0.153\nLink 2 (eth0):\nLink 3 (wg0): \n"
    fallback = "Global\n  Fallback DNS Servers: 1.1.1.1#cloudflare-dns.com\n"
    assert wiring.dns_servers_in(dns_out) == ["127.0.0.153"]
    assert wiring.only_fallback_dns(dns_out, fallback, "127.0.0.153")
    assert not wiring.only_fallback_dns(dns_out, "Global\n", "127.0.0.153")  # nothing to break
    with_link = dns_out.replace("Link 2 (eth0):", "Link 2 (eth0): 10.0.0.1 fe80::1%2")
    assert wiring.dns_servers_in(with_link, "127.0.0.153") == ["10.0.0.1", "fe80::1%2"]
    assert not wiring.only_fallback_dns(with_link, fallback, "127.0.0.153")

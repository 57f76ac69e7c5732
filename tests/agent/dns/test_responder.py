"""The responder process end to end: real UDP/TCP queries (dnspython) to `berth agent dns`."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from agent import resolverwiring as wiring
from agent.dns.privileges import target_user
from tests.agent.dns.helpers import Responder, ThreadPublisher

HOSTS = "127.0.0.1\tlocalhost\n# a comment the admin wrote\n10.0.0.5 db.lan\n"

NOERROR, NXDOMAIN, REFUSED, FORMERR = (
    dns.rcode.NOERROR,
    dns.rcode.NXDOMAIN,
    dns.rcode.REFUSED,
    dns.rcode.FORMERR,
)


def _a(reply: dns.message.Message) -> list[str]:
    return [r.address for rrset in reply.answer for r in rrset if rrset.rdtype == dns.rdatatype.A]


def test_known_unknown_other_zone_over_udp_and_tcp(
    responder: Responder, bus: ThreadPublisher
) -> None:
    bus.publish("api", "web")
    responder.wait_for("api.svc.internal", NOERROR)
    for tcp in (False, True):
        known = responder.query("api.svc.internal", tcp=tcp)
        assert known.rcode() == NOERROR and _a(known) == ["127.0.0.1"]
        assert known.flags & dns.flags.AA and known.answer[0].ttl == 5
        unknown = responder.query("nope.svc.internal", tcp=tcp)
        assert unknown.rcode() == NXDOMAIN and not unknown.answer
        assert unknown.authority[0].rdtype == dns.rdatatype.SOA
        assert str(unknown.authority[0].name) == "svc.internal."
        other = responder.query("example.com", tcp=tcp)
        assert other.rcode() == REFUSED and not other.answer  # never an open resolver
        assert responder.query("WEB.Svc.Internal", tcp=tcp).rcode() == NOERROR


def test_aaaa_soa_ns(responder: Responder, bus: ThreadPublisher) -> None:
    bus.publish("api")
    responder.wait_for("api.svc.internal", NOERROR)
    aaaa = responder.query("api.svc.internal", "AAAA")
    assert aaaa.rcode() == NOERROR and not aaaa.answer  # the internal proxy is IPv4 only
    assert aaaa.authority[0].rdtype == dns.rdatatype.SOA
    soa = responder.query("svc.internal", "SOA", tcp=True)
    assert soa.answer[0].rdtype == dns.rdatatype.SOA and soa.flags & dns.flags.AA
    ns = responder.query("svc.internal", "NS")
    assert [str(r.target) for r in ns.answer[0]] == ["svc.internal."]


def test_malformed_packets_then_still_answers(responder: Responder, bus: ThreadPublisher) -> None:
    bus.publish("api")
    responder.wait_for("api.svc.internal", NOERROR)
    good = dns.message.make_query("api.svc.internal", "A").to_wire()
    bad_name = good[:12] + b"\x3fabc"  # a label longer than the packet
    pointer = good[:12] + b"\xc0\x0c\x00\x01\x00\x01"  # compression loop in a question
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for junk in (b"", b"\x00", b"\xff" * 11, b"\xff" * 600, bad_name, pointer, good[:-1]):
            s.sendto(junk, (responder.addr, responder.port))
        for junk in (bad_name, pointer):
            s.sendto(junk, (responder.addr, responder.port))
            reply, _ = s.recvfrom(512)
            assert reply[:2] == junk[:2] and reply[3] & 0x0F == FORMERR
    # a response packet (QR set) is dropped, not answered: no reflection loops
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(
            bytes([good[0], good[1], good[2] | 0x80]) + good[3:], (responder.addr, responder.port)
        )
        try:
            s.recvfrom(512)
            raise AssertionError("answered a response packet")
        except TimeoutError:
            pass
    # TCP: a bad frame closes that connection only
    with socket.create_connection((responder.addr, responder.port), timeout=2) as c:
        c.sendall(b"\x00\x05\xff\xff")
        c.shutdown(socket.SHUT_WR)
        assert c.recv(100) == b""
    assert _a(responder.query("api.svc.internal")) == ["127.0.0.1"]
    assert _a(responder.query("api.svc.internal", tcp=True)) == ["127.0.0.1"]
    assert responder.proc.poll() is None


def test_live_update_and_cache_survive_restart(
    state_dir: Path, responder: Responder, bus: ThreadPublisher
) -> None:
    bus.publish("api")
    assert responder.wait_for("api.svc.internal", NOERROR).rcode() == NOERROR
    assert responder.query("db.svc.internal").rcode() == NXDOMAIN
    bus.publish("db")
    assert responder.wait_for("db.svc.internal", NOERROR).rcode() == NOERROR
    assert responder.wait_for("api.svc.internal", NXDOMAIN).rcode() == NXDOMAIN
    assert responder.stop() == 0
    cache = state_dir / "cache" / "dns-routes.json"
    assert b'"db"' in cache.read_bytes()
    again = Responder(state_dir)
    try:
        assert _a(again.query("db.svc.internal")) == ["127.0.0.1"]
    finally:
        again.stop()


def test_serves_cached_names_without_a_bus(state_dir: Path) -> None:
    from agent.bus.messages import Route, RouteTable

    table = RouteTable(version=(1, 1), routes=(Route("cached", 9000),))
    (state_dir / "cache" / "dns-routes.json").write_bytes(table.to_json())
    r = Responder(state_dir)
    try:
        assert _a(r.query("cached.svc.internal", tcp=True)) == ["127.0.0.1"]
    finally:
        assert r.stop() == 0


def test_custom_suffix(responder: Responder, bus: ThreadPublisher) -> None:
    bus.publish("api", suffix="apps.lan")
    responder.wait_for("api.apps.lan", NOERROR)
    assert responder.query("api.svc.internal").rcode() == REFUSED


def test_tcp_pipelined_queries_on_one_connection(
    responder: Responder, bus: ThreadPublisher
) -> None:
    bus.publish("api")
    responder.wait_for("api.svc.internal", NOERROR)
    queries = [
        dns.message.make_query(n, "A") for n in ("api.svc.internal", "x.svc.internal", "a.org")
    ]
    with socket.create_connection((responder.addr, responder.port), timeout=2) as c:
        c.sendall(b"".join(len(w).to_bytes(2, "big") + w for w in (q.to_wire() for q in queries)))
        stream = c.makefile("rb")
        rcodes = []
        for q in queries:
            size = int.from_bytes(stream.read(2), "big")
            reply = dns.message.from_wire(stream.read(size))
            assert q.is_response(reply)
            rcodes.append(reply.rcode())
    assert rcodes == [NOERROR, NXDOMAIN, REFUSED]


def test_drops_root_after_binding(responder: Responder) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root-started responder drops privileges")
    status = Path(f"/proc/{responder.proc.pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    # berth-dns (made by the installer or by `run-all` as root), else nobody; no way back
    assert uids == [str(target_user().pw_uid)] * 4 and uids[0] != "0"
    groups = next(line for line in status.splitlines() if line.startswith("Groups:")).split()[1:]
    assert groups == []


def test_address_in_use_is_a_clear_error(state_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "agent.dns", "--dns-bind", f"127.0.0.1:{port}",
             "--state-dir", str(state_dir), "--dns-wiring", "none"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "--dns-bind" in proc.stderr


def test_bad_dns_bind_is_refused_at_the_boundary(state_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.dns", "--dns-bind", "127.0.0.153", "--state-dir", str(state_dir)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2 and "--dns-bind must be HOST:PORT" in proc.stderr


def test_responder_keeps_a_hosts_file_current(state_dir: Path, bus: ThreadPublisher) -> None:
    """The process itself rewrites the block on each change (a hosts file it may write)."""
    hosts = state_dir / "hosts"
    hosts.write_text(HOSTS)
    hosts.chmod(0o666)
    (state_dir).chmod(0o777)  # it runs as nobody when the tests run as root: rename needs this
    r = Responder(state_dir, "--dns-wiring", "hosts", "--hosts-file", str(hosts))
    try:
        bus.publish("api", "web")
        deadline = time.monotonic() + 10
        while "web.svc.internal" not in hosts.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hosts.read_text() == wiring.render_hosts(
            HOSTS, ["api.svc.internal", "web.svc.internal"]
        ), r.log.read_text()
        bus.publish("db")
        while "api.svc.internal" in hosts.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hosts.read_text() == wiring.render_hosts(HOSTS, ["db.svc.internal"])
    finally:
        assert r.stop() == 0
    assert "Traceback" not in r.log.read_text()


def test_responder_says_when_it_cannot_write_hosts(state_dir: Path, bus: ThreadPublisher) -> None:
    if os.geteuid() != 0:
        pytest.skip("as root the responder drops to nobody, which cannot write a root-only file")
    locked = state_dir / "locked"
    locked.mkdir(mode=0o755)
    hosts = locked / "hosts"
    hosts.write_text(HOSTS)
    r = Responder(state_dir, "--dns-wiring", "hosts", "--hosts-file", str(hosts))
    try:
        bus.publish("api")
        r.wait_for("api.svc.internal", 0)
        deadline = time.monotonic() + 10
        while (
            "cannot update the hosts wiring" not in r.log.read_text()
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert "cannot update the hosts wiring" in r.log.read_text()
        assert hosts.read_text() == HOSTS
    finally:
        r.stop()

"""AnswerBook: every kind of answer, parsed back with dnspython; fuzzing never raises."""

import random

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from agent.bus.messages import Route, RouteTable
from agent.dns.answers import AnswerBook
from agent.dns.zone import Zone, zone_from_table
from agent.schema.dnsnames import DnsNameError

BOOK = AnswerBook(Zone(services=frozenset({"api", "web"}), serial=42))


def ask(name: str, rdtype: str = "A", *, edns: bool = False, rd: bool = True, rdclass: str = "IN"):  # type: ignore[no-untyped-def]
    q = dns.message.make_query(name, rdtype, rdclass, use_edns=0 if edns else None)
    if not rd:
        q.flags &= ~dns.flags.RD
    data = q.to_wire()
    reply = BOOK.answer(data)
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert q.is_response(msg)  # same id, same question (case included), QR set
    assert bool(msg.flags & dns.flags.RD) is rd and not msg.flags & dns.flags.RA
    assert (msg.edns == 0) is edns
    return msg


@pytest.mark.parametrize("edns", [False, True])
@pytest.mark.parametrize("rd", [False, True])
def test_known_name(edns: bool, rd: bool) -> None:
    msg = ask("api.svc.internal", edns=edns, rd=rd)
    assert msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AA
    assert [(r.address, msg.answer[0].ttl) for r in msg.answer[0]] == [("127.0.0.1", 5)]


def test_mixed_case_is_echoed() -> None:
    msg = ask("aPi.SVC.internal")
    assert str(msg.question[0].name) == "aPi.SVC.internal."
    assert msg.answer[0][0].address == "127.0.0.1"


def test_nodata_nxdomain_refused() -> None:
    for rdtype in ("AAAA", "MX", "TXT", "HTTPS"):
        msg = ask("web.svc.internal", rdtype)
        assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
        assert msg.authority[0].rdtype == dns.rdatatype.SOA and msg.authority[0][0].serial == 42
    for name in ("nope.svc.internal", "x.api.svc.internal"):
        msg = ask(name, edns=True)
        assert msg.rcode() == dns.rcode.NXDOMAIN and msg.authority[0][0].minimum == 5
    for name in ("example.com", "internal", "xsvc.internal", "."):
        msg = ask(name)
        assert msg.rcode() == dns.rcode.REFUSED and not msg.flags & dns.flags.AA
    assert ask("version.bind", "TXT", rdclass="CH").rcode() == dns.rcode.REFUSED
    assert ask("api.svc.internal", rdclass="CH").rcode() == dns.rcode.REFUSED


def test_apex() -> None:
    soa = ask("svc.internal", "SOA").answer[0]
    assert soa.rdtype == dns.rdatatype.SOA and str(soa[0].rname) == "hostmaster.svc.internal."
    assert str(ask("svc.internal", "NS").answer[0][0].target) == "svc.internal."
    assert ask("svc.internal", "A").rcode() == dns.rcode.NOERROR  # NODATA
    assert ask("svc.internal", "ANY").answer[0].rdtype == dns.rdatatype.SOA
    assert ask("api.svc.internal", "ANY").answer[0].rdtype == dns.rdatatype.A


def test_zone_from_table_skips_bad_names() -> None:
    table = RouteTable(
        suffix="Apps.LAN.", routes=(Route("api", 1), Route("bad_name", 2), Route("Web", 3))
    )
    zone, rejected = zone_from_table(table, serial=7)
    assert zone.suffix == "apps.lan" and zone.fqdns() == ["api.apps.lan", "web.apps.lan"]
    assert rejected == ["bad_name"]
    with pytest.raises(DnsNameError, match="suffix 'bad..suffix'"):
        zone_from_table(RouteTable(suffix="bad..suffix"), serial=1)


def test_fuzz_never_raises() -> None:
    rng = random.Random(1234)
    seeds = [dns.message.make_query(n, t, use_edns=e).to_wire() for n, t, e in
             [("api.svc.internal", "A", None), ("nope.svc.internal", "AAAA", 0), ("example.com", "MX", 0)]]  # fmt: skip
    for _ in range(5000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.5 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op < 0.75:
                del data[rng.randrange(len(data) + 1) :]
            else:
                data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        reply = BOOK.answer(bytes(data))
        if reply is not None:  # whatever we send back is a well-formed reply to that id
            assert reply[:2] == bytes(data[:2]) and reply[2] & 0x80
            dns.message.from_wire(reply, question_only=True)

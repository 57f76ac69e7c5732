"""The hand-rolled question parser, checked against dnslib and dnspython."""

import random

import dns.message
import dns.name
import dnslib
import pytest

from agent.dns import wire


@pytest.mark.parametrize(
    "name,rdtype",
    [("api.svc.internal", "A"), ("API.Svc.INTERNAL.", "AAAA"), (".", "NS"), ("a" * 63 + ".x", "MX"),
     ("svc.internal", "SOA"), ("x.y.z.w.svc.internal", "HTTPS"), ("a-b.svc.internal", "TXT")],
)  # fmt: skip
def test_matches_dnspython_and_dnslib(name: str, rdtype: str) -> None:
    for use_edns in (None, 0):
        data = dns.message.make_query(name, rdtype, use_edns=use_edns).to_wire()
        q = wire.parse_question(data)
        ref = dnslib.DNSRecord.parse(data)
        assert q.qid == ref.header.id
        assert q.qtype == ref.q.qtype and q.qclass == ref.q.qclass == 1
        assert q.name == dns.name.from_text(name).canonicalize().to_wire()
        assert str(ref.q.qname).lower() == dns.name.from_text(name).to_text().lower()
        assert q.end == wire.question_end(data) == len(data) - (11 if use_edns == 0 else 0)
        assert q.edns is (use_edns == 0) and q.rd


def test_random_names_agree_with_dnslib() -> None:
    rng = random.Random(6)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
    for _ in range(300):
        labels = [
            "".join(rng.choices(alphabet, k=rng.randint(1, 20))) for _ in range(rng.randint(1, 5))
        ]
        data = dnslib.DNSRecord.question(".".join(labels), rng.choice(["A", "AAAA", "MX"])).pack()
        q = wire.parse_question(data)
        assert q.name == wire.encode_name(".".join(labels))
        assert q.end == len(data)


@pytest.mark.parametrize(
    "packet,rcode",
    [
        (b"", None),
        (b"\x12\x34\x01", None),
        (b"\x12\x34\x81\x00" + b"\x00\x01" + b"\x00" * 6 + b"\x00\x00\x01\x00\x01", None),  # QR set
        (b"\x12\x34\x28\x00" + b"\x00\x01" + b"\x00" * 6 + b"\x00\x00\x01\x00\x01", 4),  # UPDATE
        (b"\x12\x34\x01\x00" + b"\x00\x00" + b"\x00" * 6, 1),  # no question
        (b"\x12\x34\x01\x00" + b"\x00\x02" + b"\x00" * 6 + b"\x00\x00\x01\x00\x01" * 2, 1),
        (b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\xc0\x0c\x00\x01\x00\x01", 1),  # pointer
        (b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\x05ab", 1),  # truncated label
        (b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\x00\x00", 1),  # truncated type/class
        (b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\x3f" + b"a" * 63 + b"\x00" * 4, 1),
        (b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01", 1),  # > 255
    ],
)  # fmt: skip
def test_malformed(packet: bytes, rcode: int | None) -> None:
    with pytest.raises(wire.Malformed) as err:
        wire.parse_question(packet)
    assert err.value.rcode == rcode


def test_in_zone_respects_label_boundaries() -> None:
    apex = wire.encode_name("svc.internal")
    assert wire.in_zone(wire.encode_name("svc.internal"), apex)
    assert wire.in_zone(wire.encode_name("a.b.svc.internal"), apex)
    assert not wire.in_zone(wire.encode_name("xsvc.internal"), apex)
    assert not wire.in_zone(wire.encode_name("internal"), apex)
    # a label that contains the apex's bytes is not the apex
    assert not wire.in_zone(b"\x05a\x03svc" + b"\x08internal\x00", apex)


def test_error_reply_keeps_id_and_rd() -> None:
    reply = wire.error_reply(b"\xab\xcd\x01\x00" + b"\x00" * 8, wire.RCODE_FORMERR)
    msg = dns.message.from_wire(reply, question_only=True)
    assert msg.id == 0xABCD and msg.rcode() == wire.RCODE_FORMERR
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.RD

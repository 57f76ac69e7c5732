"""Every answer the zone can give, precomputed; answering is a lookup and a copy.

When the name set changes, `AnswerBook(zone)` builds with dnslib the records of every
answer (A for each service, SOA and NS at the apex, the SOA that goes with NXDOMAIN and
NODATA) and keeps each as prebuilt header bytes and a prebuilt tail (the sections after
the question), in four variants: the query's RD bit echoed or not, and an EDNS OPT record
or not (sent back when the query has one, so resolvers keep using EDNS).

`AnswerBook.answer(packet)` then costs: a check of the header, a walk over the labels of
the question, a dict lookup keyed by the lower-cased question, and one concatenation of
the query id, the prebuilt header, the question exactly as the client sent it (so
0x20-style mixed case is echoed) and the prebuilt tail. The tails only point (name
compression) at offset 12, where the question's name always starts, or not at all, so
they are valid after any question of the same name.

Answers (TTL `zone.ttl`, 5 s by default):
* `<service>.<suffix>` A → the zone address (127.0.0.1, where the internal proxy listens);
  ANY → the same A record; AAAA and other types → NOERROR, no answer, SOA in authority.
* `<suffix>` SOA and NS → the record (the apex is its own name server); ANY → SOA.
* other names under the suffix → NXDOMAIN with the SOA in authority.
* names outside the zone, or classes other than IN → REFUSED (never an open resolver).
* malformed queries → FORMERR, unknown opcodes → NOTIMP, responses and runts → dropped.
"""

import struct

from dnslib import NS, QTYPE, RR, SOA, A, DNSHeader, DNSQuestion, DNSRecord
from dnslib.label import DNSBuffer

from agent.dns import wire
from agent.dns.zone import Zone

# (header after the id: flags and counts, tail after the question)
Variant = tuple[bytes, bytes]
# indexed by rd | edns << 1
Prebuilt = tuple[Variant, Variant, Variant, Variant]

EDNS_UDP_SIZE = 1232  # the DNS flag day 2020 default
# root name, TYPE OPT, CLASS = UDP payload size, TTL = ext-rcode 0 / version 0 / flags 0, RDLEN 0
OPT_RR = wire.OPT_PREFIX + struct.pack("!HIH", EDNS_UDP_SIZE, 0, 0)
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
_FAST_FLAGS_MASK = wire.QR | wire.OPCODE_MASK  # a plain query has both zero
_MIN_QUERY = wire.HEADER_LEN + 5  # root name + QTYPE + QCLASS


class _FlatBuffer(DNSBuffer):
    """Packs names without compression, so the bytes are valid at any offset."""

    def encode_name(self, name) -> None:  # type: ignore[no-untyped-def]
        self.encode_name_nocompress(name)


def _variants(rcode: int, aa: bool, an: int, ns: int, tail: bytes) -> Prebuilt:
    out = []
    for edns in (0, 1):
        for rd in (0, 1):
            flags = wire.QR | (wire.AA if aa else 0) | rd
            head = bytes((flags, rcode)) + struct.pack("!HHHH", 1, an, ns, edns)
            out.append((head, tail + OPT_RR if edns else tail))
    return (out[0], out[1], out[2], out[3])


def _records_tail(fqdn: str, qtype: int, records: list[RR], authority: list[RR]) -> bytes:
    """The sections after the question of a dnslib-packed reply to (fqdn, qtype)."""
    reply = DNSRecord(DNSHeader(id=0, qr=1, aa=1), q=DNSQuestion(fqdn, qtype))
    for rr in records:
        reply.add_answer(rr)
    for rr in authority:
        reply.add_auth(rr)
    packed = reply.pack()
    return packed[wire.HEADER_LEN + len(wire.encode_name(fqdn)) + 4 :]


class AnswerBook:
    """Precomputed answers for one `Zone`; immutable, swapped whole when names change."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        apex = zone.suffix + "."
        self._apex = wire.encode_name(apex)
        ttl = zone.ttl
        soa = RR(
            apex,
            QTYPE.SOA,
            ttl=ttl,
            rdata=SOA(apex, "hostmaster." + apex, (zone.serial, 3600, 600, 86400, ttl)),
        )
        ns = RR(apex, QTYPE.NS, ttl=ttl, rdata=NS(apex))
        flat = _FlatBuffer()
        soa.pack(flat)
        soa_tail = bytes(flat.data)
        self._nodata = _variants(wire.RCODE_NOERROR, True, 0, 1, soa_tail)
        self._nxdomain = _variants(wire.RCODE_NXDOMAIN, True, 0, 1, soa_tail)
        self._refused = _variants(wire.RCODE_REFUSED, False, 0, 0, b"")

        exact: dict[bytes, Prebuilt] = {}

        def put(fqdn: str, qtype: int, records: list[RR]) -> None:
            key = wire.encode_name(fqdn) + struct.pack("!HH", qtype, wire.CLASS_IN)
            exact[key] = _variants(
                wire.RCODE_NOERROR, True, len(records), 0, _records_tail(fqdn, qtype, records, [])
            )

        for fqdn in zone.fqdns():
            name = fqdn + "."
            a = [RR(name, QTYPE.A, ttl=ttl, rdata=A(zone.address))]
            put(name, wire.TYPE_A, a)
            put(name, wire.TYPE_ANY, a)
        put(apex, wire.TYPE_SOA, [soa])
        put(apex, wire.TYPE_NS, [ns])
        put(apex, wire.TYPE_ANY, [soa])
        self._exact = exact
        self._names = frozenset(wire.encode_name(f) for f in [*zone.fqdns(), apex])

    def answer(self, data: bytes) -> bytes | None:
        """The reply to the query `data`, or None when it must be dropped."""
        if len(data) < _MIN_QUERY or data[2] & _FAST_FLAGS_MASK or data[4:10] != _ONE_QUESTION:
            return self._slow(data)
        end = wire.question_end(data)
        if end < 0:
            return wire.error_reply(data, wire.RCODE_FORMERR)
        name_end = end - 4
        key = data[12:name_end].lower() + data[name_end:end]
        variant = data[2] & 1
        if data[10:12] != b"\x00\x00" and data[end : end + 3] == wire.OPT_PREFIX:
            variant |= 2
        pre = self._exact.get(key)
        if pre is None:
            pre = self._classify(key[:-4], data[name_end:end])
        head, tail = pre[variant]
        return data[:2] + head + data[12:end] + tail

    def _classify(self, name: bytes, type_class: bytes) -> Prebuilt:
        if type_class[2:] != b"\x00\x01" or not wire.in_zone(name, self._apex):
            return self._refused
        return self._nodata if name in self._names else self._nxdomain

    def _slow(self, data: bytes) -> bytes | None:
        """Queries off the fast path: odd counts, other opcodes, runts and responses."""
        try:
            q = wire.parse_question(data)
        except wire.Malformed as exc:
            return None if exc.rcode is None else wire.error_reply(data, exc.rcode)
        # A question with answer/authority records attached: answer the question anyway.
        key = q.name + data[q.end - 4 : q.end]
        pre = self._exact.get(key) or self._classify(q.name, data[q.end - 4 : q.end])
        head, tail = pre[(1 if q.rd else 0) | (2 if q.edns else 0)]
        return data[:2] + head + data[12 : q.end] + tail

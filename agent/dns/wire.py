"""The few bits of the DNS wire format the fast path needs (RFC 1035 §4.1), no dnslib.

A query is a 12-byte header, then one question: a name as length-prefixed labels ending
in a zero byte, then QTYPE and QCLASS (2 bytes each). `question_end` walks those labels
and returns where the question ends; everything else (matching, answering) is a byte
comparison done by `agent.dns.answers`. A question may not use compression pointers (a
query has nothing earlier to point at), so a pointer marks the packet as malformed.

`parse_question` is the slower, descriptive form used by the classification path and
by tests (which check both against dnslib and dnspython).
"""

from dataclasses import dataclass

HEADER_LEN = 12
MAX_NAME_LEN = 255  # wire length of a name, root label included (RFC 1035 §2.3.4)
MAX_LABEL_LEN = 63

# Byte 2 of the header: QR | OPCODE(4) | AA | TC | RD; byte 3: RA | Z(3) | RCODE(4).
QR = 0x80
OPCODE_MASK = 0x78
AA = 0x04
RD = 0x01

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

TYPE_A = 1
TYPE_NS = 2
TYPE_SOA = 6
TYPE_AAAA = 28
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1

# What follows a question when the query carries EDNS: the root name and TYPE OPT.
OPT_PREFIX = b"\x00\x00\x29"


def question_end(data: bytes) -> int:
    """Offset just past QTYPE/QCLASS of the question at offset 12, or -1 if malformed."""
    i = HEADER_LEN
    n = len(data)
    while True:
        if i >= n:
            return -1
        length = data[i]
        if length == 0:
            break
        if length > MAX_LABEL_LEN:  # 0xC0 pointer or reserved label type
            return -1
        i += length + 1
    i += 1
    if i - HEADER_LEN > MAX_NAME_LEN:
        return -1
    end = i + 4
    return end if end <= n else -1


def label_offsets(name: bytes) -> list[int]:
    """Where each label of a well-formed wire name starts (the root label included)."""
    offsets = []
    i = 0
    while True:
        offsets.append(i)
        if name[i] == 0:
            return offsets
        i += name[i] + 1


def in_zone(name: bytes, apex: bytes) -> bool:
    """True when the lower-case wire `name` is `apex` or below it (on a label boundary)."""
    start = len(name) - len(apex)
    return start >= 0 and name.endswith(apex) and start in label_offsets(name)


def encode_name(fqdn: str) -> bytes:
    """Lower-case wire form of a dotted name (trailing dot optional)."""
    labels = [label for label in fqdn.lower().rstrip(".").split(".") if label]
    return b"".join(bytes([len(lb)]) + lb.encode("ascii") for lb in labels) + b"\x00"


@dataclass(frozen=True)
class Question:
    """A parsed query header and question; `name` is the lower-case wire form."""

    qid: int
    opcode: int
    rd: bool
    qdcount: int
    ancount: int
    nscount: int
    arcount: int
    name: bytes
    qtype: int
    qclass: int
    end: int  # offset just past the question
    edns: bool  # the first additional record is an OPT


class Malformed(ValueError):
    """The packet is not a query we can answer; `rcode` says how to reply (None: drop)."""

    def __init__(self, reason: str, rcode: int | None) -> None:
        super().__init__(reason)
        self.rcode = rcode


def parse_question(data: bytes) -> Question:
    """Parse the header and the single question of a query, or raise `Malformed`."""
    if len(data) < HEADER_LEN:
        raise Malformed("shorter than a DNS header", None)
    if data[2] & QR:
        raise Malformed("a response, not a query", None)  # answering it could loop
    opcode = (data[2] & OPCODE_MASK) >> 3
    counts = [int.from_bytes(data[i : i + 2], "big") for i in range(4, 12, 2)]
    if opcode != 0:
        raise Malformed(f"opcode {opcode} not implemented", RCODE_NOTIMP)
    if counts[0] != 1:
        raise Malformed(f"{counts[0]} questions, expected 1", RCODE_FORMERR)
    end = question_end(data)
    if end < 0:
        raise Malformed("bad question name or truncated question", RCODE_FORMERR)
    name_end = end - 4
    return Question(
        qid=int.from_bytes(data[0:2], "big"),
        opcode=opcode,
        rd=bool(data[2] & RD),
        qdcount=counts[0],
        ancount=counts[1],
        nscount=counts[2],
        arcount=counts[3],
        name=data[HEADER_LEN:name_end].lower(),
        qtype=int.from_bytes(data[name_end : name_end + 2], "big"),
        qclass=int.from_bytes(data[name_end + 2 : end], "big"),
        end=end,
        edns=counts[3] > 0 and data[end : end + 3] == OPT_PREFIX,
    )


def error_reply(data: bytes, rcode: int) -> bytes:
    """A header-only reply (no question echoed) carrying `rcode`, e.g. FORMERR."""
    flags = QR | (data[2] & (OPCODE_MASK | RD))
    return data[:2] + bytes((flags, rcode)) + b"\x00" * 8
